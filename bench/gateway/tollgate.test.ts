// The bench runs Tollgate the way `npm start` and the `tollgate` command do: with the same node flags.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startNodeFlags } from './tollgate.ts';

const repoRoot = path.resolve(import.meta.dirname, '../..');

describe('bench Tollgate command', () => {
  it('gives node the flags npm start and the tollgate command give it', () => {
    const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts: { start: string } };
    expect(pkg.scripts.start).toBe(['node', ...startNodeFlags, 'bin/tollgate.mjs', 'start'].join(' '));
    const shebang = readFileSync(path.join(repoRoot, 'bin/tollgate.mjs'), 'utf8').split('\n')[0];
    expect(shebang).toBe(['#!/usr/bin/env -S node', ...startNodeFlags].join(' '));
  });
});

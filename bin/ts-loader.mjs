// The module hook bin/tollgate.mjs registers: Tollgate's TypeScript sources are turned into
// JavaScript by esbuild as Node loads them (types dropped, nothing else changed), with an inline
// source map so stack traces name the .ts lines. tsx did this before, but with esbuild's
// `keepNames`, which wraps every function the code creates in a call that redefines its `name`:
// in A/B runs of the gateway bench this loader cost 0.93x the CPU per call of tsx's (six rounds,
// every one below 0.96; bench/gateway/README.md).
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { transform } from 'esbuild';

const options = {
  loader: 'ts',
  format: 'esm',
  target: `node${process.versions.node}`,
  sourcemap: 'inline',
  // tsconfig.json's target, which decides how class fields are defined.
  tsconfigRaw: { compilerOptions: { target: 'ES2022' } },
};

export async function load(url, context, nextLoad) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
  const file = fileURLToPath(url);
  const { code } = await transform(await readFile(file, 'utf8'), { ...options, sourcefile: file });
  return { format: 'module', source: code, shortCircuit: true };
}

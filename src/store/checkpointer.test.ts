import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { openStore, type Store } from './db.ts';
import { startCheckpointer } from './checkpointer.ts';

describe('background WAL checkpoints (SQLite)', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  const fileStore = async (): Promise<{ store: Store; file: string }> => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-ckpt-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'ckpt.db');
    const store = await openStore(`sqlite:${file}`);
    cleanup.push(() => store.close());
    await sql`create table pages (id integer primary key, v text not null)`.execute(store.db);
    return { store, file };
  };

  it('copies what commits appended to the WAL into the database file, off the writing thread', async () => {
    const { store, file } = await fileStore();
    // About 300 pages, below the writing connection's own checkpoint threshold (1,000): only the worker checkpoints them.
    await store.db.transaction().execute(async (tx) => {
      for (let i = 0; i < 300; i++) await sql`insert into pages (v) values (${'x'.repeat(4000)})`.execute(tx);
    });
    const seen: Array<{ log: number; checkpointed: number }> = [];
    const errors: string[] = [];
    const done = new Promise<void>((resolve) => {
      const checkpointer = startCheckpointer(file, {
        onError: (m) => errors.push(m),
        onCheckpoint: (frames) => {
          seen.push(frames);
          if (frames.checkpointed === frames.log) resolve();
        },
      });
      cleanup.push(() => checkpointer.stop());
    });
    await done;
    expect(errors).toEqual([]);
    expect(seen.at(-1)!.log).toBeGreaterThanOrEqual(300);
    // The rows are all there, read through the database file and what is left of the WAL.
    const [row] = (await sql<{ n: bigint }>`select count(*) as n from pages`.execute(store.db)).rows;
    expect(Number(row.n)).toBe(300);
  });

  it('stops with the store that started it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-ckpt-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const store = await openStore(`sqlite:${path.join(dir, 'x.db')}`, { backgroundCheckpoints: true });
    await sql`create table t (id integer primary key)`.execute(store.db);
    await store.close();
    // Closed: the last connection (the writer's) removed the WAL on the way out, so nothing else held the file.
    expect(fs.existsSync(path.join(dir, 'x.db-wal'))).toBe(false);
  });
});

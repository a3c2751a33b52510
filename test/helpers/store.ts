// Test stores on real engines: a fresh SQLite file, and (when TEST_DATABASE_URL is set) a freshly
// created PostgreSQL database with a unique name that is dropped afterwards.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openStore, type Engine, type Store } from '../../src/store/db.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { ensureOperatorAccounts } from '../../src/ledger/accounts.ts';

export const pgUrl = process.env.TEST_DATABASE_URL;

/** The engines to run a suite on: SQLite always, PostgreSQL when TEST_DATABASE_URL is set. */
export const engines: Engine[] = pgUrl ? ['sqlite', 'postgres'] : ['sqlite'];

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** Creates an empty database of the engine and returns its URL. */
export async function createTestDatabase(engine: Engine): Promise<TestDatabase> {
  const name = `tollgate_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  if (engine === 'sqlite') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-'));
    return { url: `sqlite:${path.join(dir, `${name}.db`)}`, drop: async () => fs.rmSync(dir, { recursive: true, force: true }) };
  }
  if (!pgUrl) throw new Error('TEST_DATABASE_URL is not set');
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(pgUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      try {
        await waitForDisconnects(c, name);
        await c.query(`drop database if exists ${name} with (force)`);
      } finally {
        await c.end();
      }
    },
  };
}

const disconnectWaitMs = 2000;
const disconnectPollMs = 10;

/**
 * A closed pool has only asked its connections to end; `drop ... with (force)` terminating one that
 * is still closing makes its client emit an error nobody listens to any more (an unhandled error
 * in the test run). So wait, briefly, for the database's sessions to be gone before dropping it.
 */
async function waitForDisconnects(admin: pg.Client, name: string): Promise<void> {
  const deadline = Date.now() + disconnectWaitMs;
  while (Date.now() < deadline) {
    const r = await admin.query('select count(*)::int as n from pg_stat_activity where datname = $1', [name]);
    if (r.rows[0].n === 0) return;
    await new Promise((resolve) => setTimeout(resolve, disconnectPollMs));
  }
}

export interface TestStore {
  store: Store;
  url: string;
  close(): Promise<void>;
}

/** A migrated store with the operator accounts in place. */
export async function openTestStore(engine: Engine): Promise<TestStore> {
  const database = await createTestDatabase(engine);
  const store = await openStore(database.url, { poolSize: 5 });
  await migrateToLatest(store);
  await ensureOperatorAccounts(store.db, Date.now());
  return {
    store,
    url: database.url,
    async close() {
      await store.close();
      await database.drop();
    },
  };
}

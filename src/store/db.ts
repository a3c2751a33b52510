// Opens the store on either engine behind one Kysely interface: embedded SQLite (better-sqlite3,
// WAL) by default, PostgreSQL when DATABASE_URL is postgres://. Integer columns come back as BigInt
// (or as strings/numbers that `toBigInt` reads exactly); nothing money-shaped is ever a float.
import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import { Kysely, PostgresDialect, SqliteDialect, SqliteDriver, type DatabaseConnection } from 'kysely';
import { CompiledQuery } from 'kysely';
import type { Database } from './schema.ts';
import { postgresStatementNames } from './prepared.ts';
import { fallbackAutocheckpointPages, startCheckpointer } from './checkpointer.ts';

export type Engine = 'sqlite' | 'postgres';

export interface Store {
  db: Kysely<Database>;
  engine: Engine;
  /** A human-readable location, never including a password. */
  location: string;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** PostgreSQL pool size per process. */
  poolSize?: number;
  /** SQLite `synchronous`: NORMAL survives a process crash, FULL also a power loss. */
  sqliteSynchronous?: 'NORMAL' | 'FULL';
  /** PostgreSQL: named prepared statements for the hot path (default true; false behind PgBouncer in transaction mode). */
  pgPreparedStatements?: boolean;
  /** SQLite: checkpoint the WAL in a worker thread (src/store/checkpointer.ts) instead of in whichever commit crosses the threshold. */
  backgroundCheckpoints?: boolean;
  /** Hears of a background checkpoint that failed. */
  onCheckpointError?: (message: string) => void;
}

const sqliteBusyTimeoutMs = 5000;
const statementCacheSize = 500;
const pgDefaultPoolSize = 10;

// PostgreSQL int8 and numeric arrive as strings by default; read int8 as BigInt exactly.
pg.types.setTypeParser(pg.types.builtins.INT8, (v: string) => BigInt(v));

export function engineOf(url: string): Engine {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return 'postgres';
  if (url.startsWith('sqlite:')) return 'sqlite';
  throw new Error(`DATABASE_URL must start with sqlite: or postgres:// (got '${redactUrl(url)}')`);
}

export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}

export async function openStore(url: string, opts: StoreOptions = {}): Promise<Store> {
  const engine = engineOf(url);
  if (engine === 'postgres') {
    const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? pgDefaultPoolSize });
    if (opts.pgPreparedStatements ?? true) pool.on('connect', usePreparedStatements);
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { db, engine, location: redactUrl(url), close: () => db.destroy() };
  }
  const file = url.slice('sqlite:'.length);
  if (file !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const raw = new SQLite(file);
  raw.pragma('journal_mode = WAL');
  raw.pragma(`synchronous = ${opts.sqliteSynchronous ?? 'NORMAL'}`);
  raw.pragma(`busy_timeout = ${sqliteBusyTimeoutMs}`);
  raw.pragma('foreign_keys = ON');
  raw.defaultSafeIntegers(true);
  const checkpointer = opts.backgroundCheckpoints && file !== ':memory:' ? startCheckpointer(file, { onError: opts.onCheckpointError }) : null;
  if (checkpointer) raw.pragma(`wal_autocheckpoint = ${fallbackAutocheckpointPages}`);
  const db = new Kysely<Database>({ dialect: new ImmediateSqliteDialect({ database: cachingDatabase(raw) }) });
  return {
    db,
    engine,
    location: `sqlite:${file}`,
    async close() {
      await checkpointer?.stop();
      await db.destroy();
    },
  };
}

/**
 * Runs the hot path's statements (src/store/prepared.ts) as named prepared statements on this
 * connection; everything else goes through unchanged.
 */
function usePreparedStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  client.query = ((...args: unknown[]) => {
    const [text, values] = args;
    if (args.length === 2 && typeof text === 'string' && Array.isArray(values)) {
      const name = postgresStatementNames.get(text);
      if (name) return query({ name, text, values });
    }
    return query(...args);
  }) as typeof client.query;
}

/** better-sqlite3 behind a prepared-statement cache: Kysely prepares every query afresh otherwise. */
function cachingDatabase(raw: SQLite.Database) {
  const cache = new Map<string, SQLite.Statement>();
  return {
    close: () => raw.close(),
    prepare(sql: string) {
      let stmt = cache.get(sql);
      if (!stmt) {
        stmt = raw.prepare(sql);
        if (cache.size >= statementCacheSize) cache.delete(cache.keys().next().value as string);
        cache.set(sql, stmt);
      }
      return stmt;
    },
  };
}

/**
 * Transactions on SQLite start with BEGIN IMMEDIATE: they take the write lock up front, so two
 * processes sharing one file queue on busy_timeout instead of failing on a read-to-write upgrade.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  readonly #config: ConstructorParameters<typeof SqliteDialect>[0];
  constructor(config: ConstructorParameters<typeof SqliteDialect>[0]) {
    super(config);
    this.#config = config;
  }
  override createDriver() {
    return new ImmediateSqliteDriver(this.#config);
  }
}

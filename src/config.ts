// Configuration from the environment, read once at start. Every setting is documented in README.md.
import path from 'node:path';
import { engineOf } from './store/db.ts';
import { defaultKeyPrefix } from './limits/redis.ts';

export interface Config {
  port: number;
  host: string;
  databaseUrl: string;
  /** Where generated files live (secret key file); the SQLite database's folder by default. */
  dataDir: string;
  masterKey: string | null;
  /** 64 hex characters (32 bytes); generated into dataDir when unset. */
  secretKey: string | null;
  /** Older secret keys still accepted for decryption during a rotation. */
  previousSecretKeys: string[];
  logLevel: string;
  redisUrl: string | null;
  /** On a Redis outage, admit calls without rate limits (true) or refuse them (false). */
  rateLimitFailOpen: boolean;
  /** Namespace of the rate-limit keys in Redis, so several deployments (or test runs) can share one Redis. */
  rateLimitPrefix: string;
  sqliteSynchronous: 'NORMAL' | 'FULL';
  dbPoolSize: number;
  /** PostgreSQL: run the hot path's statements as named prepared statements (off behind PgBouncer in transaction mode). */
  pgPreparedStatements: boolean;
  /** Admit calls against per-instance balance leases in memory (src/ledger/leases.ts) instead of one ledger hold each. */
  balanceLeases: boolean;
  /** Answer a call only once its settlement has committed (default: answer first, settle right after). */
  settleBeforeAnswer: boolean;
}

const defaultDatabaseUrl = 'sqlite:./data/tollgate.db';
const defaultPort = 8080;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const databaseUrl = env.DATABASE_URL?.trim() || defaultDatabaseUrl;
  const engine = engineOf(databaseUrl);
  const dataDir = env.TOLLGATE_DATA_DIR?.trim() || (engine === 'sqlite' ? path.dirname(path.resolve(databaseUrl.slice('sqlite:'.length))) : path.resolve('data'));
  const port = env.PORT === undefined || env.PORT === '' ? defaultPort : Number(env.PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number (got '${env.PORT}')`);
  const secretKey = env.TOLLGATE_SECRET_KEY?.trim() || null;
  if (secretKey !== null && !/^[0-9a-fA-F]{64}$/.test(secretKey)) {
    throw new Error('TOLLGATE_SECRET_KEY must be 64 hexadecimal characters (32 bytes); generate one with `openssl rand -hex 32`');
  }
  const previousSecretKeys = (env.TOLLGATE_PREVIOUS_SECRET_KEYS ?? '').split(',').map((k) => k.trim()).filter(Boolean);
  for (const k of previousSecretKeys) {
    if (!/^[0-9a-fA-F]{64}$/.test(k)) throw new Error('TOLLGATE_PREVIOUS_SECRET_KEYS must be comma-separated 64-hex-character keys');
  }
  const sync = (env.SQLITE_SYNCHRONOUS ?? 'NORMAL').toUpperCase();
  if (sync !== 'NORMAL' && sync !== 'FULL') throw new Error('SQLITE_SYNCHRONOUS must be NORMAL or FULL');
  const rateLimitFailOpen = booleanSetting(env, 'RATE_LIMIT_FAIL_OPEN', true);
  const rateLimitPrefix = env.RATE_LIMIT_PREFIX?.trim() || defaultKeyPrefix;
  const pgPreparedStatements = booleanSetting(env, 'PG_PREPARED_STATEMENTS', true);
  const balanceLeases = booleanSetting(env, 'BALANCE_LEASES', true);
  const settleBeforeAnswer = booleanSetting(env, 'SETTLE_BEFORE_ANSWER', false);
  const masterKey = env.TOLLGATE_MASTER_KEY?.trim() || null;
  if (masterKey !== null && masterKey.length < 16) throw new Error('TOLLGATE_MASTER_KEY must be at least 16 characters');
  return {
    port,
    host: env.HOST?.trim() || '0.0.0.0',
    databaseUrl,
    dataDir,
    masterKey,
    secretKey,
    previousSecretKeys,
    logLevel: env.LOG_LEVEL?.trim() || 'info',
    redisUrl: env.REDIS_URL?.trim() || null,
    rateLimitFailOpen,
    rateLimitPrefix,
    sqliteSynchronous: sync,
    dbPoolSize: Number(env.DB_POOL_SIZE ?? 10),
    pgPreparedStatements,
    balanceLeases,
    settleBeforeAnswer,
  };
}

/** A `true`/`false` variable (any case, spaces ignored); unset or empty is `fallback`, anything else an error. */
function booleanSetting(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const value = (env[name] ?? '').trim().toLowerCase();
  if (value === '') return fallback;
  if (value !== 'true' && value !== 'false') throw new Error(`${name} must be true or false (got '${env[name]}')`);
  return value === 'true';
}

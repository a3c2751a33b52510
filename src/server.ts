// Starting Tollgate: open and migrate the store, resolve the keys, build the app, listen, run the
// background jobs, and shut down cleanly (finish in-flight ledger writes) on SIGINT/SIGTERM.
import pino, { type Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from './config.ts';
import { openStore, type Store } from './store/db.ts';
import { migrateToLatest } from './store/migrate.ts';
import { ensureOperatorAccounts } from './ledger/accounts.ts';
import { Ledger, type LedgerApi } from './ledger/ledger.ts';
import { LeasedLedger } from './ledger/leases.ts';
import { startLedgerJobs } from './ledger/jobs.ts';
import { SecretBox, loadOrCreateSecretKey } from './lib/secrets.ts';
import { resolveMasterKey } from './auth/admin.ts';
import { buildApp, createContext, type AppContext } from './app.ts';
import { countTokens } from './providers/tokenizer.ts';
import { startRequestLogRetention } from './workspaces/request-logs.ts';

/** How long stopping waits for settlements of answered calls (retries included) before it closes the ledger. */
const settlementsStopWaitMs = 15_000;

export interface Running {
  app: FastifyInstance;
  ctx: AppContext;
  url: string;
  /** Set on the first start only: the generated master key, shown once. */
  generatedMasterKey: string | null;
  stop(): Promise<void>;
}

/** `serving`: the store of a long-running server, which checkpoints SQLite's WAL in the background. */
export async function openAndMigrate(config: Config, log: Logger, serving = false): Promise<Store> {
  const store = await openStore(config.databaseUrl, {
    poolSize: config.dbPoolSize,
    sqliteSynchronous: config.sqliteSynchronous,
    pgPreparedStatements: config.pgPreparedStatements,
    backgroundCheckpoints: serving,
    onCheckpointError: (message) => log.warn({ error: message }, 'background WAL checkpoint failed; commits will checkpoint instead'),
  });
  const applied = await migrateToLatest(store);
  if (applied.length > 0) log.info({ migrations: applied }, 'database migrated');
  await ensureOperatorAccounts(store.db, Date.now());
  return store;
}

export async function startServer(config: Config = loadConfig(), log: Logger = createLogger(config)): Promise<Running> {
  const store = await openAndMigrate(config, log, true);
  const secretKey = loadOrCreateSecretKey(config.secretKey, config.dataDir);
  if (secretKey.generatedAt) log.warn({ file: secretKey.generatedAt }, 'generated a new TOLLGATE_SECRET_KEY (keep this file safe, or set the variable)');
  const secrets = new SecretBox(secretKey.hex, config.previousSecretKeys);
  const masterKey = await resolveMasterKey(store.db, config.masterKey);
  const direct = new Ledger(store);
  const ledger: LedgerApi = config.balanceLeases ? new LeasedLedger(direct) : direct;
  const ctx = createContext({ config, store, ledger, secrets, masterKeyDigest: masterKey.digest, log });
  const app = await buildApp(ctx);
  // Load the tokenizer's tables now (about a second), not on the first customer's call.
  countTokens('warm up');
  let address: string;
  try {
    address = await app.listen({ port: config.port, host: config.host });
  } catch (err) {
    // The rate limiter's Redis connection and the catalog's timer would otherwise keep the failed process alive.
    ctx.catalog.close();
    await ctx.rateLimiter.close();
    await ledger.close();
    await store.close();
    throw err;
  }
  const stopJobs = startLedgerJobs(ledger, log);
  const stopRequestLogRetention = startRequestLogRetention(store.db, log);
  let stopped = false;
  return {
    app,
    ctx,
    url: address,
    generatedMasterKey: masterKey.generated,
    async stop() {
      if (stopped) return;
      stopped = true;
      stopJobs();
      stopRequestLogRetention();
      ctx.catalog.close();
      await app.close();
      // After the last call has answered: its settlement commits, and what it started still
      // reaches the store (first, so a Redis that hangs cannot keep a write from it) and Redis.
      await ctx.settlements.drain(settlementsStopWaitMs);
      await ctx.requestLogs.drain();
      await ledger.close();
      await ctx.rateLimiter.close();
      await store.close();
    },
  };
}

/** `destination` defaults to stdout; tests pass a stream to read what would be logged. */
export function createLogger(config: Pick<Config, 'logLevel'>, destination?: pino.DestinationStream): Logger {
  const options = {
    level: config.logLevel,
    redact: { paths: ['req.headers.authorization', 'req.headers["x-api-key"]', '*.apiKey', '*.api_key'], censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}

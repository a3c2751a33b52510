// Composes the HTTP server: health probes, the admin API and the gateway, each a Fastify plugin
// with its own routes and schemas, around one shared context.
import { EventEmitter } from 'node:events';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Config } from './config.ts';
import type { Store } from './store/db.ts';
import type { LedgerApi } from './ledger/ledger.ts';
import type { SecretBox } from './lib/secrets.ts';
import { newId } from './lib/ids.ts';
import { requireMasterKey } from './auth/admin.ts';
import { sendAppError } from './api/errors.ts';
import { adminWorkspaceRoutes } from './api/admin/workspaces.ts';
import { adminSettingsRoutes } from './api/admin/settings.ts';
import { adminProviderRoutes } from './api/admin/providers.ts';
import { adminModelRoutes } from './api/admin/models.ts';
import { adminKeyRoutes } from './api/admin/keys.ts';
import { adminPriceBookRoutes } from './api/admin/price-books.ts';
import { adminLoggingRoutes } from './api/admin/logging.ts';
import { adminUsageRoutes } from './api/admin/usage.ts';
import { Onboarding } from './workspaces/onboarding.ts';
import { CatalogCache } from './routing/catalog-cache.ts';
import { KeyCache } from './auth/keys.ts';
import { SettingsCache } from './gateway/context.ts';
import { gatewayRoutes } from './gateway/routes.ts';
import { WorkspaceCache } from './workspaces/cache.ts';
import { CircuitBreakers } from './routing/health.ts';
import { adminRoutingRoutes } from './api/admin/routing.ts';
import { createRateLimiter, type RateLimiter } from './limits/index.ts';
import { RequestLogWriter } from './gateway/request-logging.ts';
import { Settlements } from './gateway/settlements.ts';

export interface AppContext {
  config: Config;
  store: Store;
  ledger: LedgerApi;
  secrets: SecretBox;
  masterKeyDigest: string;
  onboarding: Onboarding;
  catalog: CatalogCache;
  keys: KeyCache;
  gatewaySettings: SettingsCache;
  workspaces: WorkspaceCache;
  breakers: CircuitBreakers;
  /** Per-key RPM/TPM counters: in Redis when REDIS_URL is set, else in this process. Closed on stop. */
  rateLimiter: RateLimiter;
  /** Stores the prompts and completions of workspaces that opted in; drained on stop. */
  requestLogs: RequestLogWriter;
  /** Settlements of answered calls not yet committed; reads wait for them, and stop drains them. */
  settlements: Settlements;
  /** In-process change notifications (`workspace.changed`, `settings.changed`, ...) for caches. */
  events: EventEmitter;
  log: Logger;
}

export const adminBodyLimitBytes = 1024 * 1024;

export async function buildApp(ctx: AppContext): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: ctx.log as FastifyBaseLogger,
    bodyLimit: adminBodyLimitBytes,
    genReqId: () => newId('req'),
    // Per-request log lines only at debug: the request path stays quiet and never logs bodies.
    logController: new LogController({ disableRequestLogging: ctx.config.logLevel !== 'debug' && ctx.config.logLevel !== 'trace' }),
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  });

  app.setErrorHandler((err, request, reply) => sendAppError(request, reply, err));
  app.setNotFoundHandler((request, reply) => sendAppError(request, reply, { code: 'FST_ERR_NOT_FOUND' }));

  // Set as the request arrives (a synchronous hook: no promise per request), so every answer,
  // errors and not-found included, carries it.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    done();
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    try {
      await sql`select 1`.execute(ctx.store.db);
      return { status: 'ready', database: ctx.store.engine };
    } catch (err) {
      ctx.log.warn({ err }, 'readiness check failed');
      return reply.status(503).send({ status: 'unavailable', database: ctx.store.engine });
    }
  });

  await app.register(async (admin) => {
    admin.addHook('onRequest', requireMasterKey(ctx.masterKeyDigest));
    // What this process's answered calls are still settling is part of what the operator reads.
    admin.addHook('preHandler', async () => {
      if (ctx.settlements.has()) await ctx.settlements.settled();
    });
    await adminWorkspaceRoutes(admin, ctx);
    await adminSettingsRoutes(admin, ctx);
    await adminProviderRoutes(admin, ctx);
    await adminModelRoutes(admin, ctx);
    await adminKeyRoutes(admin, ctx);
    await adminPriceBookRoutes(admin, ctx);
    await adminLoggingRoutes(admin, ctx);
    await adminUsageRoutes(admin, ctx);
    await adminRoutingRoutes(admin, ctx);
  });

  await app.register(async (gateway) => {
    await gatewayRoutes(gateway, {
      db: ctx.store.db,
      ledger: ctx.ledger,
      catalog: ctx.catalog,
      keys: ctx.keys,
      settings: ctx.gatewaySettings,
      workspaces: ctx.workspaces,
      breakers: ctx.breakers,
      rateLimiter: ctx.rateLimiter,
      requestLogs: ctx.requestLogs,
      settlements: ctx.settlements,
      settleBeforeAnswer: ctx.config.settleBeforeAnswer,
      log: ctx.log,
    });
  });

  return app;
}

export function createContext(parts: Omit<AppContext, 'onboarding' | 'events' | 'catalog' | 'keys' | 'gatewaySettings' | 'workspaces' | 'breakers' | 'rateLimiter' | 'requestLogs' | 'settlements'>): AppContext {
  const db = parts.store.db;
  const ctx: AppContext = {
    ...parts,
    onboarding: new Onboarding(db, parts.ledger),
    events: new EventEmitter(),
    catalog: new CatalogCache(db, parts.secrets, { log: parts.log }),
    keys: new KeyCache(db),
    gatewaySettings: new SettingsCache(db),
    workspaces: new WorkspaceCache(db),
    breakers: new CircuitBreakers(),
    rateLimiter: createRateLimiter({
      redisUrl: parts.config.redisUrl,
      failOpen: parts.config.rateLimitFailOpen,
      log: parts.log,
      prefix: parts.config.rateLimitPrefix,
    }),
    requestLogs: new RequestLogWriter(db, parts.log),
    settlements: new Settlements(parts.log),
  };
  // Admin writes invalidate the request path's caches at once in this process; other processes
  // reload on their own schedule (see the caches).
  ctx.events.on('catalog.changed', () => ctx.catalog.invalidate());
  ctx.events.on('keys.changed', () => ctx.keys.invalidate());
  ctx.events.on('settings.changed', () => ctx.gatewaySettings.invalidate());
  ctx.events.on('workspace.changed', (id?: string) => ctx.workspaces.invalidate(id));
  return ctx;
}

// The gateway's front doors, as one Fastify plugin: OpenAI-compatible routes answer errors in
// OpenAI's shape and `/v1/messages` in Anthropic's, whatever went wrong (bad JSON included).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../lib/errors.ts';
import { toAppError } from '../api/errors.ts';
import { formatCredits } from '../ledger/money.ts';
import { balanceOf } from '../ledger/reads.ts';
import { balanceView, iso } from '../api/views.ts';
import { isPricedFor } from '../pricing/price.ts';
import { rateFor, targetsOf } from '../routing/choose.ts';
import type { ChatRequest, EmbeddingsRequest, ImagesRequest } from '../providers/types.ts';
import { anthropicRequestToCanonical } from './anthropic-format.ts';
import { anthropicFormat, openAIFormat } from './formats.ts';
import { handleChat } from './chat.ts';
import { handleEmbeddings, handleImages } from './embeddings.ts';
import { authenticate, type GatewayDeps } from './pipeline.ts';
import { budgetUsageOf, getApiKey } from '../auth/keys.ts';
import { apiKeyView } from '../api/admin/keys.ts';

/** Prompts with images can be large; anything beyond this is refused before parsing. */
export const gatewayBodyLimitBytes = 20 * 1024 * 1024;
const maxUsagePage = 200;

export async function gatewayRoutes(app: FastifyInstance, deps: GatewayDeps) {
  app.setErrorHandler((err, req, reply) => {
    const appErr = toAppError(err);
    if (appErr.status >= 500) req.log.error({ err, requestId: req.id }, 'gateway request failed');
    for (const [k, v] of Object.entries(appErr.headers)) reply.header(k, v);
    const body = req.url.startsWith('/v1/messages') ? anthropicFormat.errorBody(appErr, req.id) : openAIFormat.errorBody(appErr, req.id);
    return reply.status(appErr.status).send(body);
  });

  const opts = { bodyLimit: gatewayBodyLimitBytes };
  const jsonBody = <T>(req: FastifyRequest): T => {
    if (typeof req.body !== 'object' || req.body === null || Array.isArray(req.body)) {
      throw new AppError('invalid_request_error', 'invalid_body', 'The body must be a JSON object.');
    }
    return req.body as T;
  };

  app.post('/v1/chat/completions', opts, (req, reply) => handleChat(deps, req, reply, openAIFormat, jsonBody<ChatRequest>(req)));
  app.post('/v1/messages', opts, (req, reply) => handleChat(deps, req, reply, anthropicFormat, anthropicRequestToCanonical(jsonBody(req))));
  app.post('/v1/embeddings', opts, (req, reply) => handleEmbeddings(deps, req, reply, jsonBody<EmbeddingsRequest>(req)));
  app.post('/v1/images/generations', opts, (req, reply) => handleImages(deps, req, reply, jsonBody<ImagesRequest>(req)));

  app.get('/v1/models', async (req) => {
    const key = await authenticate(deps, req, 'models.read');
    const workspace = await deps.workspaces.get(key.workspaceId);
    const catalog = await deps.catalog.get();
    const now = Date.now();
    const data = [];
    for (const model of catalog.models.values()) {
      if (model.status !== 'active') continue;
      if (key.models !== null && !key.models.includes(model.name)) continue;
      // Each workspace sees its own prices (its price book's where set); an alias shows the price
      // of the first model it stands for that can serve.
      const priced = targetsOf(model, catalog)
        .map((target) => ({ target, rate: rateFor(target, workspace.priceBookId, now) }))
        .find(({ target, rate }) => rate !== null && isPricedFor(rate.rates, target.workload) && target.routes.length > 0);
      if (!priced) continue;
      data.push({
        id: model.name,
        object: 'model',
        created: Math.floor(model.createdAt / 1000),
        owned_by: 'tollgate',
        workload: model.workload,
        description: model.description,
        ...(model.aliasOf ? { alias_of: model.aliasOf } : {}),
        pricing: { unit: 'credits', ...priced.rate!.rates },
      });
    }
    return { object: 'list', data };
  });

  app.get('/v1/balance', async (req) => {
    const key = await authenticate(deps, req, 'usage.read');
    await deps.settlements.settled(key.workspaceId);
    return balanceView(await balanceOf(deps.db, key.workspaceId));
  });

  app.get('/v1/usage', async (req: FastifyRequest<{ Querystring: { limit?: string; cursor?: string; key?: string } }>, reply: FastifyReply) => {
    const key = await authenticate(deps, req, 'usage.read');
    await deps.settlements.settled(key.workspaceId);
    const limit = Math.min(Math.max(Number(req.query.limit ?? 50) || 50, 1), maxUsagePage);
    let q = deps.db.selectFrom('usage_records').selectAll().where('workspace_id', '=', key.workspaceId);
    if (req.query.key === 'self') q = q.where('key_id', '=', key.id);
    if (req.query.cursor) q = q.where('id', '<', req.query.cursor);
    const rows = await q.orderBy('id', 'desc').limit(limit + 1).execute();
    const page = rows.slice(0, limit);
    void reply;
    // The calling key's own counters: spend and requests so far, and its current budget period.
    const own = await getApiKey(deps.db, key.workspaceId, key.id);
    const { keyDefaults } = await deps.workspaces.get(key.workspaceId);
    const budgets = await budgetUsageOf(deps.db, [own], keyDefaults);
    return {
      object: 'list',
      key: apiKeyView(own, keyDefaults, budgets.get(own.id)),
      data: page.map((r) => ({
        id: r.id,
        object: 'usage_record',
        keyId: r.key_id,
        endpoint: r.endpoint,
        model: r.model,
        inputTokens: Number(r.input_tokens),
        cachedInputTokens: Number(r.cached_input_tokens),
        outputTokens: Number(r.output_tokens),
        reasoningTokens: Number(r.reasoning_tokens),
        images: Number(r.images),
        estimated: Number(r.estimated) === 1,
        credits: formatCredits(BigInt(r.charge_micros)),
        status: r.status,
        errorCode: r.error_code,
        stream: Number(r.stream) === 1,
        latencyMs: r.latency_ms === null ? null : Number(r.latency_ms),
        createdAt: iso(r.created_at),
      })),
      hasMore: rows.length > limit,
      nextCursor: rows.length > limit ? page[page.length - 1].id : null,
    };
  });
}

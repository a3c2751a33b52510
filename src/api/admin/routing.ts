// Admin views of routing: each credential's circuit (state and why), and the audit of one
// request's route decision (chosen route, every attempt, every skipped route and its reason).
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import { notFound } from '../../lib/errors.ts';
import { formatCredits } from '../../ledger/money.ts';
import { formatNanos } from '../../pricing/price.ts';
import { iso } from '../views.ts';
import { routeDecisionOf } from '../../gateway/pipeline.ts';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

export async function adminRoutingRoutes(app: FastifyInstance, ctx: AppContext) {
  app.get('/api/admin/routing/health', async () => ({
    object: 'list',
    data: ctx.breakers.snapshot().map((c) => ({ ...c, object: 'circuit', openedAt: iso(c.openedAt), retryAt: iso(c.retryAt) })),
  }));

  app.get<{ Params: Static<typeof IdParams> }>('/api/admin/requests/:id', { schema: { params: IdParams } }, async (req) => {
    const r = await ctx.store.db.selectFrom('usage_records').selectAll().where('id', '=', req.params.id).executeTakeFirst();
    if (!r) throw notFound('request', req.params.id);
    return {
      id: r.id,
      object: 'request',
      workspaceId: r.workspace_id,
      keyId: r.key_id,
      endpoint: r.endpoint,
      model: r.model,
      providerId: r.provider_id,
      upstreamModel: r.upstream_model,
      routeId: r.route_id,
      rateId: r.rate_id,
      usage: {
        inputTokens: Number(r.input_tokens),
        cachedInputTokens: Number(r.cached_input_tokens),
        outputTokens: Number(r.output_tokens),
        reasoningTokens: Number(r.reasoning_tokens),
        images: Number(r.images),
        estimated: Number(r.estimated) === 1,
      },
      credits: formatCredits(BigInt(r.charge_micros)),
      cost: r.cost_nanos === null ? null : { amount: formatNanos(BigInt(r.cost_nanos)), currency: r.cost_currency },
      margin: r.margin_nanos === null ? null : formatNanos(BigInt(r.margin_nanos)),
      balanceAfter: r.balance_after_micros === null ? null : formatCredits(BigInt(r.balance_after_micros)),
      holdId: r.hold_id,
      transactionId: r.transfer_id,
      status: r.status,
      errorCode: r.error_code,
      stream: Number(r.stream) === 1,
      latencyMs: r.latency_ms === null ? null : Number(r.latency_ms),
      timeToFirstByteMs: r.ttfb_ms === null ? null : Number(r.ttfb_ms),
      attempts: Number(r.attempts),
      routeDecision: routeDecisionOf(r),
      createdAt: iso(r.created_at),
    };
  });
}

// Admin API for a workspace's usage summary: requests, tokens, credits charged and provider cost
// over a time range, grouped by key, by model or by a key metadata field.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import { parseGroupBy, summarizeUsage, type UsageSummaryRow } from '../../analytics/usage-summary.ts';
import { formatCredits } from '../../ledger/money.ts';
import { formatNanos } from '../../pricing/price.ts';
import { getWorkspace } from '../../workspaces/workspaces.ts';
import { iso } from '../views.ts';
import { parseTime } from '../pagination.ts';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const SummaryQuery = Type.Object({
  groupBy: Type.Optional(Type.String({ maxLength: 120 })),
  from: Type.Optional(Type.String({ maxLength: 40 })),
  to: Type.Optional(Type.String({ maxLength: 40 })),
});
const defaultSpanMs = 30 * 86_400_000;

function summaryRowView(r: UsageSummaryRow) {
  return {
    group: r.group,
    ...(r.keyName !== undefined ? { keyName: r.keyName } : {}),
    requests: r.requests,
    inputTokens: r.inputTokens,
    outputTokens: r.outputTokens,
    credits: formatCredits(r.chargeMicros),
    // One entry per currency: the calls may have gone to providers that bill in different ones.
    cost: [...r.costNanos].sort(([a], [b]) => (a < b ? -1 : 1)).map(([currency, nanos]) => ({ amount: formatNanos(nanos), currency })),
  };
}

export async function adminUsageRoutes(app: FastifyInstance, ctx: AppContext) {
  const db = ctx.store.db;

  app.get<{ Params: Static<typeof IdParams>; Querystring: Static<typeof SummaryQuery> }>(
    '/api/admin/workspaces/:id/usage-summary',
    { schema: { params: IdParams, querystring: SummaryQuery } },
    async (req) => {
      const q = req.query;
      const groupByText = q.groupBy ?? 'key';
      const groupBy = parseGroupBy(groupByText);
      const toMs = q.to ? parseTime(q.to, 'to') : Date.now() + 1;
      const fromMs = q.from ? parseTime(q.from, 'from') : toMs - defaultSpanMs;
      await getWorkspace(db, req.params.id);
      const rows = await summarizeUsage(db, req.params.id, { groupBy, fromMs, toMs });
      return { object: 'usage_summary', workspaceId: req.params.id, groupBy: groupByText, from: iso(fromMs), to: iso(toMs), data: rows.map(summaryRowView) };
    },
  );
}

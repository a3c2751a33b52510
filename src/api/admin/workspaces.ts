// Admin API for workspaces and their credits: create, list, read, update (credit limits, price
// book, data policy, prompt logging, key defaults), grant credits, and read balance, lots,
// transactions and balance history.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import { invalid } from '../../lib/errors.ts';
import { getWorkspace, listWorkspaces, updateWorkspace } from '../../workspaces/workspaces.ts';
import { lotSources, workspaceAccountId, type LotSource } from '../../ledger/accounts.ts';
import { parseCredits, parsePositiveCredits } from '../../ledger/money.ts';
import { balanceHistory, balanceOf, listTransactions, type Granularity } from '../../ledger/reads.ts';
import { balanceView, historyView, listView, lotView, transactionView, workspaceView, type LotRow } from '../views.ts';
import { pageQuery, parseTime, readPage } from '../pagination.ts';
import { Nullable } from '../schemas.ts';

const Credits = Type.Union([Type.String({ maxLength: 40 }), Type.Number()]);
// Null sits in the string branch's type list: a separate null branch after Credits would never be
// reached, as Ajv's coercion turns null into "" in the string branch first.
const NullableCredits = Type.Union([Nullable(Type.String({ maxLength: 40 })), Type.Number()]);
const Metadata = Type.Record(Type.String({ maxLength: 100 }), Type.String({ maxLength: 500 }));
const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
// The object comes first in the union so a malformed budget is reported by its own field.
export const BudgetSchema = Type.Union([Type.Object({ period: Type.String({ maxLength: 20 }), credits: Credits }, { additionalProperties: false }), Type.Null()]);
/** Budget, RPM and TPM of a workspace's key defaults (keys take the same); ranges are checked by the use case. */
export const KeyLimitsSchema = Type.Object(
  {
    budget: Type.Optional(BudgetSchema),
    rpm: Type.Optional(Nullable(Type.Integer())),
    tpm: Type.Optional(Nullable(Type.Integer())),
  },
  { additionalProperties: false },
);

const CreateBody = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }), metadata: Type.Optional(Metadata) }, { additionalProperties: false });
const PatchBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    metadata: Type.Optional(Metadata),
    status: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('suspended')])),
    warningLimit: Type.Optional(NullableCredits),
    overdraftLimit: Type.Optional(Credits),
    priceBookId: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
    policy: Type.Optional(
      Type.Object(
        {
          allowedRegions: Type.Optional(Nullable(Type.Array(Type.String({ maxLength: 40 }), { maxItems: 32 }))),
          zeroRetention: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: false },
      ),
    ),
    logging: Type.Optional(Type.Object({ enabled: Type.Boolean(), retentionDays: Type.Optional(Type.Integer()) }, { additionalProperties: false })),
    keyDefaults: Type.Optional(KeyLimitsSchema),
  },
  { additionalProperties: false },
);
const GrantBody = Type.Object(
  {
    credits: Credits,
    source: Type.Optional(Type.String({ maxLength: 40 })),
    priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
    expiresAt: Type.Optional(Type.Union([Type.String({ maxLength: 40 }), Type.Null()])),
    note: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);
const TransactionsQuery = Type.Object({
  ...pageQuery,
  kind: Type.Optional(Type.String({ maxLength: 40 })),
  model: Type.Optional(Type.String({ maxLength: 200 })),
  tag: Type.Optional(Type.String({ maxLength: 200 })),
  from: Type.Optional(Type.String({ maxLength: 40 })),
  to: Type.Optional(Type.String({ maxLength: 40 })),
});
const HistoryQuery = Type.Object({
  granularity: Type.Optional(Type.Union([Type.Literal('day'), Type.Literal('week'), Type.Literal('month')])),
  from: Type.Optional(Type.String({ maxLength: 40 })),
  to: Type.Optional(Type.String({ maxLength: 40 })),
});

const dayMs = 86_400_000;
const defaultHistorySpanDays: Record<Granularity, number> = { day: 30, week: 7 * 26, month: 365 };

export async function adminWorkspaceRoutes(app: FastifyInstance, ctx: AppContext) {
  const { store, ledger } = ctx;
  const db = store.db;

  const limitsOf = async (id: string) => {
    const b = await balanceOf(db, id);
    return { overdraftLimitMicros: b.overdraftLimitMicros, warningLimitMicros: b.warningLimitMicros };
  };

  app.post<{ Body: Static<typeof CreateBody> }>('/api/admin/workspaces', { schema: { body: CreateBody } }, async (req, reply) => {
    const w = await ctx.onboarding.createWorkspace(req.body);
    return reply.status(201).send(workspaceView(w, await limitsOf(w.id)));
  });

  app.get<{ Querystring: Static<typeof TransactionsQuery> }>('/api/admin/workspaces', { schema: { querystring: Type.Object(pageQuery) } }, async (req) => {
    const page = await listWorkspaces(db, readPage(req.query));
    return listView(page.data.map((w) => workspaceView(w)), page.nextCursor);
  });

  app.get<{ Params: Static<typeof IdParams> }>('/api/admin/workspaces/:id', { schema: { params: IdParams } }, async (req) => {
    const w = await getWorkspace(db, req.params.id);
    return workspaceView(w, await limitsOf(w.id));
  });

  app.patch<{ Params: Static<typeof IdParams>; Body: Static<typeof PatchBody> }>(
    '/api/admin/workspaces/:id',
    { schema: { params: IdParams, body: PatchBody } },
    async (req) => {
      const { id } = req.params;
      const body = req.body;
      // Parse every amount before writing anything, so bad input changes nothing.
      const limits: { overdraftLimitMicros?: bigint; warningLimitMicros?: bigint | null } = {};
      if (body.overdraftLimit !== undefined) limits.overdraftLimitMicros = nonNegative(parseCredits(body.overdraftLimit, 'overdraftLimit'), 'overdraftLimit');
      if (body.warningLimit !== undefined) {
        limits.warningLimitMicros = body.warningLimit === null ? null : nonNegative(parseCredits(body.warningLimit, 'warningLimit'), 'warningLimit');
      }
      // updateWorkspace checks its whole patch before it writes; the ledger limits go after it.
      const { name, metadata, status, priceBookId, policy, logging, keyDefaults } = body;
      const w = await updateWorkspace(db, id, { name, metadata, status, priceBookId, policy, logging, keyDefaults });
      if (Object.keys(limits).length > 0) await ledger.setLimits(id, limits);
      ctx.events.emit('workspace.changed', id);
      return workspaceView(w, await limitsOf(id));
    },
  );

  app.post<{ Params: Static<typeof IdParams>; Body: Static<typeof GrantBody> }>(
    '/api/admin/workspaces/:id/grants',
    { schema: { params: IdParams, body: GrantBody } },
    async (req, reply) => {
      const { id } = req.params;
      const body = req.body;
      const amountMicros = parsePositiveCredits(body.credits, 'credits');
      const source = (body.source ?? 'manual') as LotSource;
      if (!lotSources.includes(source)) {
        throw invalid('invalid_source', `'source' must be one of ${lotSources.join(', ')}.`, 'source');
      }
      const expiresAt = body.expiresAt == null ? null : parseTime(body.expiresAt, 'expiresAt');
      const idempotencyKey = headerKey(req.headers['idempotency-key']);
      const result = await ledger.grant({ workspaceId: id, amountMicros, source, priority: body.priority, expiresAt, note: body.note ?? null, idempotencyKey });
      const lot = await db.selectFrom('lots').selectAll().where('id', '=', result.lotId).executeTakeFirstOrThrow();
      if (result.replayed) reply.header('idempotent-replayed', 'true');
      return reply.status(201).send(lotView(lot as unknown as LotRow));
    },
  );

  app.get<{ Params: Static<typeof IdParams>; Querystring: Static<typeof TransactionsQuery> }>(
    '/api/admin/workspaces/:id/lots',
    { schema: { params: IdParams, querystring: Type.Object(pageQuery) } },
    async (req) => {
      await getWorkspace(db, req.params.id);
      const page = readPage(req.query);
      let q = db.selectFrom('lots').selectAll().where('account_id', '=', workspaceAccountId(req.params.id));
      if (page.cursor) q = q.where('id', '<', page.cursor);
      const rows = await q.orderBy('id', 'desc').limit(page.limit + 1).execute();
      const data = rows.slice(0, page.limit);
      return listView(data.map((l) => lotView(l as unknown as LotRow)), rows.length > page.limit ? data[data.length - 1].id : null);
    },
  );

  app.get<{ Params: Static<typeof IdParams> }>('/api/admin/workspaces/:id/balance', { schema: { params: IdParams } }, async (req) =>
    balanceView(await balanceOf(db, req.params.id)),
  );

  app.get<{ Params: Static<typeof IdParams>; Querystring: Static<typeof TransactionsQuery> }>(
    '/api/admin/workspaces/:id/transactions',
    { schema: { params: IdParams, querystring: TransactionsQuery } },
    async (req) => {
      await getWorkspace(db, req.params.id);
      const q = req.query;
      const page = await listTransactions(db, req.params.id, {
        ...readPage(q),
        kind: q.kind,
        model: q.model,
        tag: q.tag,
        fromMs: q.from ? parseTime(q.from, 'from') : undefined,
        toMs: q.to ? parseTime(q.to, 'to') : undefined,
      });
      return listView(page.data.map(transactionView), page.nextCursor);
    },
  );

  app.get<{ Params: Static<typeof IdParams>; Querystring: Static<typeof HistoryQuery> }>(
    '/api/admin/workspaces/:id/balance-history',
    { schema: { params: IdParams, querystring: HistoryQuery } },
    async (req) => {
      const granularity = req.query.granularity ?? 'day';
      const toMs = req.query.to ? parseTime(req.query.to, 'to') : Date.now() + 1;
      const fromMs = req.query.from ? parseTime(req.query.from, 'from') : toMs - defaultHistorySpanDays[granularity] * dayMs;
      const points = await balanceHistory(db, store.engine, req.params.id, granularity, fromMs, toMs);
      return { object: 'balance_history', workspaceId: req.params.id, granularity, data: points.map(historyView) };
    },
  );
}

function nonNegative(micros: bigint, param: string): bigint {
  if (micros < 0n) throw invalid('invalid_amount', `'${param}' must be zero or more.`, param);
  return micros;
}

export function headerKey(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  const key = Array.isArray(value) ? value[0] : value;
  if (key.length === 0 || key.length > 255) throw invalid('invalid_idempotency_key', 'The Idempotency-Key header must be 1 to 255 characters.', 'Idempotency-Key');
  return key;
}

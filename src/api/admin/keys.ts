// Admin API for a workspace's customer API keys: create (the key is in this one response only),
// list, read, change and revoke. Keys are stored hashed; views show the 12-character prefix, the
// key's limits (its own and, after the workspace's defaults, the effective ones), its spend and
// requests, and for a budgeted key where it stands in the current budget period.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import { budgetUsageOf, createApiKey, getApiKey, listApiKeys, revokeApiKey, updateApiKey, type ApiKey, type BudgetUsage } from '../../auth/keys.ts';
import { formatCredits } from '../../ledger/money.ts';
import { effectiveLimits, type KeyLimits } from '../../workspaces/policy.ts';
import { keyLimitsView } from '../../workspaces/key-limits.ts';
import { getWorkspace } from '../../workspaces/workspaces.ts';
import { iso, listView } from '../views.ts';
import { pageQuery, parseTime, readPage } from '../pagination.ts';
import { Nullable } from '../schemas.ts';
import { BudgetSchema } from './workspaces.ts';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const KeyParams = Type.Object({ id: Type.String({ maxLength: 64 }), keyId: Type.String({ maxLength: 64 }) });
const keyFields = {
  name: Type.String({ maxLength: 200 }),
  scopes: Type.Optional(Type.Array(Type.String({ maxLength: 40 }), { maxItems: 20 })),
  models: Type.Optional(Type.Union([Type.Null(), Type.Array(Type.String({ maxLength: 100 }), { maxItems: 100 })])),
  expiresAt: Type.Optional(Type.Union([Type.Null(), Type.String({ maxLength: 40 })])),
  metadata: Type.Optional(Type.Record(Type.String({ maxLength: 100 }), Type.String({ maxLength: 500 }))),
  budget: Type.Optional(BudgetSchema),
  rpm: Type.Optional(Nullable(Type.Integer())),
  tpm: Type.Optional(Nullable(Type.Integer())),
};
const CreateBody = Type.Object(keyFields, { additionalProperties: false });
const PatchBody = Type.Partial(Type.Object(keyFields), { additionalProperties: false });
const ListQuery = Type.Object({ ...pageQuery, status: Type.Optional(Type.String({ maxLength: 20 })) });

function budgetUsageView(u: BudgetUsage | undefined) {
  if (!u) return null;
  return {
    period: u.period,
    credits: formatCredits(u.limitMicros),
    periodStart: iso(u.periodStart),
    periodEnd: iso(u.periodEnd),
    spent: formatCredits(u.spentMicros),
    pending: formatCredits(u.pendingMicros),
    remaining: formatCredits(u.remainingMicros),
  };
}

/** `defaults` and `usage` come from the key's workspace; without them the view shows the key's own limits only. */
export function apiKeyView(k: ApiKey, defaults?: KeyLimits, usage?: BudgetUsage) {
  return {
    id: k.id,
    object: 'api_key',
    workspaceId: k.workspaceId,
    name: k.name,
    prefix: k.prefix,
    scopes: k.scopes,
    models: k.models,
    metadata: k.metadata,
    status: k.status,
    expiresAt: iso(k.expiresAt),
    ...keyLimitsView(k.limits),
    ...(defaults ? { effectiveLimits: keyLimitsView(effectiveLimits(k.limits, defaults)), budgetUsage: budgetUsageView(usage) } : {}),
    spend: formatCredits(k.spendMicros),
    requests: k.requests,
    lastUsedAt: iso(k.lastUsedAt),
    createdAt: iso(k.createdAt),
    revokedAt: iso(k.revokedAt),
  };
}

export async function adminKeyRoutes(app: FastifyInstance, ctx: AppContext) {
  const db = ctx.store.db;
  const changed = () => ctx.events.emit('keys.changed');

  /** Views of keys of one workspace, with their effective limits and budget usage. */
  const views = async (workspaceId: string, keys: ApiKey[]) => {
    const { keyDefaults } = await getWorkspace(db, workspaceId);
    const usage = await budgetUsageOf(db, keys, keyDefaults);
    return keys.map((k) => apiKeyView(k, keyDefaults, usage.get(k.id)));
  };
  const timeOrNull = (value: string | null | undefined) => (value == null ? value : parseTime(value, 'expiresAt'));

  app.post<{ Params: Static<typeof IdParams>; Body: Static<typeof CreateBody> }>(
    '/api/admin/workspaces/:id/keys',
    { schema: { params: IdParams, body: CreateBody } },
    async (req, reply) => {
      const { expiresAt, ...body } = req.body;
      const { apiKey, key } = await createApiKey(db, req.params.id, { ...body, expiresAtMs: timeOrNull(expiresAt) ?? null });
      changed();
      const [view] = await views(req.params.id, [apiKey]);
      return reply.status(201).send({ ...view, key });
    },
  );

  app.get<{ Params: Static<typeof IdParams>; Querystring: Static<typeof ListQuery> }>(
    '/api/admin/workspaces/:id/keys',
    { schema: { params: IdParams, querystring: ListQuery } },
    async (req) => {
      const page = await listApiKeys(db, req.params.id, { ...readPage(req.query), status: req.query.status });
      return listView(await views(req.params.id, page.data), page.nextCursor);
    },
  );

  app.get<{ Params: Static<typeof KeyParams> }>('/api/admin/workspaces/:id/keys/:keyId', { schema: { params: KeyParams } }, async (req) => {
    const [view] = await views(req.params.id, [await getApiKey(db, req.params.id, req.params.keyId)]);
    return view;
  });

  app.patch<{ Params: Static<typeof KeyParams>; Body: Static<typeof PatchBody> }>(
    '/api/admin/workspaces/:id/keys/:keyId',
    { schema: { params: KeyParams, body: PatchBody } },
    async (req) => {
      const { expiresAt, ...body } = req.body;
      const apiKey = await updateApiKey(db, req.params.id, req.params.keyId, { ...body, expiresAtMs: timeOrNull(expiresAt) });
      changed();
      const [view] = await views(req.params.id, [apiKey]);
      return view;
    },
  );

  app.delete<{ Params: Static<typeof KeyParams> }>('/api/admin/workspaces/:id/keys/:keyId', { schema: { params: KeyParams } }, async (req) => {
    const apiKey = await revokeApiKey(db, req.params.id, req.params.keyId);
    changed();
    const [view] = await views(req.params.id, [apiKey]);
    return view;
  });
}

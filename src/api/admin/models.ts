// Admin API for models, their routes and their versioned rates (the default ones and each price
// book's). Every model view says whether the gateway will serve it (`callable`, and why not; an
// alias is callable when a model it stands for is) and, per route with a cost, the margin per unit.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import { addRates, createModel, deleteModel, getModel, getModelsByName, listModels, listRates, updateModel, type Model, type RateVersion, type Route } from '../../routing/models.ts';
import { aliasCallability, callabilityOf, currentRate } from '../../routing/catalog.ts';
import type { RateEntry } from '../../routing/types.ts';
import { unitMargins } from '../../pricing/margin.ts';
import { iso, listView } from '../views.ts';
import { pageQuery, parseTime, readPage } from '../pagination.ts';
import { Nullable } from '../schemas.ts';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const Decimal = Type.Union([Type.String({ maxLength: 40 }), Type.Number()]);
// Units and amounts are checked by parseRateCard/parseCostCard, whose errors name the exact field.
const RateCardSchema = Type.Record(Type.String({ maxLength: 40 }), Decimal, { maxProperties: 12 });
const RouteSchema = Type.Object(
  {
    providerId: Type.String({ maxLength: 64 }),
    upstreamModel: Type.String({ maxLength: 200 }),
    priority: Type.Optional(Type.Integer()),
    weight: Type.Optional(Type.Integer()),
    region: Type.Optional(Type.Union([Type.Null(), Type.String({ maxLength: 40 })])),
    cost: Type.Optional(Type.Union([Type.Null(), RateCardSchema])),
  },
  { additionalProperties: false },
);
const Routes = Type.Array(RouteSchema, { maxItems: 20 });
const modelFields = {
  name: Type.String({ maxLength: 200 }),
  workload: Type.String({ maxLength: 20 }),
  description: Type.Optional(Type.Union([Type.Null(), Type.String({ maxLength: 1000 })])),
  maxOutputTokens: Type.Optional(Type.Union([Type.Null(), Type.Integer()])),
  status: Type.Optional(Type.String({ maxLength: 20 })),
  aliasOf: Type.Optional(Nullable(Type.Array(Type.String({ maxLength: 100 }), { maxItems: 10 }))),
  routingStrategy: Type.Optional(Type.String({ maxLength: 20 })),
};
const CreateBody = Type.Object(
  { ...modelFields, routes: Type.Optional(Routes), rates: Type.Optional(RateCardSchema), ratesEffectiveAt: Type.Optional(Type.String({ maxLength: 40 })) },
  { additionalProperties: false },
);
const PatchBody = Type.Partial(Type.Object({ ...modelFields, routes: Routes }), { additionalProperties: false });
const PriceBookId = Type.String({ maxLength: 64 });
const RatesBody = Type.Object(
  { rates: RateCardSchema, effectiveAt: Type.Optional(Type.String({ maxLength: 40 })), priceBookId: Type.Optional(Nullable(PriceBookId)) },
  { additionalProperties: false },
);
const RatesQuery = Type.Object({ priceBookId: Type.Optional(PriceBookId) });
const ListQuery = Type.Object({ ...pageQuery, status: Type.Optional(Type.String({ maxLength: 20 })), workload: Type.Optional(Type.String({ maxLength: 20 })) });

export function rateVersionView(r: RateVersion, nowMs: number, current: RateEntry | null) {
  return {
    id: r.id,
    object: 'model_rate',
    modelId: r.modelId,
    priceBookId: r.priceBookId,
    rates: r.rates,
    effectiveAt: iso(r.effectiveAt),
    status: r.id === current?.id ? 'current' : r.effectiveAt > nowMs ? 'scheduled' : 'superseded',
    createdAt: iso(r.createdAt),
  };
}

/** Margins are against the rates in effect now, or the first scheduled ones when none are yet. */
function routeView(r: Route, basis: RateEntry | null) {
  const units = r.cost && basis ? unitMargins(basis.rates, r.cost) : null;
  return {
    id: r.id,
    providerId: r.providerId,
    providerName: r.provider.name,
    providerStatus: r.provider.status,
    upstreamModel: r.upstreamModel,
    priority: r.priority,
    weight: r.weight,
    region: r.region,
    cost: r.cost,
    margin: units && basis ? { rateId: basis.id, currency: r.cost!.currency, belowCost: units.some((u) => u.margin.startsWith('-')), units } : null,
  };
}

/** `targets`: the models an alias stands for, by name (the route loads them with getModelsByName). */
export function modelView(m: Model, nowMs = Date.now(), targets: ReadonlyMap<string, Model> = new Map()) {
  const current = currentRate(m.rates, nowMs);
  const scheduled = m.rates.filter((r) => r.priceBookId === null && r.effectiveAt > nowMs);
  const { callable, reason } = m.aliasOf ? aliasCallability(m, m.aliasOf.map((name) => targets.get(name)), nowMs) : callabilityOf(m, nowMs);
  const basis = current ?? scheduled[0] ?? null;
  return {
    id: m.id,
    object: 'model',
    name: m.name,
    workload: m.workload,
    description: m.description,
    maxOutputTokens: m.maxOutputTokens,
    status: m.status,
    aliasOf: m.aliasOf,
    routingStrategy: m.routingStrategy,
    callable,
    notCallableReason: reason,
    rates: current?.rates ?? null,
    rateId: current?.id ?? null,
    ratesEffectiveAt: iso(current?.effectiveAt),
    scheduledRates: scheduled.map((r) => ({ id: r.id, rates: r.rates, effectiveAt: iso(r.effectiveAt) })),
    priceBooks: m.priceBooks.map((book) => {
      const bookCurrent = currentRate(m.rates, nowMs, book.id);
      return {
        priceBookId: book.id,
        name: book.name,
        rates: bookCurrent?.rates ?? null,
        rateId: bookCurrent?.id ?? null,
        ratesEffectiveAt: iso(bookCurrent?.effectiveAt),
        scheduledRates: m.rates.filter((r) => r.priceBookId === book.id && r.effectiveAt > nowMs).map((r) => ({ id: r.id, rates: r.rates, effectiveAt: iso(r.effectiveAt) })),
      };
    }),
    routes: m.routes.map((r) => routeView(r, basis)),
    createdAt: iso(m.createdAt),
    updatedAt: iso(m.updatedAt),
  };
}

export async function adminModelRoutes(app: FastifyInstance, ctx: AppContext) {
  const db = ctx.store.db;
  const changed = () => ctx.events.emit('catalog.changed');
  /** Views of models, with the models their aliases stand for loaded (one query for the lot). */
  const views = async (models: Model[]) => {
    const wanted = new Set(models.flatMap((m) => m.aliasOf ?? []));
    const targets = new Map((await getModelsByName(db, [...wanted])).map((t) => [t.name, t]));
    const nowMs = Date.now();
    return models.map((m) => modelView(m, nowMs, targets));
  };
  const view = async (m: Model) => (await views([m]))[0];

  app.post<{ Body: Static<typeof CreateBody> }>('/api/admin/models', { schema: { body: CreateBody } }, async (req, reply) => {
    const body = req.body;
    const ratesEffectiveAt = body.ratesEffectiveAt === undefined ? undefined : parseTime(body.ratesEffectiveAt, 'ratesEffectiveAt');
    const model = await createModel(db, { ...body, ratesEffectiveAt });
    changed();
    return reply.status(201).send(await view(model));
  });

  app.get<{ Querystring: Static<typeof ListQuery> }>('/api/admin/models', { schema: { querystring: ListQuery } }, async (req) => {
    const page = await listModels(db, { ...readPage(req.query), status: req.query.status, workload: req.query.workload });
    return listView(await views(page.data), page.nextCursor);
  });

  app.get<{ Params: Static<typeof IdParams> }>('/api/admin/models/:id', { schema: { params: IdParams } }, async (req) => view(await getModel(db, req.params.id)));

  app.patch<{ Params: Static<typeof IdParams>; Body: Static<typeof PatchBody> }>(
    '/api/admin/models/:id',
    { schema: { params: IdParams, body: PatchBody } },
    async (req) => {
      const model = await updateModel(db, req.params.id, req.body);
      changed();
      return view(model);
    },
  );

  app.delete<{ Params: Static<typeof IdParams> }>('/api/admin/models/:id', { schema: { params: IdParams } }, async (req) => {
    await deleteModel(db, req.params.id);
    changed();
    return { id: req.params.id, object: 'model', deleted: true };
  });

  app.post<{ Params: Static<typeof IdParams>; Body: Static<typeof RatesBody> }>(
    '/api/admin/models/:id/rates',
    { schema: { params: IdParams, body: RatesBody } },
    async (req, reply) => {
      const effectiveAtMs = req.body.effectiveAt === undefined ? undefined : parseTime(req.body.effectiveAt, 'effectiveAt');
      const priceBookId = req.body.priceBookId ?? null;
      const version = await addRates(db, req.params.id, { rates: req.body.rates, effectiveAtMs, priceBookId });
      changed();
      const nowMs = Date.now();
      const all = await listRates(db, req.params.id, priceBookId);
      return reply.status(201).send(rateVersionView(version, nowMs, currentRate(all, nowMs, priceBookId)));
    },
  );

  app.get<{ Params: Static<typeof IdParams>; Querystring: Static<typeof RatesQuery> }>(
    '/api/admin/models/:id/rates',
    { schema: { params: IdParams, querystring: RatesQuery } },
    async (req) => {
      const priceBookId = req.query.priceBookId || null;
      const versions = await listRates(db, req.params.id, priceBookId);
      const nowMs = Date.now();
      const current = currentRate(versions, nowMs, priceBookId);
      // Bounded by maxRateVersionsPerModel; newest effective time first.
      return listView(versions.map((r) => rateVersionView(r, nowMs, current)).reverse(), null);
    },
  );
}

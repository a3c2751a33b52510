// Models customers call, their routes to upstream providers and their rates: create, read, update,
// delete, and append rate versions (the default ones, or a price book's). Rates are versioned by
// effective time and never edited, so the price of any past call can always be found again. A model
// may instead be an alias of others: it has no routes or rates of its own, and is served and
// priced by the first model it stands for that can serve the call.
import type { Kysely, Updateable } from 'kysely';
import type { Database, ModelRatesTable, ModelsTable } from '../store/schema.ts';
import { AppError, conflict, invalid, notFound } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import { isUniqueViolation } from '../store/errors.ts';
import { parseCostCard, parseRateCard, type CostCard, type RateCard } from '../pricing/price.ts';
import { lockPriceBookParam } from '../pricing/price-books.ts';
import type { RateEntry, Workload } from './types.ts';
import { checkOneOf, checkRegion, checkText, compare, type ProviderStatus } from './providers.ts';

export const workloads = ['text', 'embedding', 'image', 'audio', 'video', 'coding'] as const satisfies readonly Workload[];
export type ModelStatus = 'active' | 'inactive';
export const routingStrategies = ['weighted', 'cost'] as const;
export type RoutingStrategy = (typeof routingStrategies)[number];

export const maxRoutesPerModel = 20;
/** Per model and price book (the default rates count as one book). */
export const maxRateVersionsPerModel = 500;
export const maxAliasTargets = 10;
/** What customers call a model: 1 to 100 of letters, digits and . _ : / - */
export const modelNamePattern = /^[a-zA-Z0-9._:/-]{1,100}$/;
const upstreamModelPattern = /^[\x21-\x7e]{1,200}$/;
const maxDescriptionChars = 1000;
const maxOutputTokensLimit = 10_000_000;
const maxPriority = 100;
const maxWeight = 1000;
/** How far in the past a new rate version may start: clock skew between client and server, not back-dating. */
export const rateBackdateToleranceMs = 5 * 60_000;

export interface Route {
  id: string;
  providerId: string;
  provider: { id: string; name: string; status: ProviderStatus };
  upstreamModel: string;
  priority: number;
  weight: number;
  region: string | null;
  cost: CostCard | null;
}

export interface RateVersion extends RateEntry {
  modelId: string;
  createdAt: number;
}

export interface Model {
  id: string;
  name: string;
  workload: Workload;
  description: string | null;
  maxOutputTokens: number | null;
  status: ModelStatus;
  /** The names of the models this alias stands for, in the order they are tried; null: not an alias. */
  aliasOf: string[] | null;
  routingStrategy: RoutingStrategy;
  routes: Route[]; // by priority, then in the order given
  rates: RateVersion[]; // every version of every price book, by effectiveAt ascending
  /** The price books that hold rates for this model, by name. */
  priceBooks: Array<{ id: string; name: string }>;
  createdAt: number;
  updatedAt: number;
}

export interface RouteInput {
  providerId: string;
  upstreamModel: string;
  priority?: number;
  weight?: number;
  region?: string | null;
  cost?: unknown;
}

export interface ModelInput {
  name: string;
  workload: string;
  description?: string | null;
  maxOutputTokens?: number | null;
  status?: string;
  /** Required unless the model is an alias (which has none). */
  routes?: RouteInput[];
  rates?: unknown;
  ratesEffectiveAt?: number;
  aliasOf?: string[] | null;
  routingStrategy?: string;
}

export interface ModelPatch {
  name?: string;
  workload?: string;
  description?: string | null;
  maxOutputTokens?: number | null;
  status?: string;
  /** Replaces every route when given. */
  routes?: RouteInput[];
  /** null turns an alias back into a plain model (with no routes or rates yet). */
  aliasOf?: string[] | null;
  routingStrategy?: string;
}

interface CheckedRoute {
  providerId: string;
  upstreamModel: string;
  priority: number;
  weight: number;
  region: string | null;
  cost: CostCard | null;
}

export async function createModel(db: Kysely<Database>, input: ModelInput, nowMs = Date.now()): Promise<Model> {
  const row = {
    id: newId('mdl', nowMs),
    name: checkModelName(input.name),
    workload: checkOneOf(input.workload, workloads, 'workload'),
    description: checkText(input.description ?? null, 'description', maxDescriptionChars),
    max_output_tokens: checkMaxOutputTokens(input.maxOutputTokens ?? null),
    status: checkOneOf(input.status ?? 'active', ['active', 'inactive'], 'status'),
    alias_of: null as string | null,
    routing_strategy: checkOneOf(input.routingStrategy ?? 'weighted', routingStrategies, 'routingStrategy'),
    created_at: nowMs,
    updated_at: nowMs,
  };
  const aliasOf = input.aliasOf == null ? null : checkAliasNames(input.aliasOf);
  if (aliasOf) {
    if (input.routes !== undefined && input.routes.length > 0) throw aliasHasRoutes();
    if (input.rates !== undefined) throw aliasHasRates('rates');
    row.alias_of = JSON.stringify(aliasOf);
  }
  const routes = aliasOf && input.routes === undefined ? [] : checkRoutes(input.routes);
  if (input.rates === undefined && input.ratesEffectiveAt !== undefined) {
    throw invalid('invalid_parameter', "'ratesEffectiveAt' needs 'rates'.", 'ratesEffectiveAt');
  }
  // A new model has no price history to rewrite, so its first rates may start in the past.
  const rates = input.rates === undefined ? null : parseRateCard(input.rates, 'rates');
  try {
    await db.transaction().execute(async (tx) => {
      await assertNameFree(tx, row.name, null);
      await assertProvidersExist(tx, routes);
      if (aliasOf) await assertAliasTargets(tx, row.name, row.workload, aliasOf);
      await tx.insertInto('models').values(row).execute();
      await insertRoutes(tx, row.id, routes, nowMs);
      if (rates) await insertRate(tx, row.id, rates, input.ratesEffectiveAt ?? nowMs, nowMs);
    });
  } catch (err) {
    throw isUniqueViolation(err) ? nameTaken(row.name) : err;
  }
  return getModel(db, row.id);
}

export async function getModel(db: Kysely<Database>, id: string): Promise<Model> {
  const row = await db.selectFrom('models').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('model', id);
  return (await withRoutesAndRates(db, [row]))[0];
}

/** Newest first; `nextCursor` is the id to pass as `cursor` for the next page. */
export async function listModels(
  db: Kysely<Database>,
  page: { cursor?: string; limit: number; status?: string; workload?: string },
): Promise<{ data: Model[]; nextCursor: string | null }> {
  let q = db.selectFrom('models').selectAll();
  if (page.cursor) q = q.where('id', '<', page.cursor);
  if (page.status) q = q.where('status', '=', page.status);
  if (page.workload) q = q.where('workload', '=', page.workload);
  const rows = await q.orderBy('id', 'desc').limit(page.limit + 1).execute();
  const data = await withRoutesAndRates(db, rows.slice(0, page.limit));
  return { data, nextCursor: rows.length > page.limit ? data[data.length - 1].id : null };
}

export async function updateModel(db: Kysely<Database>, id: string, patch: ModelPatch, nowMs = Date.now()): Promise<Model> {
  const set: Updateable<ModelsTable> = { updated_at: nowMs };
  if (patch.name !== undefined) set.name = checkModelName(patch.name);
  if (patch.workload !== undefined) set.workload = checkOneOf(patch.workload, workloads, 'workload');
  if (patch.description !== undefined) set.description = checkText(patch.description, 'description', maxDescriptionChars);
  if (patch.maxOutputTokens !== undefined) set.max_output_tokens = checkMaxOutputTokens(patch.maxOutputTokens);
  if (patch.status !== undefined) set.status = checkOneOf(patch.status, ['active', 'inactive'], 'status');
  if (patch.routingStrategy !== undefined) set.routing_strategy = checkOneOf(patch.routingStrategy, routingStrategies, 'routingStrategy');
  const patchAliasOf = patch.aliasOf == null ? patch.aliasOf : checkAliasNames(patch.aliasOf);
  if (patchAliasOf !== undefined) set.alias_of = patchAliasOf === null ? null : JSON.stringify(patchAliasOf);
  const routes = patch.routes === undefined ? null : checkRoutes(patch.routes);
  try {
    await db.transaction().execute(async (tx) => {
      // Lock the row before reading it, so the alias checks below see every concurrent change to it.
      if (!(await lockModel(tx, id))) throw notFound('model', id);
      const before = await tx.selectFrom('models').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
      if (set.name !== undefined) await assertNameFree(tx, set.name, id);
      await tx.updateTable('models').set(set).where('id', '=', id).execute();
      if (routes) {
        await assertProvidersExist(tx, routes);
        await tx.deleteFrom('model_routes').where('model_id', '=', id).execute();
        await insertRoutes(tx, id, routes, nowMs);
      }
      const after = await tx.selectFrom('models').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
      await checkAliasChange(tx, before, after);
    });
  } catch (err) {
    throw isUniqueViolation(err) ? nameTaken(String(set.name)) : err;
  }
  return getModel(db, id);
}

/** Deletes the model with its routes and rate history (usage records keep the name and amounts). */
export async function deleteModel(db: Kysely<Database>, id: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    if (!(await lockModel(tx, id))) throw notFound('model', id);
    const row = await tx.selectFrom('models').select(['id', 'name']).where('id', '=', id).executeTakeFirstOrThrow();
    const aliases = await aliasesOf(tx, row.name);
    if (aliases.length > 0) {
      throw conflict('model_in_use', `The alias '${aliases[0].name}' stands for this model: change or delete the alias first.`);
    }
    await tx.deleteFrom('model_rates').where('model_id', '=', id).execute();
    await tx.deleteFrom('model_routes').where('model_id', '=', id).execute();
    await tx.deleteFrom('models').where('id', '=', id).execute();
  });
}

/**
 * Appends a rate version taking effect at `effectiveAtMs` (default now). Earlier versions are never
 * changed, and a version may not start in the past (beyond clock skew): that would reprice calls
 * already made.
 */
export async function addRates(
  db: Kysely<Database>,
  modelId: string,
  input: { rates: unknown; effectiveAtMs?: number; priceBookId?: string | null },
  nowMs = Date.now(),
): Promise<RateVersion> {
  const rates = parseRateCard(input.rates, 'rates');
  const priceBookId = input.priceBookId ?? null;
  const effectiveAt = input.effectiveAtMs ?? nowMs;
  if (effectiveAt < nowMs - rateBackdateToleranceMs) {
    throw invalid('invalid_effective_at', "'effectiveAt' must not be in the past: rates already used to price calls cannot change.", 'effectiveAt');
  }
  return db.transaction().execute(async (tx) => {
    const model = await tx.selectFrom('models').select(['id', 'alias_of']).where('id', '=', modelId).executeTakeFirst();
    if (!model) throw notFound('model', modelId);
    if (model.alias_of !== null) throw aliasHasRates('rates');
    if (priceBookId !== null) await lockPriceBookParam(tx, priceBookId);
    const versions = tx.selectFrom('model_rates').select((eb) => eb.fn.countAll<number | bigint | string>().as('n')).where('model_id', '=', modelId);
    const { n } = await (priceBookId === null ? versions.where('price_book_id', 'is', null) : versions.where('price_book_id', '=', priceBookId)).executeTakeFirstOrThrow();
    if (Number(n) >= maxRateVersionsPerModel) {
      throw invalid('too_many_rate_versions', `A model holds at most ${maxRateVersionsPerModel} rate versions per price book.`, 'rates');
    }
    return insertRate(tx, modelId, rates, effectiveAt, nowMs, priceBookId);
  });
}

/** Every rate version of the model in one price book (null: the default rates), by effective time ascending. */
export async function listRates(db: Kysely<Database>, modelId: string, priceBookId: string | null = null): Promise<RateVersion[]> {
  const model = await db.selectFrom('models').select('id').where('id', '=', modelId).executeTakeFirst();
  if (!model) throw notFound('model', modelId);
  if (priceBookId !== null) {
    const book = await db.selectFrom('price_books').select('id').where('id', '=', priceBookId).executeTakeFirst();
    if (!book) throw unknownPriceBook(priceBookId);
  }
  const versions = db.selectFrom('model_rates').selectAll().where('model_id', '=', modelId);
  const rows = await (priceBookId === null ? versions.where('price_book_id', 'is', null) : versions.where('price_book_id', '=', priceBookId)).execute();
  return rows.map(toRateVersion).sort(byEffectiveAt);
}

/** The models of these names (missing names are left out), for resolving aliases' targets. */
export async function getModelsByName(db: Kysely<Database>, names: string[]): Promise<Model[]> {
  if (names.length === 0) return [];
  const rows = await db.selectFrom('models').selectAll().where('name', 'in', names).execute();
  return withRoutesAndRates(db, rows);
}

async function withRoutesAndRates(db: Kysely<Database>, rows: Array<{ [K in keyof ModelsTable]: unknown }>): Promise<Model[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((r) => r.id as string);
  const routeRows = await db
    .selectFrom('model_routes')
    .innerJoin('providers', 'providers.id', 'model_routes.provider_id')
    .selectAll('model_routes')
    .select(['providers.name as provider_name', 'providers.status as provider_status'])
    .where('model_routes.model_id', 'in', ids)
    .execute();
  const rateRows = await db.selectFrom('model_rates').selectAll().where('model_id', 'in', ids).execute();
  const bookIds = [...new Set(rateRows.flatMap((r) => (r.price_book_id === null ? [] : [r.price_book_id])))];
  const books = bookIds.length === 0 ? [] : await db.selectFrom('price_books').select(['id', 'name']).where('id', 'in', bookIds).execute();
  return rows.map((m) => {
    const rates = rateRows.filter((r) => r.model_id === m.id).map(toRateVersion).sort(byEffectiveAt);
    const ownBooks = new Set(rates.map((r) => r.priceBookId));
    const routes: Route[] = routeRows
      .filter((r) => r.model_id === m.id)
      .map((r) => ({
        id: r.id,
        providerId: r.provider_id,
        provider: { id: r.provider_id, name: r.provider_name, status: r.provider_status as ProviderStatus },
        upstreamModel: r.upstream_model,
        priority: Number(r.priority),
        weight: Number(r.weight),
        region: r.region,
        cost: r.cost === null ? null : (JSON.parse(r.cost) as CostCard),
      }))
      .sort((a, b) => a.priority - b.priority || compare(a.id, b.id));
    return {
      id: m.id as string,
      name: m.name as string,
      workload: m.workload as Workload,
      description: m.description as string | null,
      maxOutputTokens: m.max_output_tokens === null ? null : Number(m.max_output_tokens),
      status: m.status as ModelStatus,
      aliasOf: m.alias_of === null ? null : (JSON.parse(m.alias_of as string) as string[]),
      routingStrategy: m.routing_strategy === 'cost' ? 'cost' : 'weighted',
      routes,
      rates,
      priceBooks: books.filter((b) => ownBooks.has(b.id)).sort((a, b) => compare(a.name, b.name)),
      createdAt: Number(m.created_at),
      updatedAt: Number(m.updated_at),
    };
  });
}

async function insertRoutes(tx: Kysely<Database>, modelId: string, routes: CheckedRoute[], nowMs: number): Promise<void> {
  if (routes.length === 0) return;
  // Ids are minted in order, so routes of equal priority keep the order they were given in.
  const values = routes.map((r) => ({
    id: newId('rte', nowMs),
    model_id: modelId,
    provider_id: r.providerId,
    upstream_model: r.upstreamModel,
    priority: r.priority,
    weight: r.weight,
    region: r.region,
    cost: r.cost === null ? null : JSON.stringify(r.cost),
    created_at: nowMs,
  }));
  await tx.insertInto('model_routes').values(values).execute();
}

async function insertRate(tx: Kysely<Database>, modelId: string, rates: RateCard, effectiveAt: number, nowMs: number, priceBookId: string | null = null): Promise<RateVersion> {
  const row = { id: newId('rate', nowMs), model_id: modelId, price_book_id: priceBookId, effective_at: effectiveAt, rates: JSON.stringify(rates), created_at: nowMs };
  await tx.insertInto('model_rates').values(row).execute();
  return toRateVersion(row);
}

async function assertNameFree(tx: Kysely<Database>, name: string, exceptId: string | null): Promise<void> {
  let q = tx.selectFrom('models').select('id').where('name', '=', name);
  if (exceptId) q = q.where('id', '!=', exceptId);
  if (await q.executeTakeFirst()) throw nameTaken(name);
}

async function assertProvidersExist(tx: Kysely<Database>, routes: CheckedRoute[]): Promise<void> {
  if (routes.length === 0) return;
  const wanted = [...new Set(routes.map((r) => r.providerId))];
  const found = new Set((await tx.selectFrom('providers').select('id').where('id', 'in', wanted).execute()).map((r) => r.id));
  const missing = routes.findIndex((r) => !found.has(r.providerId));
  if (missing >= 0) {
    throw invalid('unknown_provider', `No provider with id '${routes[missing].providerId}'.`, `routes.${missing}.providerId`);
  }
}

/**
 * Takes row locks on the named models (PostgreSQL; SQLite transactions are serial anyway) so an
 * alias check and a concurrent rename, delete or alias change of the same models run one after
 * the other, the later seeing the earlier's result.
 */
async function lockModels(tx: Kysely<Database>, names: string[]): Promise<void> {
  await tx
    .updateTable('models')
    .set((eb) => ({ updated_at: eb.ref('updated_at') }))
    .where('name', 'in', names)
    .execute();
}

async function lockModel(tx: Kysely<Database>, id: string): Promise<boolean> {
  const res = await tx
    .updateTable('models')
    .set((eb) => ({ updated_at: eb.ref('updated_at') }))
    .where('id', '=', id)
    .executeTakeFirst();
  return res.numUpdatedRows === 1n;
}

/** The aliases that stand for the model named `name`. Aliases are few, so they are read and filtered here. */
async function aliasesOf(tx: Kysely<Database>, name: string): Promise<Array<{ id: string; name: string; aliasOf: string[]; workload: string }>> {
  const rows = await tx.selectFrom('models').select(['id', 'name', 'alias_of', 'workload']).where('alias_of', 'is not', null).execute();
  return rows
    .map((r) => ({ id: r.id, name: r.name, aliasOf: JSON.parse(r.alias_of as string) as string[], workload: r.workload }))
    .filter((a) => a.aliasOf.includes(name))
    .sort((a, b) => compare(a.name, b.name));
}

/**
 * An alias stands only for existing plain models of its own workload: never for itself and never
 * for another alias, so no chain and no cycle can form.
 */
async function assertAliasTargets(tx: Kysely<Database>, selfName: string, workload: string, targets: string[]): Promise<void> {
  targets.forEach((t, i) => {
    if (t === selfName) throw invalid('alias_cycle', `'${selfName}' cannot be an alias of itself.`, `aliasOf.${i}`);
  });
  await lockModels(tx, targets);
  const rows = await tx.selectFrom('models').select(['name', 'alias_of', 'workload']).where('name', 'in', targets).execute();
  const byName = new Map(rows.map((r) => [r.name, r]));
  targets.forEach((t, i) => {
    const param = `aliasOf.${i}`;
    const target = byName.get(t);
    if (!target) throw invalid('unknown_model', `No model named '${t}'.`, param);
    if (target.alias_of !== null) {
      const its = JSON.parse(target.alias_of) as string[];
      if (its.includes(selfName)) throw invalid('alias_cycle', `'${t}' is an alias of '${selfName}': the two would stand for each other.`, param);
      throw invalid('alias_of_alias', `'${t}' is itself an alias; name the models it stands for (${its.join(', ')}).`, param);
    }
    if (target.workload !== workload) {
      throw invalid('alias_workload_mismatch', `'${t}' is a ${target.workload} model; an alias of ${workload} can only stand for ${workload} models.`, param);
    }
  });
}

type ModelRow = { [K in keyof ModelsTable]: unknown };

/** After a model row changed: the alias rules still hold, and aliases of a renamed model follow its new name. */
async function checkAliasChange(tx: Kysely<Database>, before: ModelRow, after: ModelRow): Promise<void> {
  const id = after.id as string;
  const name = after.name as string;
  const workload = after.workload as string;
  const aliasOf = after.alias_of === null ? null : (JSON.parse(after.alias_of as string) as string[]);
  if (aliasOf) {
    const changed = after.alias_of !== before.alias_of || name !== before.name || workload !== before.workload;
    if (changed) await assertAliasTargets(tx, name, workload, aliasOf);
    const route = await tx.selectFrom('model_routes').select('id').where('model_id', '=', id).executeTakeFirst();
    if (route) throw aliasHasRoutes();
    const rate = await tx.selectFrom('model_rates').select('id').where('model_id', '=', id).executeTakeFirst();
    if (rate) throw aliasHasRates('aliasOf');
  }
  const referrers = await aliasesOf(tx, before.name as string);
  if (referrers.length === 0) return;
  if (aliasOf) {
    throw invalid('model_is_alias_target', `The alias '${referrers[0].name}' stands for this model, so it cannot become an alias itself.`, 'aliasOf');
  }
  const mismatch = referrers.find((a) => a.workload !== workload);
  if (mismatch) throw invalid('alias_workload_mismatch', `The alias '${mismatch.name}' (${mismatch.workload}) stands for this model.`, 'workload');
  if (name !== before.name) {
    for (const a of referrers) {
      const renamed = a.aliasOf.map((n) => (n === before.name ? name : n));
      await tx.updateTable('models').set({ alias_of: JSON.stringify(renamed) }).where('id', '=', a.id).execute();
    }
  }
}

const unknownPriceBook = (id: string) => invalid('unknown_price_book', `No price book with id '${id}'.`, 'priceBookId');
const aliasHasRoutes = () => invalid('alias_has_routes', 'An alias has no routes of its own: it is served by the models it stands for.', 'routes');
const aliasHasRates = (param: string) =>
  invalid('alias_has_rates', 'An alias has no rates of its own: it is priced by the model that serves it.', param);

const nameTaken = (name: string) => new AppError('conflict_error', 'model_name_taken', `A model named '${name}' already exists.`, { param: 'name' });

function toRateVersion(row: { [K in keyof ModelRatesTable]: unknown }): RateVersion {
  return {
    id: row.id as string,
    modelId: row.model_id as string,
    priceBookId: row.price_book_id as string | null,
    effectiveAt: Number(row.effective_at),
    rates: JSON.parse(row.rates as string) as RateCard,
    createdAt: Number(row.created_at),
  };
}

function byEffectiveAt(a: RateEntry, b: RateEntry): number {
  return a.effectiveAt - b.effectiveAt || compare(a.id, b.id);
}

function checkModelName(name: unknown): string {
  if (typeof name !== 'string' || !modelNamePattern.test(name)) {
    throw invalid('invalid_name', "'name' must be 1 to 100 characters of letters, digits and . _ : / -.", 'name');
  }
  return name;
}

function checkAliasNames(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > maxAliasTargets) {
    throw invalid('invalid_alias_of', `'aliasOf' must be null or 1 to ${maxAliasTargets} model names, in the order they are tried.`, 'aliasOf');
  }
  value.forEach((name, i) => {
    if (typeof name !== 'string' || !modelNamePattern.test(name)) throw invalid('invalid_alias_of', `'aliasOf.${i}' is not a model name.`, `aliasOf.${i}`);
  });
  return [...new Set(value as string[])];
}

function checkMaxOutputTokens(value: unknown): number | null {
  if (value === null) return null;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > maxOutputTokensLimit) {
    throw invalid('invalid_parameter', `'maxOutputTokens' must be an integer from 1 to ${maxOutputTokensLimit}, or null.`, 'maxOutputTokens');
  }
  return value;
}

function checkRoutes(value: unknown): CheckedRoute[] {
  if (!Array.isArray(value) || value.length > maxRoutesPerModel) {
    throw invalid('invalid_routes', `'routes' must be an array of at most ${maxRoutesPerModel} routes.`, 'routes');
  }
  return value.map((route: unknown, i) => {
    const p = `routes.${i}`;
    if (typeof route !== 'object' || route === null || Array.isArray(route)) throw invalid('invalid_route', `'${p}' must be an object.`, p);
    const r = route as Record<string, unknown>;
    if (typeof r.providerId !== 'string' || r.providerId.length === 0) {
      throw invalid('invalid_parameter', `'${p}.providerId' must be a provider id.`, `${p}.providerId`);
    }
    if (typeof r.upstreamModel !== 'string' || !upstreamModelPattern.test(r.upstreamModel)) {
      throw invalid('invalid_parameter', `'${p}.upstreamModel' must be the upstream's model id: 1 to 200 printable characters without spaces.`, `${p}.upstreamModel`);
    }
    return {
      providerId: r.providerId,
      upstreamModel: r.upstreamModel,
      priority: checkInt(r.priority ?? 1, 1, maxPriority, `${p}.priority`),
      weight: checkInt(r.weight ?? 1, 1, maxWeight, `${p}.weight`),
      region: r.region == null ? null : checkRegion(r.region, `${p}.region`),
      cost: r.cost == null ? null : parseCostCard(r.cost, `${p}.cost`),
    };
  });
}

function checkInt(value: unknown, min: number, max: number, param: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid('invalid_parameter', `'${param}' must be an integer from ${min} to ${max}.`, param);
  }
  return value;
}

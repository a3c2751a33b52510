// Builds the in-memory Catalog (src/routing/types.ts) the request path reads, from one consistent
// snapshot of the store, and decides whether a model may be called at all. The admin use cases
// that change what it holds live beside it: providers.ts (providers, credentials) and models.ts
// (models, routes, versioned rates).
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import type { SecretBox } from '../lib/secrets.ts';
import type { ProviderType } from '../providers/types.ts';
import type { CostCard, RateCard } from '../pricing/price.ts';
import { isPricedFor } from '../pricing/price.ts';
import { rateAt, type Catalog, type ModelEntry, type ProviderEntry, type RateEntry, type Workload } from './types.ts';
import { compare, effectiveBaseUrl } from './providers.ts';

export type Callability = { callable: true; reason: null } | { callable: false; reason: string };

/** What a model must have to be callable; both ModelEntry and the admin API's Model fit. */
export interface CallabilityInput {
  status: string;
  workload: string;
  routes: ReadonlyArray<{ provider: { status: string } }>;
  rates: readonly RateEntry[];
}

const requiredUnits: Record<Workload, string> = {
  text: 'inputPer1M and outputPer1M',
  coding: 'inputPer1M and outputPer1M',
  embedding: 'inputPer1M or perRequest',
  image: 'perImage or perRequest',
  audio: 'perRequest, or inputPer1M and outputPer1M',
  video: 'perRequest, or inputPer1M and outputPer1M',
};

/** The rate version in effect at `atMs` in one price book (default: the model's own rates), or null before the first one. */
export function currentRate(rates: readonly RateEntry[], atMs: number, priceBookId: string | null = null): RateEntry | null {
  // rateAt reads nothing but the rates of the model it is given.
  return rateAt({ rates } as ModelEntry, atMs, priceBookId);
}

/**
 * Fail closed: a model is callable only when it is active, the rates in effect price its workload
 * (an unpriced model is never served for free), and at least one route goes to an active provider.
 */
export function callabilityOf(model: CallabilityInput, nowMs = Date.now()): Callability {
  if (model.status !== 'active') return { callable: false, reason: 'The model is inactive.' };
  const rate = currentRate(model.rates, nowMs);
  if (!rate) return { callable: false, reason: 'No rates are in effect for this model yet.' };
  if (!isPricedFor(rate.rates, model.workload)) {
    const units = requiredUnits[model.workload as Workload] ?? requiredUnits.text;
    return { callable: false, reason: `The rates in effect do not price a ${model.workload} model: set ${units}.` };
  }
  if (!model.routes.some((r) => r.provider.status === 'active')) return { callable: false, reason: 'No route goes to an active provider.' };
  return { callable: true, reason: null };
}

/** An alias is callable when it is active and any model it stands for is (`undefined`: a name that no longer exists). */
export function aliasCallability(alias: { status: string }, targets: ReadonlyArray<CallabilityInput | undefined>, nowMs = Date.now()): Callability {
  if (alias.status !== 'active') return { callable: false, reason: 'The model is inactive.' };
  if (targets.some((t) => t !== undefined && callabilityOf(t, nowMs).callable)) return { callable: true, reason: null };
  return { callable: false, reason: 'None of the models this alias stands for is callable.' };
}

/**
 * Reads every provider, active credential (decrypted), model, route and rate version in one
 * read-only transaction, so the catalog never mixes two states of the configuration. A credential
 * that will not decrypt (a rotated-away secret key) fails the load loudly rather than leaving a
 * provider silently keyless.
 */
export async function loadCatalog(db: Kysely<Database>, secrets: SecretBox): Promise<Catalog> {
  const rows = await db
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (tx) => ({
      providers: await tx.selectFrom('providers').selectAll().execute(),
      credentials: await tx.selectFrom('provider_credentials').selectAll().where('status', '=', 'active').execute(),
      models: await tx.selectFrom('models').selectAll().execute(),
      routes: await tx.selectFrom('model_routes').selectAll().execute(),
      rates: await tx.selectFrom('model_rates').selectAll().execute(),
    }));

  const providers = new Map<string, ProviderEntry>();
  for (const p of rows.providers) {
    const type = p.type as ProviderType;
    providers.set(p.id, {
      id: p.id,
      name: p.name,
      type,
      baseUrl: effectiveBaseUrl(type, p.base_url),
      apiVersion: p.api_version,
      regions: JSON.parse(p.regions) as string[],
      retention: p.retention as ProviderEntry['retention'],
      status: p.status as ProviderEntry['status'],
      resale: p.resale as ProviderEntry['resale'],
      timeoutMs: Number(p.timeout_ms),
      credentials: [],
    });
  }
  const credentials = [...rows.credentials].sort((a, b) => compare(a.id, b.id));
  for (const c of credentials) {
    const provider = mustGet(providers, c.provider_id, `credential ${c.id}`);
    let apiKey: string;
    try {
      apiKey = secrets.decrypt(c.secret_enc);
    } catch (err) {
      throw new Error(`cannot decrypt credential ${c.id} of provider ${c.provider_id}: ${(err as Error).message}`);
    }
    provider.credentials.push({ id: c.id, label: c.label, apiKey });
  }

  const models = new Map<string, ModelEntry>();
  const byId = new Map<string, ModelEntry>();
  for (const m of rows.models) {
    const entry: ModelEntry = {
      id: m.id,
      name: m.name,
      workload: m.workload as Workload,
      description: m.description,
      maxOutputTokens: m.max_output_tokens === null ? null : Number(m.max_output_tokens),
      status: m.status as ModelEntry['status'],
      aliasOf: m.alias_of ? (JSON.parse(m.alias_of) as string[]) : null,
      routingStrategy: m.routing_strategy === 'cost' ? 'cost' : 'weighted',
      routes: [],
      rates: [],
      createdAt: Number(m.created_at),
    };
    models.set(entry.name, entry);
    byId.set(entry.id, entry);
  }
  for (const r of rows.routes) {
    mustGet(byId, r.model_id, `route ${r.id}`).routes.push({
      id: r.id,
      provider: mustGet(providers, r.provider_id, `route ${r.id}`),
      upstreamModel: r.upstream_model,
      priority: Number(r.priority),
      weight: Number(r.weight),
      region: r.region,
      cost: r.cost === null ? null : (JSON.parse(r.cost) as CostCard),
    });
  }
  for (const rate of rows.rates) {
    mustGet(byId, rate.model_id, `rate ${rate.id}`).rates.push({
      id: rate.id,
      priceBookId: rate.price_book_id,
      effectiveAt: Number(rate.effective_at),
      rates: JSON.parse(rate.rates) as RateCard,
    });
  }
  for (const m of byId.values()) {
    // Ids are time-ordered, so they break ties in the order routes were given and rates were added.
    m.routes.sort((a, b) => a.priority - b.priority || compare(a.id, b.id));
    m.rates.sort((a, b) => a.effectiveAt - b.effectiveAt || compare(a.id, b.id));
  }
  return { models, providers };
}

function mustGet<T>(map: Map<string, T>, id: string, referrer: string): T {
  const found = map.get(id);
  // Foreign keys and one snapshot make this impossible; if it happens the store is corrupt.
  if (found === undefined) throw new Error(`catalog is inconsistent: ${referrer} refers to missing ${id}`);
  return found;
}

// Choosing where a call goes. An alias expands to its target models in order; each model's routes
// are filtered (provider inactive or not approved for resale, no credentials, the workspace's
// region and retention policy, open circuits, no price) and ordered: priority groups first (1
// before 2), inside a group by weighted random draw or, with the cost strategy, cheapest provider
// cost first. Every removed route is kept with its reason for the audit. Routing never moves money.
import { costNanos, isPricedFor, zeroUsage } from '../pricing/price.ts';
import type { DataPolicy } from '../workspaces/policy.ts';
import type { CircuitBreakers } from './health.ts';
import { rateAt, type Catalog, type CredentialEntry, type ModelEntry, type RateEntry, type RouteEntry } from './types.ts';

export interface Candidate {
  route: RouteEntry;
  credential: CredentialEntry | null; // null only for providers that need no key (sandbox)
  /** The model that serves (the alias's target, or the model asked for). */
  model: ModelEntry;
  rate: RateEntry;
  order: 'priority' | 'weighted' | 'cheapest_first';
}

export type SkipReason =
  | 'inactive'
  | 'resale_pending'
  | 'no_credentials'
  | 'region_not_allowed'
  | 'retention_not_zero'
  | 'circuit_open'
  | 'unpriced';

export interface Skipped {
  model: string;
  routeId: string;
  providerId: string;
  reason: SkipReason;
}

export interface RoutePlan {
  candidates: Candidate[];
  skipped: Skipped[];
  /** Routes existed but the workspace's policy removed every one of them. */
  blockedByPolicy: boolean;
}

export interface PlanContext {
  catalog: Catalog;
  policy: DataPolicy;
  priceBookId: string | null;
  breakers: CircuitBreakers;
  nowMs: number;
  random?: () => number;
}

const maxAliasTargets = 10;
/** Routes are compared on the cost of a reference call: 1,000 input and 1,000 output tokens. */
const referenceUsage = { ...zeroUsage, inputTokens: 1000, outputTokens: 1000 };

/** The key a credential's circuit is kept under (providers without keys share one per provider). */
export function circuitKey(route: RouteEntry, credential: CredentialEntry | null): string {
  return credential ? credential.id : `provider:${route.provider.id}`;
}

/** The rate a workspace pays for a model now: its price book's, else the model's default. */
export function rateFor(model: ModelEntry, priceBookId: string | null, nowMs: number): RateEntry | null {
  return (priceBookId ? rateAt(model, nowMs, priceBookId) : null) ?? rateAt(model, nowMs, null);
}

export function targetsOf(model: ModelEntry, catalog: Catalog): ModelEntry[] {
  if (!model.aliasOf) return [model];
  const out: ModelEntry[] = [];
  for (const name of model.aliasOf.slice(0, maxAliasTargets)) {
    const target = catalog.models.get(name);
    if (target && target.status === 'active' && !target.aliasOf) out.push(target);
  }
  return out;
}

export function planRoutes(asked: ModelEntry, ctx: PlanContext): RoutePlan {
  const random = ctx.random ?? Math.random;
  const skipped: Skipped[] = [];
  const candidates: Candidate[] = [];
  let policyRemoved = 0;
  let total = 0;
  for (const model of targetsOf(asked, ctx.catalog)) {
    const rate = rateFor(model, ctx.priceBookId, ctx.nowMs);
    const usable: Array<{ route: RouteEntry; credential: CredentialEntry | null }> = [];
    for (const route of model.routes) {
      total++;
      const skip = (reason: SkipReason) => skipped.push({ model: model.name, routeId: route.id, providerId: route.provider.id, reason });
      const p = route.provider;
      if (!rate || !isPricedFor(rate.rates, model.workload)) skip('unpriced');
      else if (p.status !== 'active') skip('inactive');
      else if (p.resale !== 'approved') skip('resale_pending');
      else if (p.type !== 'sandbox' && p.credentials.length === 0) skip('no_credentials');
      else if (!regionAllowed(route, ctx.policy)) {
        skip('region_not_allowed');
        policyRemoved++;
      } else if (ctx.policy.zeroRetention && p.retention !== 'zero') {
        skip('retention_not_zero');
        policyRemoved++;
      } else {
        const credential = pickCredential(route, ctx.breakers, random);
        if (credential === undefined) skip('circuit_open');
        else usable.push({ route, credential });
      }
    }
    const priorities = [...new Set(usable.map((u) => u.route.priority))].sort((a, b) => a - b);
    for (const priority of priorities) {
      const group = usable.filter((u) => u.route.priority === priority);
      const order: Candidate['order'] = group.length === 1 ? 'priority' : model.routingStrategy === 'cost' ? 'cheapest_first' : 'weighted';
      const ordered = order === 'cheapest_first' ? byCost(group) : weightedOrder(group.map((g) => ({ ...g, weight: g.route.weight })), random);
      for (const u of ordered) candidates.push({ route: u.route, credential: u.credential, model, rate: rate!, order });
    }
  }
  // A compliant route that is only unhealthy (circuit open) makes the call unavailable, not forbidden.
  const compliantButDown = skipped.some((s) => s.reason === 'circuit_open');
  return { candidates, skipped, blockedByPolicy: candidates.length === 0 && policyRemoved > 0 && total > 0 && !compliantButDown };
}

function regionAllowed(route: RouteEntry, policy: DataPolicy): boolean {
  if (!policy.allowedRegions) return true;
  const regions = route.region ? [route.region] : route.provider.regions;
  return regions.some((r) => policy.allowedRegions!.includes(r));
}

function byCost<T extends { route: RouteEntry }>(group: T[]): T[] {
  const costOf = (r: RouteEntry) => (r.cost ? costNanos(r.cost, referenceUsage) : null);
  return [...group].sort((a, b) => {
    const ca = costOf(a.route);
    const cb = costOf(b.route);
    if (ca === null || cb === null) return ca === null ? (cb === null ? 0 : 1) : -1;
    return ca < cb ? -1 : ca > cb ? 1 : 0;
  });
}

/** A weighted random permutation: each next item is drawn with probability weight / remaining weight. */
export function weightedOrder<T extends { weight: number }>(items: T[], random: () => number): T[] {
  const pool = [...items];
  const out: T[] = [];
  while (pool.length > 0) {
    const total = pool.reduce((s, r) => s + Math.max(r.weight, 0), 0);
    let pick = 0;
    if (total > 0) {
      let x = random() * total;
      for (pick = 0; pick < pool.length - 1; pick++) {
        x -= Math.max(pool[pick].weight, 0);
        if (x < 0) break;
      }
    }
    out.push(pool.splice(pick, 1)[0]);
  }
  return out;
}

/**
 * A credential whose circuit admits the call, drawn at random among the healthy ones so load is
 * spread across a provider's keys; null for keyless providers; undefined when every circuit is open.
 * Planning only looks (available): the attempt that actually calls a half-open route takes its probe.
 */
function pickCredential(route: RouteEntry, breakers: CircuitBreakers, random: () => number): CredentialEntry | null | undefined {
  const creds = route.provider.credentials;
  if (creds.length === 0) return breakers.available(circuitKey(route, null)) ? null : undefined;
  const start = Math.floor(random() * creds.length);
  for (let i = 0; i < creds.length; i++) {
    const c = creds[(start + i) % creds.length];
    if (breakers.available(circuitKey(route, c))) return c;
  }
  return undefined;
}

// Route planning, pure: filters and their skip reasons, priority groups, weighted order (checked
// statistically on a seeded PRNG), cheapest-first order, alias expansion and the rate each target
// is priced at, and how open and half-open circuits enter a plan.
import { describe, expect, it } from 'vitest';
import { CircuitBreakers } from './health.ts';
import { circuitKey, planRoutes, rateFor, targetsOf, weightedOrder, type PlanContext, type RoutePlan } from './choose.ts';
import type { Catalog, CredentialEntry, ModelEntry, ProviderEntry, RateEntry, RouteEntry } from './types.ts';
import type { CostCard } from '../pricing/price.ts';
import { defaultDataPolicy, type DataPolicy } from '../workspaces/policy.ts';

/** mulberry32: a small seeded PRNG, uniform on [0, 1). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const now = Date.UTC(2025, 5, 1);
let serial = 0;

function provider(over: Partial<ProviderEntry> = {}): ProviderEntry {
  const id = over.id ?? `prov_${++serial}`;
  return {
    id,
    name: id,
    type: 'openai',
    baseUrl: 'http://127.0.0.1:1/v1',
    apiVersion: null,
    regions: ['global'],
    retention: 'standard',
    status: 'active',
    resale: 'approved',
    timeoutMs: 60_000,
    credentials: over.type === 'sandbox' ? [] : [cred()],
    ...over,
  };
}

function cred(): CredentialEntry {
  const id = `cred_${++serial}`;
  return { id, label: id, apiKey: `sk-${id}` };
}

function route(p: ProviderEntry, over: Partial<Omit<RouteEntry, 'provider'>> = {}): RouteEntry {
  return { id: `route_${++serial}`, provider: p, upstreamModel: 'up-model', priority: 1, weight: 1, region: null, cost: null, ...over };
}

const defaultRates = { inputPer1M: '1', outputPer1M: '2' };

function rate(rates: RateEntry['rates'] = defaultRates, over: Partial<RateEntry> = {}): RateEntry {
  return { id: `rate_${++serial}`, priceBookId: null, effectiveAt: now - 60_000, rates, ...over };
}

function model(name: string, routes: RouteEntry[], over: Partial<ModelEntry> = {}): ModelEntry {
  return {
    id: `model_${++serial}`,
    name,
    workload: 'text',
    description: null,
    maxOutputTokens: null,
    status: 'active',
    aliasOf: null,
    routingStrategy: 'weighted',
    routes: [...routes].sort((a, b) => a.priority - b.priority),
    rates: [rate()],
    createdAt: now,
    ...over,
  };
}

function catalogOf(...models: ModelEntry[]): Catalog {
  const providers = new Map<string, ProviderEntry>();
  for (const m of models) for (const r of m.routes) providers.set(r.provider.id, r.provider);
  return { models: new Map(models.map((m) => [m.name, m])), providers };
}

function ctx(catalog: Catalog, over: Partial<PlanContext> = {}): PlanContext {
  return { catalog, policy: defaultDataPolicy, priceBookId: null, breakers: new CircuitBreakers(), nowMs: now, random: seeded(1), ...over };
}

const routeIds = (plan: RoutePlan) => plan.candidates.map((c) => c.route.id);
const skips = (plan: RoutePlan) => plan.skipped.map((s) => [s.routeId, s.reason]);

/** Opens the circuit of `key` on `breakers` (default options: 5 consecutive failures). */
function openCircuit(breakers: CircuitBreakers, key: string, providerId: string) {
  for (let i = 0; i < 5; i++) breakers.onFailure(key, providerId, 'HTTP 500');
  expect(breakers.allow(key)).toBe(false);
}

/**
 * Tolerance for a frequency over n independent draws: 5 standard deviations of a binomial
 * proportion, 5·sqrt(p(1−p)/n). For n = 20,000 that is at most 0.0177 (at p = 0.5); a correct
 * implementation lands outside it with probability below 6·10⁻⁷ per check.
 */
const tolerance = (p: number, n: number) => 5 * Math.sqrt((p * (1 - p)) / n);

describe('weightedOrder', () => {
  const draws = 20_000;

  it('draws the first item with probability weight / total weight (20,000 seeded draws, within 5σ)', () => {
    const items = [
      { id: 'a', weight: 5 },
      { id: 'b', weight: 3 },
      { id: 'c', weight: 2 },
    ];
    const total = 10;
    const random = seeded(20240601);
    const first = new Map<string, number>();
    const second = new Map<string, number>();
    for (let i = 0; i < draws; i++) {
      const order = weightedOrder(items, random);
      expect(order.map((o) => o.id).sort()).toEqual(['a', 'b', 'c']); // always a permutation
      first.set(order[0].id, (first.get(order[0].id) ?? 0) + 1);
      second.set(order[1].id, (second.get(order[1].id) ?? 0) + 1);
    }
    for (const item of items) {
      const p = item.weight / total;
      expect(Math.abs((first.get(item.id) ?? 0) / draws - p)).toBeLessThanOrEqual(tolerance(p, draws));
      // Second place: the first pick i is removed, then weight / remaining weight:
      // P(j second) = Σ_{i≠j} (w_i / W) · (w_j / (W − w_i)). For a=5,b=3,c=2: 0.3393, 0.375, 0.2857.
      const p2 = items.filter((i) => i !== item).reduce((sum, i) => sum + (i.weight / total) * (item.weight / (total - i.weight)), 0);
      expect(Math.abs((second.get(item.id) ?? 0) / draws - p2)).toBeLessThanOrEqual(tolerance(p2, draws));
    }
  });

  it('never puts a zero-weight item before a weighted one, and keeps the given order when all weigh nothing', () => {
    const random = seeded(7);
    for (let i = 0; i < 1000; i++) {
      expect(weightedOrder([{ id: 'zero', weight: 0 }, { id: 'one', weight: 1 }, { id: 'neg', weight: -4 }], random)[0].id).toBe('one');
    }
    expect(weightedOrder([{ id: 'x', weight: 0 }, { id: 'y', weight: 0 }], random).map((i) => i.id)).toEqual(['x', 'y']);
    expect(weightedOrder([], random)).toEqual([]);
  });
});

describe('planRoutes: order', () => {
  it('splits equal-priority routes by weight (3:1 over 20,000 seeded plans, within 5σ)', () => {
    const heavy = route(provider(), { weight: 3 });
    const light = route(provider(), { weight: 1 });
    const m = model('m', [heavy, light]);
    const c = ctx(catalogOf(m), { random: seeded(99) });
    const draws = 20_000;
    let heavyFirst = 0;
    for (let i = 0; i < draws; i++) {
      const plan = planRoutes(m, c);
      expect(plan.candidates).toHaveLength(2);
      expect(plan.candidates.every((k) => k.order === 'weighted')).toBe(true);
      if (plan.candidates[0].route.id === heavy.id) heavyFirst++;
    }
    expect(Math.abs(heavyFirst / draws - 0.75)).toBeLessThanOrEqual(tolerance(0.75, draws));
  });

  it('tries every route of priority 1 before any of priority 2, whatever the weights', () => {
    const p1a = route(provider(), { priority: 1, weight: 1 });
    const p1b = route(provider(), { priority: 1, weight: 1 });
    const p2a = route(provider(), { priority: 2, weight: 1000 });
    const p2b = route(provider(), { priority: 2, weight: 1000 });
    const p3 = route(provider(), { priority: 3, weight: 1 });
    const m = model('m', [p3, p2a, p1a, p2b, p1b]);
    const c = ctx(catalogOf(m), { random: seeded(3) });
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const plan = planRoutes(m, c);
      const ids = routeIds(plan);
      expect(new Set(ids.slice(0, 2))).toEqual(new Set([p1a.id, p1b.id]));
      expect(new Set(ids.slice(2, 4))).toEqual(new Set([p2a.id, p2b.id]));
      expect(ids[4]).toBe(p3.id);
      expect(plan.candidates.map((k) => k.order)).toEqual(['weighted', 'weighted', 'weighted', 'weighted', 'priority']);
      seen.add(ids.join());
    }
    // Inside each group both orders occur.
    expect(seen.size).toBe(4);
  });

  it('orders by provider cost of a reference call (1k in + 1k out) with the cost strategy, unknown costs last', () => {
    const usd = (input: string, output: string): CostCard => ({ currency: 'USD', inputPer1M: input, outputPer1M: output });
    const pricey = route(provider(), { cost: usd('3', '15'), weight: 100 }); // 18 per 1M+1M
    const cheap = route(provider(), { cost: usd('0.5', '1.5') }); // 2
    const unknown = route(provider(), { cost: null, weight: 100 });
    const inputHeavy = route(provider(), { cost: usd('10', '0') }); // 10
    const outputHeavy = route(provider(), { cost: usd('0', '9') }); // 9: cheaper on the mixed reference call
    const backup = route(provider(), { priority: 2, cost: usd('0.01', '0.01') }); // cheapest of all, but priority 2
    const m = model('m', [pricey, cheap, unknown, inputHeavy, outputHeavy, backup], { routingStrategy: 'cost' });
    for (const seed of [1, 2, 3, 4, 5]) {
      const plan = planRoutes(m, ctx(catalogOf(m), { random: seeded(seed) }));
      expect(routeIds(plan)).toEqual([cheap.id, outputHeavy.id, inputHeavy.id, pricey.id, unknown.id, backup.id]);
      expect(plan.candidates.map((k) => k.order)).toEqual([...Array(5).fill('cheapest_first'), 'priority']);
    }
  });

  it('keeps the route order with the cost strategy when no route has a cost', () => {
    const routes = [route(provider()), route(provider()), route(provider())];
    const m = model('m', routes, { routingStrategy: 'cost' });
    for (const seed of [1, 2, 3]) {
      expect(routeIds(planRoutes(m, ctx(catalogOf(m), { random: seeded(seed) })))).toEqual(routes.map((r) => r.id));
    }
  });

  it("labels a lone route of its priority 'priority'", () => {
    const only = route(provider());
    const m = model('m', [only], { routingStrategy: 'cost' });
    expect(planRoutes(m, ctx(catalogOf(m))).candidates).toMatchObject([{ route: { id: only.id }, order: 'priority', model: { name: 'm' } }]);
  });
});

describe('planRoutes: filters', () => {
  it('skips each unusable route with its reason and keeps the usable ones', () => {
    const eu = { regions: ['eu'], retention: 'zero' as const };
    const inactive = route(provider({ ...eu, status: 'inactive' }));
    const pending = route(provider({ ...eu, resale: 'pending' }));
    const keyless = route(provider({ ...eu, credentials: [] }));
    const wrongRegion = route(provider({ regions: ['us'], retention: 'zero' }));
    const retains = route(provider({ regions: ['eu'], retention: 'standard' }));
    const tripped = route(provider(eu));
    const sandbox = route(provider({ ...eu, type: 'sandbox' }));
    const good = route(provider(eu));
    const m = model('m', [inactive, pending, keyless, wrongRegion, retains, tripped, sandbox, good]);
    const breakers = new CircuitBreakers();
    openCircuit(breakers, circuitKey(tripped, tripped.provider.credentials[0]), tripped.provider.id);
    const policy: DataPolicy = { allowedRegions: ['eu'], zeroRetention: true };
    const plan = planRoutes(m, ctx(catalogOf(m), { policy, breakers }));

    expect(skips(plan)).toEqual([
      [inactive.id, 'inactive'],
      [pending.id, 'resale_pending'],
      [keyless.id, 'no_credentials'],
      [wrongRegion.id, 'region_not_allowed'],
      [retains.id, 'retention_not_zero'],
      [tripped.id, 'circuit_open'],
    ]);
    expect(plan.skipped.every((s) => s.model === 'm')).toBe(true);
    expect(plan.skipped.find((s) => s.routeId === inactive.id)?.providerId).toBe(inactive.provider.id);
    expect(new Set(routeIds(plan))).toEqual(new Set([sandbox.id, good.id]));
    // A keyless sandbox needs no credential; an HTTP provider is called with its own.
    expect(plan.candidates.find((c) => c.route.id === sandbox.id)?.credential).toBeNull();
    expect(plan.candidates.find((c) => c.route.id === good.id)?.credential).toBe(good.provider.credentials[0]);
    expect(plan.blockedByPolicy).toBe(false);
  });

  it('skips every route of a model without a rate for its workload as unpriced, before any other check', () => {
    const inactive = route(provider({ status: 'inactive' }));
    const fine = route(provider());
    for (const rates of [[], [rate({ inputPer1M: '1' })], [rate(defaultRates, { effectiveAt: now + 1 })]]) {
      const m = model('m', [inactive, fine], { rates });
      const plan = planRoutes(m, ctx(catalogOf(m)));
      expect(plan.candidates).toEqual([]);
      expect(skips(plan)).toEqual([
        [inactive.id, 'unpriced'],
        [fine.id, 'unpriced'],
      ]);
      expect(plan.blockedByPolicy).toBe(false);
    }
    // An embedding model needs only an input rate.
    const embed = model('e', [fine], { workload: 'embedding', rates: [rate({ inputPer1M: '1' })] });
    expect(routeIds(planRoutes(embed, ctx(catalogOf(embed))))).toEqual([fine.id]);
  });

  it("checks a route's own region when it has one, else its provider's regions", () => {
    const p = provider({ regions: ['us', 'eu'] });
    const pinnedUs = route(p, { region: 'us' });
    const pinnedEu = route(p, { region: 'eu' });
    const anyOfProvider = route(p);
    const m = model('m', [pinnedUs, pinnedEu, anyOfProvider]);
    const plan = planRoutes(m, ctx(catalogOf(m), { policy: { allowedRegions: ['eu'], zeroRetention: false } }));
    expect(skips(plan)).toEqual([[pinnedUs.id, 'region_not_allowed']]);
    expect(new Set(routeIds(plan))).toEqual(new Set([pinnedEu.id, anyOfProvider.id]));
    // No region policy: every region goes.
    expect(planRoutes(m, ctx(catalogOf(m))).candidates).toHaveLength(3);
    // Zero retention alone says nothing about regions.
    expect(planRoutes(m, ctx(catalogOf(m), { policy: { allowedRegions: null, zeroRetention: true } })).skipped.map((s) => s.reason)).toEqual([
      'retention_not_zero',
      'retention_not_zero',
      'retention_not_zero',
    ]);
  });

  it('is blocked by policy only when the policy removed the routes that could otherwise serve', () => {
    const us = provider({ regions: ['us'] });
    const eu = provider({ regions: ['eu'] });
    const euOff = provider({ regions: ['eu'], status: 'inactive' });
    const euOnly: DataPolicy = { allowedRegions: ['eu'], zeroRetention: false };

    const onlyUs = model('m1', [route(us)]);
    expect(planRoutes(onlyUs, ctx(catalogOf(onlyUs), { policy: euOnly })).blockedByPolicy).toBe(true);
    const zero = planRoutes(onlyUs, ctx(catalogOf(onlyUs), { policy: { allowedRegions: null, zeroRetention: true } }));
    expect(zero.blockedByPolicy).toBe(true);

    // The only compliant provider is switched off: still nothing compliant can serve.
    const usAndInactiveEu = model('m2', [route(us), route(euOff)]);
    expect(planRoutes(usAndInactiveEu, ctx(catalogOf(usAndInactiveEu), { policy: euOnly })).blockedByPolicy).toBe(true);

    // Nothing removed by policy: not a policy block.
    const inactiveOnly = model('m3', [route(euOff)]);
    const plan3 = planRoutes(inactiveOnly, ctx(catalogOf(inactiveOnly), { policy: euOnly }));
    expect(plan3).toMatchObject({ candidates: [], blockedByPolicy: false });

    // A compliant route exists but its circuit is open: the call is unavailable, not forbidden.
    const euRoute = route(eu);
    const usAndTrippedEu = model('m4', [route(us), euRoute]);
    const breakers = new CircuitBreakers();
    openCircuit(breakers, circuitKey(euRoute, eu.credentials[0]), eu.id);
    const plan4 = planRoutes(usAndTrippedEu, ctx(catalogOf(usAndTrippedEu), { policy: euOnly, breakers }));
    expect(plan4.candidates).toEqual([]);
    expect(plan4.skipped.map((s) => s.reason).sort()).toEqual(['circuit_open', 'region_not_allowed']);
    expect(plan4.blockedByPolicy).toBe(false);
  });
});

describe('planRoutes: circuits', () => {
  it('uses a healthy credential of a provider when another of its credentials is open', () => {
    const p = provider({ credentials: [cred(), cred(), cred()] });
    const r = route(p);
    const m = model('m', [r]);
    const breakers = new CircuitBreakers();
    openCircuit(breakers, p.credentials[0].id, p.id);
    openCircuit(breakers, p.credentials[2].id, p.id);
    const c = ctx(catalogOf(m), { breakers, random: seeded(11) });
    for (let i = 0; i < 200; i++) expect(planRoutes(m, c).candidates[0].credential?.id).toBe(p.credentials[1].id);
    openCircuit(breakers, p.credentials[1].id, p.id);
    expect(skips(planRoutes(m, c))).toEqual([[r.id, 'circuit_open']]);
  });

  it('spreads calls over the healthy credentials of a provider', () => {
    const p = provider({ credentials: [cred(), cred()] });
    const m = model('m', [route(p)]);
    const c = ctx(catalogOf(m), { random: seeded(5) });
    const used = new Map<string, number>();
    const draws = 20_000;
    for (let i = 0; i < draws; i++) {
      const id = planRoutes(m, c).candidates[0].credential!.id;
      used.set(id, (used.get(id) ?? 0) + 1);
    }
    for (const k of p.credentials) expect(Math.abs((used.get(k.id) ?? 0) / draws - 0.5)).toBeLessThanOrEqual(tolerance(0.5, draws));
  });

  it("keeps a keyless provider's circuit under the provider", () => {
    const p = provider({ type: 'sandbox' });
    const r = route(p);
    const m = model('m', [r]);
    expect(circuitKey(r, null)).toBe(`provider:${p.id}`);
    const breakers = new CircuitBreakers();
    openCircuit(breakers, `provider:${p.id}`, p.id);
    expect(skips(planRoutes(m, ctx(catalogOf(m), { breakers })))).toEqual([[r.id, 'circuit_open']]);
  });

  it('plans a half-open route without taking its one probe: the attempt takes it', () => {
    let clock = now;
    const breakers = new CircuitBreakers({ cooldownMs: 1000 }, () => clock);
    const primary = route(provider(), { priority: 1 });
    const recovering = route(provider(), { priority: 2 });
    const m = model('m', [primary, recovering]);
    const key = circuitKey(recovering, recovering.provider.credentials[0]);
    openCircuit(breakers, key, recovering.provider.id);
    const c = ctx(catalogOf(m), { breakers });
    expect(skips(planRoutes(m, c))).toEqual([[recovering.id, 'circuit_open']]);

    clock += 1000;
    // Plans that keep it as a fallback but never reach it (the primary answers) leave the probe alone...
    for (let i = 0; i < 3; i++) expect(routeIds(planRoutes(m, c))).toEqual([primary.id, recovering.id]);
    // ...so the call that does fall back to it gets to probe it.
    expect(breakers.allow(key)).toBe(true);
    // While that probe is out, other calls plan without it.
    expect(skips(planRoutes(m, c))).toEqual([[recovering.id, 'circuit_open']]);
    breakers.onSuccess(key, recovering.provider.id);
    expect(routeIds(planRoutes(m, c))).toEqual([primary.id, recovering.id]);
  });
});

describe('aliases', () => {
  const book = 'pb_partners';

  function aliasSetup() {
    const pa = route(provider());
    const pb = route(provider());
    const a = model('model-a', [pa], { rates: [rate({ inputPer1M: '1', outputPer1M: '2' }), rate({ inputPer1M: '0.5', outputPer1M: '1' }, { priceBookId: book })] });
    const b = model('model-b', [pb], { rates: [rate({ inputPer1M: '10', outputPer1M: '20' })] });
    const smart = model('smart', [], { aliasOf: ['model-a', 'model-b'], rates: [] });
    return { pa, pb, a, b, smart, catalog: catalogOf(a, b, smart) };
  }

  it('expands to its targets in order, each candidate served and priced by its own model', () => {
    const { pa, pb, a, b, smart, catalog } = aliasSetup();
    for (const seed of [1, 2, 3]) {
      const plan = planRoutes(smart, ctx(catalog, { random: seeded(seed) }));
      expect(routeIds(plan)).toEqual([pa.id, pb.id]);
      expect(plan.candidates.map((c) => [c.model.name, c.rate.id])).toEqual([
        ['model-a', a.rates[0].id],
        ['model-b', b.rates[0].id],
      ]);
    }
    // Reversed alias, reversed order.
    const reversed = model('smart-rev', [], { aliasOf: ['model-b', 'model-a'], rates: [] });
    expect(routeIds(planRoutes(reversed, ctx(catalogOf(a, b, reversed))))).toEqual([pb.id, pa.id]);
  });

  it("prices each target at the workspace's price book where that target has one, else at its default rate", () => {
    const { a, b, smart, catalog } = aliasSetup();
    const plan = planRoutes(smart, ctx(catalog, { priceBookId: book }));
    expect(plan.candidates.map((c) => [c.model.name, c.rate.id])).toEqual([
      ['model-a', a.rates[1].id],
      ['model-b', b.rates[0].id],
    ]);
    expect(rateFor(a, book, now)?.rates).toEqual({ inputPer1M: '0.5', outputPer1M: '1' });
    expect(rateFor(a, null, now)?.rates).toEqual({ inputPer1M: '1', outputPer1M: '2' });
    expect(rateFor(b, book, now)?.id).toBe(b.rates[0].id);
    expect(rateFor(a, 'pb_other', now)?.id).toBe(a.rates[0].id);
  });

  it('uses the rate version in effect: the latest effective one, never a scheduled one', () => {
    const v1 = rate({ inputPer1M: '1', outputPer1M: '1' }, { effectiveAt: now - 2000 });
    const v2 = rate({ inputPer1M: '2', outputPer1M: '2' }, { effectiveAt: now - 1000 });
    const v3 = rate({ inputPer1M: '3', outputPer1M: '3' }, { effectiveAt: now + 1000 });
    const bookV1 = rate({ inputPer1M: '0.1', outputPer1M: '0.1' }, { effectiveAt: now + 500, priceBookId: book });
    const m = model('m', [route(provider())], { rates: [v1, v2, bookV1, v3] });
    expect(rateFor(m, null, now)?.id).toBe(v2.id);
    expect(rateFor(m, null, now + 1000)?.id).toBe(v3.id);
    expect(rateFor(m, null, now - 3000)).toBeNull();
    // The book's first version is not in effect yet: the default rate applies until it is.
    expect(rateFor(m, book, now)?.id).toBe(v2.id);
    expect(rateFor(m, book, now + 500)?.id).toBe(bookV1.id);
    expect(planRoutes(m, ctx(catalogOf(m), { priceBookId: book })).candidates[0].rate.id).toBe(v2.id);
  });

  it('leaves out targets that are missing, inactive or aliases themselves', () => {
    const { a, b, catalog } = aliasSetup();
    const off = model('model-off', [route(provider())], { status: 'inactive' });
    const other = model('other-alias', [], { aliasOf: ['model-a'], rates: [] });
    const alias = model('mixed', [], { aliasOf: ['gone', 'model-off', 'other-alias', 'model-b', 'model-a'], rates: [] });
    const all = catalogOf(...catalog.models.values(), off, other, alias);
    expect(targetsOf(alias, all).map((t) => t.name)).toEqual(['model-b', 'model-a']);
    expect(targetsOf(a, all)).toEqual([a]);
    expect(planRoutes(alias, ctx(all)).candidates.map((c) => c.model.name)).toEqual(['model-b', 'model-a']);
    void b;
  });

  it("reports a target's unusable routes under the target's name and goes on to the next target", () => {
    const { pb, b, smart } = aliasSetup();
    const down = route(provider({ status: 'inactive' }));
    const a = model('model-a', [down]);
    const plan = planRoutes(smart, ctx(catalogOf(a, b, smart)));
    expect(plan.skipped).toEqual([{ model: 'model-a', routeId: down.id, providerId: down.provider.id, reason: 'inactive' }]);
    expect(routeIds(plan)).toEqual([pb.id]);
    expect(plan.candidates[0].model.name).toBe('model-b');
  });

  it('is blocked by policy when every target is', () => {
    const usA = route(provider({ regions: ['us'] }));
    const usB = route(provider({ regions: ['us'] }));
    const a = model('model-a', [usA]);
    const b = model('model-b', [usB]);
    const smart = model('smart', [], { aliasOf: ['model-a', 'model-b'], rates: [] });
    const plan = planRoutes(smart, ctx(catalogOf(a, b, smart), { policy: { allowedRegions: ['eu'], zeroRetention: false } }));
    expect(plan).toMatchObject({ candidates: [], blockedByPolicy: true });
    expect(plan.skipped.map((s) => [s.model, s.reason])).toEqual([
      ['model-a', 'region_not_allowed'],
      ['model-b', 'region_not_allowed'],
    ]);
  });
});

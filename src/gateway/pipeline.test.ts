// The fallback loop against half-open circuits, without a database: plans only look at circuits,
// the attempt that actually calls a half-open route takes its one probe, and a call that finds the
// probe taken passes the route by (recorded as skipped) instead of piling onto a recovering upstream.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { CircuitBreakers } from '../routing/health.ts';
import { circuitKey } from '../routing/choose.ts';
import type { ApiKeyEntry, Catalog, ModelEntry, ProviderEntry, RouteEntry } from '../routing/types.ts';
import { defaultDataPolicy, defaultLoggingPolicy, noLimits, type WorkspaceEntry } from '../workspaces/policy.ts';
import type { ChatRequest } from '../providers/types.ts';
import { callUpstream, reportSuccess, resolveCall, type GatewayDeps } from './pipeline.ts';

const now = Date.now();

function sandbox(id: string): ProviderEntry {
  return { id, name: id, type: 'sandbox', baseUrl: null, apiVersion: null, regions: ['global'], retention: 'zero', status: 'active', resale: 'approved', timeoutMs: 60_000, credentials: [] };
}

function setup(routes: Array<{ provider: ProviderEntry; priority: number }>) {
  let clock = now;
  const breakers = new CircuitBreakers({ cooldownMs: 1000 }, () => clock);
  const routeEntries: RouteEntry[] = routes.map((r, i) => ({ id: `route_${i}`, provider: r.provider, upstreamModel: 'sandbox-1', priority: r.priority, weight: 1, region: null, cost: null }));
  const model: ModelEntry = {
    id: 'model_1',
    name: 'm',
    workload: 'text',
    description: null,
    maxOutputTokens: null,
    status: 'active',
    aliasOf: null,
    routingStrategy: 'weighted',
    routes: routeEntries,
    rates: [{ id: 'rate_1', priceBookId: null, effectiveAt: 0, rates: { inputPer1M: '1', outputPer1M: '1' } }],
    createdAt: 0,
  };
  const catalog: Catalog = { models: new Map([['m', model]]), providers: new Map(routes.map((r) => [r.provider.id, r.provider])) };
  const workspace: WorkspaceEntry = { id: 'ws_1', status: 'active', priceBookId: null, policy: defaultDataPolicy, logging: defaultLoggingPolicy, keyDefaults: noLimits };
  const key: ApiKeyEntry = { id: 'key_1', workspaceId: 'ws_1', name: 'k', scopes: ['chat.completions'], models: null, status: 'active', expiresAt: null, metadata: {}, limits: noLimits };
  const deps = {
    breakers,
    catalog: { get: async () => catalog },
    workspaces: { get: async () => workspace },
    log: pino({ level: 'silent' }),
  } as unknown as GatewayDeps;
  let serial = 0;
  const body: ChatRequest = { model: 'm', messages: [{ role: 'user', content: 'hello' }] };
  return {
    deps,
    breakers,
    routes: routeEntries,
    advance: (ms: number) => (clock += ms),
    plan: () => resolveCall(deps, key, 'm', ['text'], 'chat.completions', false, `req_${++serial}`),
    attempt: (call: Awaited<ReturnType<typeof resolveCall>>) =>
      callUpstream(deps, call, new AbortController().signal, (adapter, target) => adapter.chat.buildRequest(body, target, false)),
  };
}

function trip(breakers: CircuitBreakers, route: RouteEntry) {
  for (let i = 0; i < 5; i++) breakers.onFailure(circuitKey(route, null), route.provider.id, 'HTTP 500');
}

describe('callUpstream and half-open circuits', () => {
  it('lets one call probe a recovering route; a concurrent call planned with it passes it by to the next route', async () => {
    const t = setup([
      { provider: sandbox('prov_recovering'), priority: 1 },
      { provider: sandbox('prov_backup'), priority: 2 },
    ]);
    const [recovering, backup] = t.routes;
    trip(t.breakers, recovering);
    expect((await t.plan()).plan.candidates.map((c) => c.route.id)).toEqual([backup.id]);
    t.advance(1000);

    // Two calls arrive together: both plans keep the half-open route (planning takes no probe).
    const first = await t.plan();
    const second = await t.plan();
    for (const call of [first, second]) expect(call.plan.candidates.map((c) => c.route.id)).toEqual([recovering.id, backup.id]);

    const probe = await t.attempt(first);
    expect(probe.ok && probe.candidate.route.id).toBe(recovering.id);
    const other = await t.attempt(second);
    expect(other.ok && other.candidate.route.id).toBe(backup.id);
    expect(second.attempts.map((a) => a.routeId)).toEqual([backup.id]);
    expect(second.plan.skipped).toEqual([{ model: 'm', routeId: recovering.id, providerId: 'prov_recovering', reason: 'circuit_open' }]);

    // The probe's success closes the circuit: the route serves again.
    if (probe.ok) reportSuccess(t.deps, probe.candidate);
    const third = await t.plan();
    const served = await t.attempt(third);
    expect(served.ok && served.candidate.route.id).toBe(recovering.id);
  });

  it('answers 503 no_route when the only route is being probed by another call', async () => {
    const t = setup([{ provider: sandbox('prov_only'), priority: 1 }]);
    trip(t.breakers, t.routes[0]);
    t.advance(1000);
    const first = await t.plan();
    const second = await t.plan();
    expect((await t.attempt(first)).ok).toBe(true);
    const refused = await t.attempt(second);
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.error).toMatchObject({ code: 'no_route', status: 503 });
    expect(second.attempts).toEqual([]);
  });
});

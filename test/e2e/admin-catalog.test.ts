import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { sha256Hex } from '../../src/lib/secrets.ts';
import { loadCatalog } from '../../src/routing/catalog.ts';
import { keyScopes, rateAt } from '../../src/routing/types.ts';

const hourMs = 3_600_000;

describe.each(engines)('admin catalog API on %s', (engine) => {
  let s: TestServer;
  /** Every response body seen, as text: no secret may ever appear in one. */
  const seen: string[] = [];
  const call = async (method: string, route: string, body?: unknown) => {
    const r = await s.admin(method, route, body);
    seen.push(JSON.stringify(r.body));
    return r;
  };
  /** Provider credentials: never in any response. */
  const secretsSent: string[] = [];
  /** Customer API keys: in their create response and nowhere else. */
  const shownOnce: string[] = [];

  beforeAll(async () => {
    s = await startTestServer(engine);
  });
  afterAll(async () => {
    for (const secret of secretsSent) {
      for (const text of seen) expect(text.includes(secret), 'a secret appeared in an API response').toBe(false);
    }
    for (const key of shownOnce) expect(seen.filter((text) => text.includes(key)), 'an API key was shown twice').toHaveLength(1);
    await s?.close();
  });

  const newProvider = async (body: Record<string, unknown>) => {
    if (typeof body.apiKey === 'string') secretsSent.push(body.apiKey);
    const r = await call('POST', '/api/admin/providers', body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body;
  };

  const expectError = (r: { status: number; body: any }, status: number, code: string, param?: string) => {
    expect(r.status, JSON.stringify(r.body)).toBe(status);
    expect(r.body.error.code, JSON.stringify(r.body)).toBe(code);
    if (param !== undefined) expect(r.body.error.param).toBe(param);
  };

  it('creates, reads, lists, updates and validates providers', async () => {
    const apiKey = 'sk-proj-0123456789abcdefWXYZ';
    const p = await newProvider({ name: 'OpenAI main', type: 'openai', apiKey, regions: ['us', 'eu'], retention: 'zero', sla: '99.9%', supportOwner: 'ops@acme.test' });
    expect(p).toMatchObject({
      object: 'provider',
      name: 'OpenAI main',
      type: 'openai',
      baseUrl: 'https://api.openai.com/v1',
      regions: ['us', 'eu'],
      retention: 'zero',
      status: 'active',
      resale: 'approved',
      sla: '99.9%',
      supportOwner: 'ops@acme.test',
      timeoutMs: 60_000,
    });
    expect(p.id).toMatch(/^prov_/);
    expect(p.credentials).toHaveLength(1);
    expect(p.credentials[0]).toMatchObject({ object: 'provider_credential', label: 'default', hint: 'sk-...WXYZ', status: 'active' });

    const anthropic = await newProvider({ name: 'Anthropic', type: 'anthropic', apiKey: 'sk-ant-api03-abcdefghijklmnop' });
    expect(anthropic.baseUrl).toBe('https://api.anthropic.com');
    expect(anthropic.regions).toEqual(['global']);
    const gemini = await newProvider({ name: 'Gemini', type: 'gemini', apiKey: 'AIzaSyA-0123456789abcdef' });
    expect(gemini.baseUrl).toBe('https://generativelanguage.googleapis.com/v1beta');
    const sandbox = await newProvider({ name: 'Sandbox', type: 'sandbox' });
    expect(sandbox).toMatchObject({ baseUrl: null, credentials: [] });
    const local = await newProvider({ name: 'vLLM', type: 'openai-compatible', baseUrl: 'http://127.0.0.1:8000/v1/' });
    expect(local.baseUrl).toBe('http://127.0.0.1:8000/v1');

    const got = await call('GET', `/api/admin/providers/${p.id}`);
    expect(got.body).toEqual(p);
    const page1 = await call('GET', '/api/admin/providers?limit=2');
    expect(page1.body).toMatchObject({ object: 'list', hasMore: true });
    expect(page1.body.data).toHaveLength(2);
    const page2 = await call('GET', `/api/admin/providers?limit=10&cursor=${page1.body.nextCursor}`);
    const ids = [...page1.body.data, ...page2.body.data].map((x: { id: string }) => x.id);
    expect(new Set(ids).size).toBe(5);
    const inactiveList = await call('GET', '/api/admin/providers?type=sandbox');
    expect(inactiveList.body.data.map((x: { id: string }) => x.id)).toEqual([sandbox.id]);

    const patched = await call('PATCH', `/api/admin/providers/${p.id}`, { status: 'inactive', regions: ['eu'], notes: 'planning only', timeoutMs: 30_000 });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ status: 'inactive', regions: ['eu'], notes: 'planning only', timeoutMs: 30_000, name: 'OpenAI main' });
    const reset = await call('PATCH', `/api/admin/providers/${local.id}`, { type: 'openai', baseUrl: null });
    expect(reset.body.baseUrl).toBe('https://api.openai.com/v1');

    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ name: 'X', type: 'nope' }, 'invalid_provider_type', 'type'],
      [{ name: 'X', type: 'openai-compatible' }, 'base_url_required', 'baseUrl'],
      [{ name: 'X', type: 'azure-openai', apiKey: 'abcdefghijklmnopqrstuvwxyz' }, 'base_url_required', 'baseUrl'],
      [{ name: 'X', type: 'openai', baseUrl: 'ftp://files.example.com' }, 'invalid_url', 'baseUrl'],
      [{ name: 'X', type: 'openai', baseUrl: 'not a url' }, 'invalid_url', 'baseUrl'],
      [{ name: 'X', type: 'openai', baseUrl: 'https://user:pw@api.example.com' }, 'invalid_url', 'baseUrl'],
      [{ name: 'X', type: 'openai', regions: [] }, 'invalid_regions', 'regions'],
      [{ name: 'X', type: 'openai', regions: ['eu', 'US East'] }, 'invalid_region', 'regions.1'],
      [{ name: 'X', type: 'openai', retention: 'forever' }, 'invalid_retention', 'retention'],
      [{ name: 'X', type: 'openai', status: 'paused' }, 'invalid_status', 'status'],
      [{ name: 'X', type: 'openai', resale: 'maybe' }, 'invalid_resale', 'resale'],
      [{ name: 'X', type: 'openai', timeoutMs: 5 }, 'invalid_timeout', 'timeoutMs'],
      [{ name: 'X', type: 'openai', apiKey: 'has space inside' }, 'invalid_api_key', 'apiKey'],
      [{ name: '   ', type: 'openai' }, 'invalid_name', 'name'],
      [{ type: 'openai' }, 'invalid_parameter', 'name'],
      [{ name: 'X', type: 'openai', surprise: 1 }, 'invalid_parameter', 'surprise'],
    ];
    for (const [body, code, param] of cases) expectError(await call('POST', '/api/admin/providers', body), 400, code, param);
    expectError(await call('POST', '/api/admin/providers', { name: 'OpenAI main', type: 'openai' }), 409, 'provider_name_taken', 'name');
    expectError(await call('PATCH', `/api/admin/providers/${anthropic.id}`, { name: 'OpenAI main' }), 409, 'provider_name_taken', 'name');
    expectError(await call('PATCH', `/api/admin/providers/${anthropic.id}`, { type: 'openai-compatible' }), 400, 'base_url_required', 'baseUrl');
    expectError(await call('GET', '/api/admin/providers/prov_missing'), 404, 'provider_not_found');
    expectError(await call('PATCH', '/api/admin/providers/prov_missing', { notes: 'x' }), 404, 'provider_not_found');
    // Nothing of the failed writes landed.
    const all = await call('GET', '/api/admin/providers?limit=200');
    expect(all.body.data.map((x: { name: string }) => x.name).sort()).toEqual(['Anthropic', 'Gemini', 'OpenAI main', 'Sandbox', 'vLLM']);
  });

  it('keeps credentials encrypted at rest and never shows them', async () => {
    const first = 'sk-first-credential-0000AAAA';
    const second = 'sk-second-credential-1111BBBB';
    const p = await newProvider({ name: 'Groq', type: 'openai-compatible', baseUrl: 'https://api.groq.example/openai/v1', apiKey: first });
    secretsSent.push(second);
    const added = await call('POST', `/api/admin/providers/${p.id}/credentials`, { label: 'backup', apiKey: second });
    expect(added.status).toBe(201);
    expect(added.body).toMatchObject({ object: 'provider_credential', providerId: p.id, label: 'backup', hint: 'sk-...BBBB', status: 'active' });
    expect(added.body.id).toMatch(/^cred_/);
    expect(Object.keys(added.body).sort()).toEqual(['createdAt', 'hint', 'id', 'label', 'object', 'providerId', 'status']);

    const listed = await call('GET', `/api/admin/providers/${p.id}/credentials`);
    expect(listed.body.data.map((c: { label: string; hint: string }) => [c.label, c.hint])).toEqual([
      ['default', 'sk-...AAAA'],
      ['backup', 'sk-...BBBB'],
    ]);

    const { store, secrets } = s.running.ctx;
    const rows = await store.db.selectFrom('provider_credentials').selectAll().where('provider_id', '=', p.id).execute();
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      const text = JSON.stringify(row, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
      expect(text).not.toContain(first);
      expect(text).not.toContain(second);
      expect(text).not.toContain('credential-');
      expect(row.secret_enc.startsWith(`tg1.${secrets.keyId}.`)).toBe(true);
    }
    expect(rows.map((r) => secrets.decrypt(r.secret_enc)).sort()).toEqual([first, second]);

    // The gateway's catalog holds them decrypted, in memory only.
    const catalog = await loadCatalog(store.db, secrets);
    expect(catalog.providers.get(p.id)!.credentials.map((c) => c.apiKey)).toEqual([first, second]);

    const removed = await call('DELETE', `/api/admin/providers/${p.id}/credentials/${added.body.id}`);
    expect(removed.body).toEqual({ id: added.body.id, object: 'provider_credential', deleted: true });
    expect((await call('GET', `/api/admin/providers/${p.id}/credentials`)).body.data).toHaveLength(1);
    expectError(await call('DELETE', `/api/admin/providers/${p.id}/credentials/${added.body.id}`), 404, 'provider_credential_not_found');
    expectError(await call('POST', `/api/admin/providers/${p.id}/credentials`, { apiKey: '' }), 400, 'invalid_api_key', 'apiKey');
    expectError(await call('POST', `/api/admin/providers/${p.id}/credentials`, {}), 400, 'invalid_parameter', 'apiKey');
    expectError(await call('POST', '/api/admin/providers/prov_missing/credentials', { apiKey: 'sk-whatever-123456789' }), 404, 'provider_not_found');
  });

  it('refuses to delete a provider while a model routes to it', async () => {
    const p = await newProvider({ name: 'Routed', type: 'sandbox' });
    const m = await call('POST', '/api/admin/models', { name: 'routed-model', workload: 'text', routes: [{ providerId: p.id, upstreamModel: 'echo' }] });
    expect(m.status).toBe(201);
    expectError(await call('DELETE', `/api/admin/providers/${p.id}`), 409, 'provider_in_use');
    expect((await call('GET', `/api/admin/providers/${p.id}`)).status).toBe(200);
    expect((await call('PATCH', `/api/admin/models/${m.body.id}`, { routes: [] })).status).toBe(200);
    const deleted = await call('DELETE', `/api/admin/providers/${p.id}`);
    expect(deleted.body).toEqual({ id: p.id, object: 'provider', deleted: true });
    expectError(await call('GET', `/api/admin/providers/${p.id}`), 404, 'provider_not_found');
    expectError(await call('DELETE', `/api/admin/providers/${p.id}`), 404, 'provider_not_found');
  });

  it('creates models with routes, rates, margins and callability', async () => {
    const primary = await newProvider({ name: 'Nova primary', type: 'openai', apiKey: 'sk-nova-primary-000000' });
    const backup = await newProvider({ name: 'Nova backup', type: 'openai-compatible', baseUrl: 'https://backup.example/v1' });
    const body = {
      name: 'nova-pro',
      workload: 'text',
      description: 'Our best model',
      maxOutputTokens: 8192,
      routes: [
        { providerId: backup.id, upstreamModel: 'nova-pro-2025', priority: 2, region: 'eu', cost: { currency: 'USD', inputPer1M: '2', outputPer1M: '16' } },
        { providerId: primary.id, upstreamModel: 'gpt-4o', cost: { currency: 'USD', inputPer1M: '2.50', outputPer1M: '10', cachedInputPer1M: '1.25' } },
      ],
      rates: { inputPer1M: '3', outputPer1M: '15', cachedInputPer1M: '1.5' },
    };
    const r = await call('POST', '/api/admin/models', body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const m = r.body;
    expect(m).toMatchObject({
      object: 'model',
      name: 'nova-pro',
      workload: 'text',
      description: 'Our best model',
      maxOutputTokens: 8192,
      status: 'active',
      callable: true,
      notCallableReason: null,
      rates: { inputPer1M: '3', outputPer1M: '15', cachedInputPer1M: '1.5' },
      scheduledRates: [],
    });
    expect(m.id).toMatch(/^mdl_/);
    expect(m.rateId).toMatch(/^rate_/);
    expect(m.routes.map((x: { providerId: string; priority: number }) => [x.providerId, x.priority])).toEqual([
      [primary.id, 1],
      [backup.id, 2],
    ]);
    expect(m.routes[0]).toMatchObject({ upstreamModel: 'gpt-4o', weight: 1, region: null, providerName: 'Nova primary', providerStatus: 'active' });
    expect(m.routes[0].margin).toEqual({
      rateId: m.rateId,
      currency: 'USD',
      belowCost: false,
      units: [
        { unit: 'inputPer1M', price: '3', cost: '2.5', margin: '0.5' },
        { unit: 'cachedInputPer1M', price: '1.5', cost: '1.25', margin: '0.25' },
        { unit: 'outputPer1M', price: '15', cost: '10', margin: '5' },
      ],
    });
    // The backup route costs more per output token than it sells for: visible before any traffic.
    expect(m.routes[1].margin.belowCost).toBe(true);
    expect(m.routes[1].margin.units).toContainEqual({ unit: 'outputPer1M', price: '15', cost: '16', margin: '-1' });
    expect(m.routes[1].margin.units).toContainEqual({ unit: 'cachedInputPer1M', price: '1.5', cost: '2', margin: '-0.5' });

    expect((await call('GET', `/api/admin/models/${m.id}`)).body).toEqual(m);

    // The gateway's view: routes by priority, the same rates, credentials decrypted.
    const catalog = await loadCatalog(s.running.ctx.store.db, s.running.ctx.secrets);
    const entry = catalog.models.get('nova-pro')!;
    expect(entry.routes.map((x) => x.provider.id)).toEqual([primary.id, backup.id]);
    expect(entry.routes[0].provider).toBe(catalog.providers.get(primary.id));
    expect(entry.routes[0].provider.credentials.map((c) => c.apiKey)).toEqual(['sk-nova-primary-000000']);
    expect(entry.routes[1].provider.baseUrl).toBe('https://backup.example/v1');
    expect(entry.routes[1].cost).toEqual({ currency: 'USD', inputPer1M: '2', outputPer1M: '16' });
    expect(rateAt(entry, Date.now())?.rates).toEqual(body.rates);

    const cases: Array<[Record<string, unknown>, number, string, string]> = [
      [{ ...body, name: 'other', routes: [{ providerId: primary.id, upstreamModel: 'x' }, { providerId: 'prov_nope', upstreamModel: 'y' }] }, 400, 'unknown_provider', 'routes.1.providerId'],
      [{ ...body, name: 'has space' }, 400, 'invalid_name', 'name'],
      [{ ...body, name: 'x'.repeat(101) }, 400, 'invalid_name', 'name'],
      [{ ...body, name: 'other', workload: 'telepathy' }, 400, 'invalid_workload', 'workload'],
      [{ ...body, name: 'other', rates: { inputPer1M: '-1' } }, 400, 'invalid_rate', 'rates.inputPer1M'],
      [{ ...body, name: 'other', rates: { perToken: '1' } }, 400, 'invalid_rate', 'rates.perToken'],
      [{ ...body, name: 'other', routes: [{ providerId: primary.id, upstreamModel: 'x', cost: { inputPer1M: '1' } }] }, 400, 'invalid_cost', 'routes.0.cost.currency'],
      [{ ...body, name: 'other', routes: [{ providerId: primary.id, upstreamModel: 'x', priority: 0 }] }, 400, 'invalid_parameter', 'routes.0.priority'],
      [{ ...body, name: 'other', routes: [{ providerId: primary.id, upstreamModel: 'x', region: 'Mars Base' }] }, 400, 'invalid_region', 'routes.0.region'],
      [{ ...body, name: 'other', ratesEffectiveAt: 'soon' }, 400, 'invalid_time', 'ratesEffectiveAt'],
      [{ ...body, name: 'nova-pro' }, 409, 'model_name_taken', 'name'],
    ];
    for (const [b, status, code, param] of cases) expectError(await call('POST', '/api/admin/models', b), status, code, param);
    const list = await call('GET', '/api/admin/models?limit=200');
    expect(list.body.data.map((x: { name: string }) => x.name)).not.toContain('other');
  });

  it('says a model without rates for its workload is not callable', async () => {
    const p = await newProvider({ name: 'Unpriced host', type: 'sandbox' });
    const route = [{ providerId: p.id, upstreamModel: 'm' }];
    const halfPriced = await call('POST', '/api/admin/models', { name: 'half-priced', workload: 'text', routes: route, rates: { inputPer1M: '1' } });
    expect(halfPriced.status).toBe(201);
    expect(halfPriced.body.callable).toBe(false);
    expect(halfPriced.body.notCallableReason).toContain('outputPer1M');
    const noRates = await call('POST', '/api/admin/models', { name: 'no-rates', workload: 'image', routes: route });
    expect(noRates.body).toMatchObject({ callable: false, rates: null, rateId: null });
    expect(noRates.body.notCallableReason).toContain('No rates');
    const wrongUnits = await call('POST', `/api/admin/models/${noRates.body.id}/rates`, { rates: { inputPer1M: '1', outputPer1M: '1' } });
    expect(wrongUnits.status).toBe(201);
    expect((await call('GET', `/api/admin/models/${noRates.body.id}`)).body.notCallableReason).toContain('perImage');
    await call('POST', `/api/admin/models/${noRates.body.id}/rates`, { rates: { perImage: '0.04' } });
    expect((await call('GET', `/api/admin/models/${noRates.body.id}`)).body).toMatchObject({ callable: true, rates: { perImage: '0.04' } });
    const noRoute = await call('POST', '/api/admin/models', { name: 'no-route', workload: 'embedding', routes: [], rates: { inputPer1M: '0.1' } });
    expect(noRoute.body).toMatchObject({ callable: false, notCallableReason: 'No route goes to an active provider.' });
    await call('PATCH', `/api/admin/providers/${p.id}`, { status: 'inactive' });
    expect((await call('GET', `/api/admin/models/${noRates.body.id}`)).body.callable).toBe(false);
  });

  it('versions rates by effective time and never edits an old version', async () => {
    const p = await newProvider({ name: 'Versioned host', type: 'sandbox' });
    const created = await call('POST', '/api/admin/models', {
      name: 'acme/embed:v1',
      workload: 'embedding',
      routes: [{ providerId: p.id, upstreamModel: 'embed', cost: { currency: 'USD', inputPer1M: '0.02' } }],
      rates: { inputPer1M: '0.10' },
    });
    expect(created.status).toBe(201);
    const id = created.body.id;
    const future = new Date(Date.now() + hourMs).toISOString();
    const later = await call('POST', `/api/admin/models/${id}/rates`, { rates: { inputPer1M: '0.20' }, effectiveAt: future });
    expect(later.status).toBe(201);
    expect(later.body).toMatchObject({ object: 'model_rate', modelId: id, rates: { inputPer1M: '0.20' }, effectiveAt: future, status: 'scheduled' });

    const m = (await call('GET', `/api/admin/models/${id}`)).body;
    expect(m.rates).toEqual({ inputPer1M: '0.10' });
    expect(m.rateId).toBe(created.body.rateId);
    expect(m.scheduledRates).toEqual([{ id: later.body.id, rates: { inputPer1M: '0.20' }, effectiveAt: future }]);
    expect(m.routes[0].margin.units).toEqual([{ unit: 'inputPer1M', price: '0.1', cost: '0.02', margin: '0.08' }]);

    const versions = (await call('GET', `/api/admin/models/${id}/rates`)).body.data;
    expect(versions.map((v: { id: string; status: string }) => [v.id, v.status])).toEqual([
      [later.body.id, 'scheduled'],
      [created.body.rateId, 'current'],
    ]);

    const catalog = await loadCatalog(s.running.ctx.store.db, s.running.ctx.secrets);
    const entry = catalog.models.get('acme/embed:v1')!;
    expect(entry.rates.map((r) => r.id)).toEqual([created.body.rateId, later.body.id]);
    expect(rateAt(entry, Date.now())?.rates).toEqual({ inputPer1M: '0.10' });
    expect(rateAt(entry, Date.now() + 2 * hourMs)?.rates).toEqual({ inputPer1M: '0.20' });
    expect(rateAt(entry, Date.now() - 2 * hourMs)).toBeNull();

    const now = await call('POST', `/api/admin/models/${id}/rates`, { rates: { inputPer1M: '0.15' } });
    expect(now.body.status).toBe('current');
    const after = (await call('GET', `/api/admin/models/${id}/rates`)).body.data;
    expect(after.map((v: { status: string }) => v.status)).toEqual(['scheduled', 'current', 'superseded']);
    // The superseded version is unchanged.
    expect(after[2]).toMatchObject({ id: created.body.rateId, rates: { inputPer1M: '0.10' } });

    expectError(await call('POST', `/api/admin/models/${id}/rates`, { rates: { inputPer1M: '1' }, effectiveAt: '2020-01-01T00:00:00Z' }), 400, 'invalid_effective_at', 'effectiveAt');
    expectError(await call('POST', `/api/admin/models/${id}/rates`, { rates: { inputPer1M: '1.0000000001' } }), 400, 'invalid_rate', 'rates.inputPer1M');
    expectError(await call('POST', `/api/admin/models/${id}/rates`, {}), 400, 'invalid_parameter', 'rates');
    expectError(await call('POST', '/api/admin/models/mdl_missing/rates', { rates: { inputPer1M: '1' } }), 404, 'model_not_found');
    expect((await call('GET', `/api/admin/models/${id}/rates`)).body.data).toHaveLength(3);
  });

  it('updates, lists and deletes models', async () => {
    const a = await newProvider({ name: 'Host A', type: 'sandbox' });
    const b = await newProvider({ name: 'Host B', type: 'sandbox' });
    const created = await call('POST', '/api/admin/models', {
      name: 'coder-1',
      workload: 'coding',
      routes: [{ providerId: a.id, upstreamModel: 'a-coder' }],
      rates: { inputPer1M: '1', outputPer1M: '2' },
    });
    const id = created.body.id;
    const patched = await call('PATCH', `/api/admin/models/${id}`, {
      name: 'coder-2',
      description: 'renamed',
      maxOutputTokens: null,
      routes: [
        { providerId: b.id, upstreamModel: 'b-coder', weight: 3 },
        { providerId: a.id, upstreamModel: 'a-coder', weight: 1 },
      ],
    });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({ name: 'coder-2', description: 'renamed', maxOutputTokens: null, callable: true });
    // Routes of equal priority keep the order given.
    expect(patched.body.routes.map((r: { upstreamModel: string; weight: number }) => [r.upstreamModel, r.weight])).toEqual([
      ['b-coder', 3],
      ['a-coder', 1],
    ]);
    const routeRows = await s.running.ctx.store.db.selectFrom('model_routes').select('id').where('model_id', '=', id).execute();
    expect(routeRows).toHaveLength(2);

    const inactive = await call('PATCH', `/api/admin/models/${id}`, { status: 'inactive' });
    expect(inactive.body).toMatchObject({ status: 'inactive', callable: false, notCallableReason: 'The model is inactive.' });
    expectError(await call('PATCH', `/api/admin/models/${id}`, { routes: [{ providerId: 'prov_gone', upstreamModel: 'x' }] }), 400, 'unknown_provider', 'routes.0.providerId');
    expect((await call('GET', `/api/admin/models/${id}`)).body.routes).toHaveLength(2);
    expectError(await call('PATCH', `/api/admin/models/${id}`, { workload: 'poetry' }), 400, 'invalid_workload', 'workload');
    expectError(await call('PATCH', '/api/admin/models/mdl_missing', { description: 'x' }), 404, 'model_not_found');

    const page1 = await call('GET', '/api/admin/models?limit=1');
    expect(page1.body).toMatchObject({ hasMore: true });
    const filtered = await call('GET', '/api/admin/models?workload=coding');
    expect(filtered.body.data.map((m: { id: string }) => m.id)).toEqual([id]);

    const deleted = await call('DELETE', `/api/admin/models/${id}`);
    expect(deleted.body).toEqual({ id, object: 'model', deleted: true });
    expectError(await call('GET', `/api/admin/models/${id}`), 404, 'model_not_found');
    const leftovers = await s.running.ctx.store.db.selectFrom('model_rates').select('id').where('model_id', '=', id).execute();
    expect(leftovers).toHaveLength(0);
  });

  it('creates API keys shown once, stores them hashed, lists and revokes them', async () => {
    const ws = await call('POST', '/api/admin/workspaces', { name: 'Keyholder' });
    const wsId = ws.body.id as string;
    const created = await call('POST', `/api/admin/workspaces/${wsId}/keys`, { name: 'ci', metadata: { team: 'platform' } });
    expect(created.status).toBe(201);
    const key = created.body.key as string;
    shownOnce.push(key);
    expect(key).toMatch(/^tg_live_[A-Za-z0-9]{32}$/);
    expect(created.body).toMatchObject({
      object: 'api_key',
      workspaceId: wsId,
      name: 'ci',
      prefix: key.slice(0, 12),
      scopes: [...keyScopes],
      models: null,
      metadata: { team: 'platform' },
      status: 'active',
      expiresAt: null,
      revokedAt: null,
    });
    expect(created.body.id).toMatch(/^key_/);

    const row = await s.running.ctx.store.db.selectFrom('api_keys').selectAll().where('id', '=', created.body.id).executeTakeFirstOrThrow();
    expect(row.hash).toBe(sha256Hex(key));
    expect(row.prefix).toBe(key.slice(0, 12));
    expect(JSON.stringify(row, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))).not.toContain(key);

    const expiresAt = new Date(Date.now() + 24 * hourMs).toISOString();
    const limited = await call('POST', `/api/admin/workspaces/${wsId}/keys`, { name: 'limited', scopes: ['embeddings', 'embeddings'], models: ['nova-pro'], expiresAt });
    expect(limited.body).toMatchObject({ scopes: ['embeddings'], models: ['nova-pro'], expiresAt });
    shownOnce.push(limited.body.key);
    expect(limited.body.key).not.toBe(key);

    const listed = await call('GET', `/api/admin/workspaces/${wsId}/keys`);
    expect(listed.body.data.map((k: { id: string }) => k.id)).toEqual([limited.body.id, created.body.id]);
    for (const k of listed.body.data) {
      expect(k.key).toBeUndefined();
      expect(k.hash).toBeUndefined();
      expect(k.prefix).toMatch(/^tg_live_.{4}$/);
    }
    const page = await call('GET', `/api/admin/workspaces/${wsId}/keys?limit=1`);
    expect(page.body).toMatchObject({ hasMore: true, nextCursor: limited.body.id });
    expect((await call('GET', `/api/admin/workspaces/${wsId}/keys/${created.body.id}`)).body.key).toBeUndefined();

    // The gateway's cache finds the key, then sees its revocation at once (keys.changed).
    const keys = s.running.ctx.keys;
    expect(await keys.authenticate(key)).toMatchObject({ id: created.body.id, workspaceId: wsId, status: 'active', metadata: { team: 'platform' } });
    const revoked = await call('DELETE', `/api/admin/workspaces/${wsId}/keys/${created.body.id}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.status).toBe('revoked');
    expect(revoked.body.revokedAt).not.toBeNull();
    expect(await keys.authenticate(key)).toMatchObject({ id: created.body.id, status: 'revoked' });
    const again = await call('DELETE', `/api/admin/workspaces/${wsId}/keys/${created.body.id}`);
    expect(again.body.revokedAt).toBe(revoked.body.revokedAt);
    expect((await call('GET', `/api/admin/workspaces/${wsId}/keys?status=active`)).body.data.map((k: { id: string }) => k.id)).toEqual([limited.body.id]);

    const other = await call('POST', '/api/admin/workspaces', { name: 'Other' });
    expectError(await call('DELETE', `/api/admin/workspaces/${other.body.id}/keys/${limited.body.id}`), 404, 'api_key_not_found');
    expectError(await call('POST', `/api/admin/workspaces/${wsId}/keys`, { name: 'x', scopes: ['chat.completions', 'root'] }), 400, 'invalid_scope', 'scopes');
    expectError(await call('POST', `/api/admin/workspaces/${wsId}/keys`, { name: 'x', scopes: [] }), 400, 'invalid_scopes', 'scopes');
    expectError(await call('POST', `/api/admin/workspaces/${wsId}/keys`, { name: 'x', models: [] }), 400, 'invalid_models', 'models');
    expectError(await call('POST', `/api/admin/workspaces/${wsId}/keys`, { name: 'x', expiresAt: '2001-01-01T00:00:00Z' }), 400, 'invalid_expiry', 'expiresAt');
    expectError(await call('POST', `/api/admin/workspaces/${wsId}/keys`, { name: '' }), 400, 'invalid_name', 'name');
    expectError(await call('POST', '/api/admin/workspaces/ws_missing/keys', { name: 'x' }), 404, 'workspace_not_found');
    expectError(await call('GET', '/api/admin/workspaces/ws_missing/keys'), 404, 'workspace_not_found');
    expect((await call('GET', `/api/admin/workspaces/${wsId}/keys`)).body.data).toHaveLength(2);
  });

  it('invalidates the gateway catalog on every catalog write', async () => {
    const { catalog } = s.running.ctx;
    const before = await catalog.get();
    expect(await catalog.get()).toBe(before);
    const p = await newProvider({ name: 'Fresh host', type: 'sandbox' });
    const after = await catalog.get();
    expect(after).not.toBe(before);
    expect(after.providers.get(p.id)?.name).toBe('Fresh host');
  });
});

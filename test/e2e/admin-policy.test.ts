import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { QueryCounter } from '../helpers/query-counter.ts';
import { loadCatalog } from '../../src/routing/catalog.ts';
import { rateAt } from '../../src/routing/types.ts';
import { counterId } from '../../src/ledger/budgets.ts';
import { WorkspaceCache } from '../../src/workspaces/cache.ts';
import { deleteExpiredRequestLogs, startRequestLogRetention, storeRequestLog } from '../../src/workspaces/request-logs.ts';
import { createLogger } from '../../src/server.ts';

const hourMs = 3_600_000;
const dayMs = 24 * hourMs;

describe.each(engines)('admin policy API on %s', (engine) => {
  let s: TestServer;
  const call = (method: string, route: string, body?: unknown) => s.admin(method, route, body);
  const db = () => s.running.ctx.store.db;

  beforeAll(async () => {
    s = await startTestServer(engine);
  });
  afterAll(async () => s?.close());

  const expectError = (r: { status: number; body: any }, status: number, code: string, param?: string | null) => {
    expect(r.status, JSON.stringify(r.body)).toBe(status);
    expect(r.body.error.code, JSON.stringify(r.body)).toBe(code);
    if (param !== undefined) expect(r.body.error.param, JSON.stringify(r.body)).toBe(param);
  };
  const newWorkspace = async (name: string) => {
    const r = await call('POST', '/api/admin/workspaces', { name });
    expect(r.status).toBe(201);
    return r.body.id as string;
  };
  const newPriceBook = async (name: string) => {
    const r = await call('POST', '/api/admin/price-books', { name });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body.id as string;
  };
  const newModel = async (body: Record<string, unknown>) => {
    const r = await call('POST', '/api/admin/models', body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body;
  };
  let providerId: string;
  const provider = async () => {
    if (!providerId) {
      const r = await call('POST', '/api/admin/providers', { name: 'Policy host', type: 'sandbox', regions: ['us'], retention: 'zero' });
      providerId = r.body.id;
    }
    return providerId;
  };
  const textModel = async (name: string, rates: Record<string, string> | null = { inputPer1M: '1', outputPer1M: '2' }) =>
    newModel({ name, workload: 'text', routes: [{ providerId: await provider(), upstreamModel: name }], ...(rates ? { rates } : {}) });

  it('sets and shows a workspace policy, price book, logging and key defaults', async () => {
    const id = await newWorkspace('Policy Co');
    const fresh = (await call('GET', `/api/admin/workspaces/${id}`)).body;
    expect(fresh).toMatchObject({
      priceBookId: null,
      policy: { allowedRegions: null, zeroRetention: false },
      logging: { enabled: false, retentionDays: 30 },
      keyDefaults: { budget: null, rpm: null, tpm: null },
      overdraftLimit: '0',
    });
    const book = await newPriceBook('Enterprise');

    const patched = await call('PATCH', `/api/admin/workspaces/${id}`, {
      priceBookId: book,
      policy: { allowedRegions: ['sg', 'eu', 'sg'], zeroRetention: true },
      logging: { enabled: true },
      keyDefaults: { budget: { period: 'month', credits: '12.5' }, rpm: 60 },
      overdraftLimit: '5',
    });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({
      priceBookId: book,
      policy: { allowedRegions: ['sg', 'eu'], zeroRetention: true },
      logging: { enabled: true, retentionDays: 30 },
      keyDefaults: { budget: { period: 'month', credits: '12.5' }, rpm: 60, tpm: null },
      overdraftLimit: '5',
    });
    // Each part is a patch of its own: what is not named keeps its value.
    const again = await call('PATCH', `/api/admin/workspaces/${id}`, { policy: { zeroRetention: false }, keyDefaults: { tpm: 10_000, rpm: null }, logging: { enabled: true, retentionDays: 7 } });
    expect(again.body).toMatchObject({
      priceBookId: book,
      policy: { allowedRegions: ['sg', 'eu'], zeroRetention: false },
      logging: { enabled: true, retentionDays: 7 },
      keyDefaults: { budget: { period: 'month', credits: '12.5' }, rpm: null, tpm: 10_000 },
    });
    expect((await call('GET', `/api/admin/workspaces/${id}`)).body).toEqual(again.body);
    const row = await db().selectFrom('workspaces').select(['policy', 'key_defaults']).where('id', '=', id).executeTakeFirstOrThrow();
    expect(JSON.parse(row.policy)).toEqual({ allowedRegions: ['sg', 'eu'], zeroRetention: false, logging: { enabled: true, retentionDays: 7 } });
    expect(JSON.parse(row.key_defaults)).toEqual({ budget: { period: 'month', credits: '12.5' }, rpm: null, tpm: 10_000 });

    // The request path's cache hears workspace.changed.
    const entry = await s.running.ctx.workspaces.get(id);
    expect(entry).toEqual({
      id,
      status: 'active',
      priceBookId: book,
      policy: { allowedRegions: ['sg', 'eu'], zeroRetention: false },
      logging: { enabled: true, retentionDays: 7 },
      keyDefaults: { budget: { period: 'month', limitMicros: 12_500_000n }, rpm: null, tpm: 10_000 },
    });
    const cleared = await call('PATCH', `/api/admin/workspaces/${id}`, { priceBookId: null, policy: { allowedRegions: null }, keyDefaults: { budget: null } });
    expect(cleared.body).toMatchObject({ priceBookId: null, policy: { allowedRegions: null }, keyDefaults: { budget: null, tpm: 10_000 } });
    // The credit limits beside them still work, null included.
    expect((await call('PATCH', `/api/admin/workspaces/${id}`, { warningLimit: 0 })).body.warningLimit).toBe('0');
    const noWarning = await call('PATCH', `/api/admin/workspaces/${id}`, { warningLimit: null });
    expect(noWarning.body).toMatchObject({ warningLimit: null, overdraftLimit: '5', priceBookId: null });
    expect(await s.running.ctx.workspaces.get(id)).toMatchObject({ priceBookId: null, policy: { allowedRegions: null }, keyDefaults: { budget: null } });

    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ priceBookId: 'pb_missing' }, 'unknown_price_book', 'priceBookId'],
      [{ policy: { allowedRegions: [] } }, 'invalid_regions', 'policy.allowedRegions'],
      [{ policy: { allowedRegions: ['us', 'Mars Base'] } }, 'invalid_region', 'policy.allowedRegions.1'],
      [{ policy: { zeroRetention: 'yes' } }, 'invalid_parameter', 'policy.zeroRetention'],
      [{ policy: { surprise: true } }, 'invalid_parameter', 'policy.surprise'],
      [{ logging: { retentionDays: 5 } }, 'invalid_parameter', 'logging.enabled'],
      [{ logging: { enabled: true, retentionDays: 0 } }, 'invalid_retention_days', 'logging.retentionDays'],
      [{ logging: { enabled: true, retentionDays: 3651 } }, 'invalid_retention_days', 'logging.retentionDays'],
      [{ keyDefaults: { budget: { period: 'week', credits: '1' } } }, 'invalid_budget_period', 'keyDefaults.budget.period'],
      [{ keyDefaults: { budget: { period: 'day', credits: '0' } } }, 'invalid_amount', 'keyDefaults.budget.credits'],
      [{ keyDefaults: { budget: { period: 'day', credits: '1.0000001' } } }, 'invalid_amount', 'keyDefaults.budget.credits'],
      [{ keyDefaults: { budget: { period: 'day' } } }, 'invalid_parameter', 'keyDefaults.budget.credits'],
      [{ keyDefaults: { rpm: 0 } }, 'invalid_rate_limit', 'keyDefaults.rpm'],
      [{ keyDefaults: { tpm: 2_000_000_000 } }, 'invalid_rate_limit', 'keyDefaults.tpm'],
      // A bad part refuses the whole patch, credit limits included.
      [{ overdraftLimit: '99', keyDefaults: { rpm: -1 } }, 'invalid_rate_limit', 'keyDefaults.rpm'],
    ];
    for (const [body, code, param] of cases) expectError(await call('PATCH', `/api/admin/workspaces/${id}`, body), 400, code, param);
    expect((await call('GET', `/api/admin/workspaces/${id}`)).body).toEqual(noWarning.body);
    expectError(await call('PATCH', '/api/admin/workspaces/ws_missing', { policy: { zeroRetention: true } }), 404, 'workspace_not_found');
  });

  it('serves workspaces from memory: no query on a hit, reload after invalidate or 30 s', async () => {
    const id = await newWorkspace('Cached Co');
    await call('PATCH', `/api/admin/workspaces/${id}`, { policy: { allowedRegions: ['us'] }, keyDefaults: { budget: { period: 'day', credits: '0.000001' } } });
    let nowMs = 1_000_000;
    const counter = new QueryCounter();
    const cache = new WorkspaceCache(db().withPlugin(counter), { now: () => nowMs });
    const entry = await cache.get(id);
    expect(entry).toMatchObject({ id, policy: { allowedRegions: ['us'], zeroRetention: false }, keyDefaults: { budget: { period: 'day', limitMicros: 1n } } });
    expect(counter.count).toBe(1);
    const concurrent = await Promise.all(Array.from({ length: 20 }, () => cache.get(id)));
    for (const e of concurrent) expect(e).toBe(entry);
    expect(counter.count).toBe(1);

    // Changed behind the cache's back (another process): the cached entry stands until invalidated.
    await db().updateTable('workspaces').set({ status: 'suspended' }).where('id', '=', id).execute();
    nowMs += 29_000;
    expect((await cache.get(id)).status).toBe('active');
    expect(counter.count).toBe(1);
    cache.invalidate(id);
    expect((await cache.get(id)).status).toBe('suspended');
    expect(counter.count).toBe(2);

    await db().updateTable('workspaces').set({ status: 'active' }).where('id', '=', id).execute();
    cache.invalidate();
    expect((await cache.get(id)).status).toBe('active');
    expect(counter.count).toBe(3);

    // Past the TTL it reloads by itself.
    await db().updateTable('workspaces').set({ price_book_id: 'pb_elsewhere' }).where('id', '=', id).execute();
    nowMs += 29_999;
    expect((await cache.get(id)).priceBookId).toBeNull();
    nowMs += 2;
    expect((await cache.get(id)).priceBookId).toBe('pb_elsewhere');
    expect(counter.count).toBe(4);
    await db().updateTable('workspaces').set({ price_book_id: null }).where('id', '=', id).execute();

    await expect(cache.get('ws_missing')).rejects.toMatchObject({ code: 'workspace_not_found' });
  });

  it('creates and changes keys with limits, and shows spend, requests and budget usage', async () => {
    const ws = await newWorkspace('Key limits');
    const created = await call('POST', `/api/admin/workspaces/${ws}/keys`, {
      name: 'research',
      metadata: { department: 'research' },
      budget: { period: 'day', credits: '10' },
      rpm: 120,
      tpm: 50_000,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body).toMatchObject({
      budget: { period: 'day', credits: '10' },
      rpm: 120,
      tpm: 50_000,
      effectiveLimits: { budget: { period: 'day', credits: '10' }, rpm: 120, tpm: 50_000 },
      spend: '0',
      requests: 0,
      lastUsedAt: null,
    });
    const keyId = created.body.id as string;
    expect(created.body.budgetUsage).toMatchObject({ period: 'day', credits: '10', spent: '0', pending: '0', remaining: '10' });
    const row = await db().selectFrom('api_keys').select(['budget_period', 'budget_micros', 'rpm', 'tpm']).where('id', '=', keyId).executeTakeFirstOrThrow();
    expect({ ...row, rpm: Number(row.rpm), tpm: Number(row.tpm) }).toEqual({ budget_period: 'day', budget_micros: 10_000_000n, rpm: 120, tpm: 50_000 });

    // The gateway's counters and spend, as the ledger and the request path leave them.
    const nowMs = Date.now();
    await db()
      .insertInto('budget_counters')
      .values({ id: counterId({ keyId, period: 'day', limitMicros: 10_000_000n }, nowMs), key_id: keyId, period: 'day', period_start: 0, posted_micros: 2_500_000n, pending_micros: 500_000n, created_at: nowMs })
      .execute();
    await db().updateTable('api_keys').set({ spend_micros: 7_250_000n, requests: 42, last_used_at: nowMs }).where('id', '=', keyId).execute();
    const read = (await call('GET', `/api/admin/workspaces/${ws}/keys/${keyId}`)).body;
    expect(read).toMatchObject({ spend: '7.25', requests: 42, lastUsedAt: new Date(nowMs).toISOString() });
    expect(read.budgetUsage).toMatchObject({ period: 'day', credits: '10', spent: '2.5', pending: '0.5', remaining: '7' });
    const startOfDay = new Date(nowMs);
    startOfDay.setUTCHours(0, 0, 0, 0);
    expect(read.budgetUsage.periodStart).toBe(startOfDay.toISOString());
    expect(read.budgetUsage.periodEnd).toBe(new Date(startOfDay.getTime() + dayMs).toISOString());
    const listed = (await call('GET', `/api/admin/workspaces/${ws}/keys`)).body.data;
    expect(listed.find((k: { id: string }) => k.id === keyId)).toEqual(read);

    // Patch: each named field changes, the rest stays; the request path's key cache hears keys.changed.
    const key = created.body.key as string;
    expect((await s.running.ctx.keys.authenticate(key))?.limits).toEqual({ budget: { period: 'day', limitMicros: 10_000_000n }, rpm: 120, tpm: 50_000 });
    const expiresAt = new Date(Date.now() + 48 * hourMs).toISOString();
    const patched = await call('PATCH', `/api/admin/workspaces/${ws}/keys/${keyId}`, {
      name: 'research-2',
      scopes: ['chat.completions'],
      models: ['smart'],
      expiresAt,
      metadata: { department: 'r&d', project: 'atlas' },
      budget: { period: 'lifetime', credits: '100' },
      rpm: null,
    });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({
      name: 'research-2',
      scopes: ['chat.completions'],
      models: ['smart'],
      expiresAt,
      metadata: { department: 'r&d', project: 'atlas' },
      budget: { period: 'lifetime', credits: '100' },
      rpm: null,
      tpm: 50_000,
      spend: '7.25',
      budgetUsage: { period: 'lifetime', spent: '0', remaining: '100', periodStart: new Date(0).toISOString(), periodEnd: null },
    });
    expect(patched.body.key).toBeUndefined();
    expect(await s.running.ctx.keys.authenticate(key)).toMatchObject({
      name: 'research-2',
      models: ['smart'],
      metadata: { department: 'r&d', project: 'atlas' },
      limits: { budget: { period: 'lifetime', limitMicros: 100_000_000n }, rpm: null, tpm: 50_000 },
    });
    const cleared = await call('PATCH', `/api/admin/workspaces/${ws}/keys/${keyId}`, { models: null, expiresAt: null, budget: null });
    expect(cleared.body).toMatchObject({ models: null, expiresAt: null, budget: null, budgetUsage: null, tpm: 50_000 });

    // Workspace defaults fill what a key leaves unset.
    await call('PATCH', `/api/admin/workspaces/${ws}`, { keyDefaults: { budget: { period: 'month', credits: '3' }, rpm: 10, tpm: 99 } });
    const inherited = (await call('GET', `/api/admin/workspaces/${ws}/keys/${keyId}`)).body;
    expect(inherited).toMatchObject({ budget: null, rpm: null, tpm: 50_000, effectiveLimits: { budget: { period: 'month', credits: '3' }, rpm: 10, tpm: 50_000 } });
    expect(inherited.budgetUsage).toMatchObject({ period: 'month', credits: '3', spent: '0', remaining: '3' });

    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ budget: { period: 'hour', credits: '1' } }, 'invalid_budget_period', 'budget.period'],
      [{ budget: { period: 'day', credits: '-1' } }, 'invalid_amount', 'budget.credits'],
      [{ budget: { period: 'day', credits: '1', extra: 1 } }, 'invalid_parameter', 'budget.extra'],
      [{ rpm: 0 }, 'invalid_rate_limit', 'rpm'],
      [{ tpm: 1.5 }, 'invalid_parameter', 'tpm'],
      [{ scopes: ['root'] }, 'invalid_scope', 'scopes'],
      [{ expiresAt: '2001-01-01T00:00:00Z' }, 'invalid_expiry', 'expiresAt'],
      [{ expiresAt: 'tomorrow' }, 'invalid_time', 'expiresAt'],
      [{ name: '' }, 'invalid_name', 'name'],
      [{ name: 'ok', rpm: 5, tpm: 0 }, 'invalid_rate_limit', 'tpm'],
    ];
    for (const [body, code, param] of cases) {
      expectError(await call('PATCH', `/api/admin/workspaces/${ws}/keys/${keyId}`, body), 400, code, param);
      if (body.name === undefined) expectError(await call('POST', `/api/admin/workspaces/${ws}/keys`, { name: 'x', ...body }), 400, code, param);
    }
    expect((await call('GET', `/api/admin/workspaces/${ws}/keys/${keyId}`)).body).toEqual(inherited);
    expectError(await call('PATCH', `/api/admin/workspaces/${ws}/keys/key_missing`, { name: 'x' }), 404, 'api_key_not_found');
    const other = await newWorkspace('Other keys');
    expectError(await call('PATCH', `/api/admin/workspaces/${other}/keys/${keyId}`, { name: 'x' }), 404, 'api_key_not_found');
  });

  it('manages price books and versions their rates by effective time', async () => {
    const book = await call('POST', '/api/admin/price-books', { name: 'Resellers', description: 'Volume partners' });
    expect(book.status).toBe(201);
    expect(book.body).toMatchObject({ object: 'price_book', name: 'Resellers', description: 'Volume partners', workspaceCount: 0, modelCount: 0 });
    const pb = book.body.id as string;
    expect(pb).toMatch(/^pb_/);
    expect((await call('GET', `/api/admin/price-books/${pb}`)).body).toEqual(book.body);
    const other = await newPriceBook('Students');
    const list = (await call('GET', '/api/admin/price-books?limit=200')).body;
    expect(list.data.map((b: { id: string }) => b.id)).toEqual(expect.arrayContaining([pb, other]));
    expect((await call('GET', '/api/admin/price-books?limit=1')).body).toMatchObject({ hasMore: true });
    const renamed = await call('PATCH', `/api/admin/price-books/${other}`, { name: 'Universities', description: null });
    expect(renamed.body).toMatchObject({ name: 'Universities', description: null });
    expectError(await call('POST', '/api/admin/price-books', { name: 'Resellers' }), 409, 'price_book_name_taken', 'name');
    expectError(await call('PATCH', `/api/admin/price-books/${other}`, { name: 'Resellers' }), 409, 'price_book_name_taken', 'name');
    expectError(await call('POST', '/api/admin/price-books', { name: '  ' }), 400, 'invalid_name', 'name');
    expectError(await call('POST', '/api/admin/price-books', {}), 400, 'invalid_parameter', 'name');
    expectError(await call('GET', '/api/admin/price-books/pb_missing'), 404, 'price_book_not_found');
    expectError(await call('PATCH', '/api/admin/price-books/pb_missing', { name: 'x' }), 404, 'price_book_not_found');

    const model = await textModel('book-model', { inputPer1M: '3', outputPer1M: '15' });
    const before = Date.now();
    const v1 = await call('POST', `/api/admin/models/${model.id}/rates`, { priceBookId: pb, rates: { inputPer1M: '2', outputPer1M: '10' } });
    expect(v1.status, JSON.stringify(v1.body)).toBe(201);
    expect(v1.body).toMatchObject({ object: 'model_rate', modelId: model.id, priceBookId: pb, status: 'current' });
    const future = new Date(Date.now() + hourMs).toISOString();
    const v2 = await call('POST', `/api/admin/models/${model.id}/rates`, { priceBookId: pb, rates: { inputPer1M: '1.5', outputPer1M: '9' }, effectiveAt: future });
    expect(v2.body).toMatchObject({ priceBookId: pb, status: 'scheduled', effectiveAt: future });

    const bookRates = (await call('GET', `/api/admin/models/${model.id}/rates?priceBookId=${pb}`)).body.data;
    expect(bookRates.map((r: { id: string; status: string }) => [r.id, r.status])).toEqual([
      [v2.body.id, 'scheduled'],
      [v1.body.id, 'current'],
    ]);
    const defaultRates = (await call('GET', `/api/admin/models/${model.id}/rates`)).body.data;
    expect(defaultRates.map((r: { id: string; priceBookId: string | null }) => [r.id, r.priceBookId])).toEqual([[model.rateId, null]]);
    expect((await call('GET', `/api/admin/models/${model.id}/rates?priceBookId=${other}`)).body.data).toEqual([]);

    const view = (await call('GET', `/api/admin/models/${model.id}`)).body;
    expect(view).toMatchObject({ rates: { inputPer1M: '3', outputPer1M: '15' }, rateId: model.rateId, scheduledRates: [], callable: true });
    expect(view.priceBooks).toEqual([
      {
        priceBookId: pb,
        name: 'Resellers',
        rates: { inputPer1M: '2', outputPer1M: '10' },
        rateId: v1.body.id,
        ratesEffectiveAt: v1.body.effectiveAt,
        scheduledRates: [{ id: v2.body.id, rates: { inputPer1M: '1.5', outputPer1M: '9' }, effectiveAt: future }],
      },
    ]);

    // The gateway's catalog holds them, and rateAt picks each book's version in effect.
    const catalog = await s.running.ctx.catalog.get();
    const entry = catalog.models.get('book-model')!;
    expect(entry.rates.filter((r) => r.priceBookId === pb).map((r) => r.id)).toEqual([v1.body.id, v2.body.id]);
    expect(rateAt(entry, Date.now(), pb)?.id).toBe(v1.body.id);
    expect(rateAt(entry, Date.now() + 2 * hourMs, pb)?.id).toBe(v2.body.id);
    expect(rateAt(entry, before - hourMs, pb)).toBeNull();
    expect(rateAt(entry, Date.now() + 2 * hourMs)?.id).toBe(model.rateId);
    expect(rateAt(entry, Date.now(), other)).toBeNull();

    expectError(await call('POST', `/api/admin/models/${model.id}/rates`, { priceBookId: 'pb_missing', rates: { inputPer1M: '1' } }), 400, 'unknown_price_book', 'priceBookId');
    expectError(await call('GET', `/api/admin/models/${model.id}/rates?priceBookId=pb_missing`), 400, 'unknown_price_book', 'priceBookId');
    expectError(
      await call('POST', `/api/admin/models/${model.id}/rates`, { priceBookId: pb, rates: { inputPer1M: '1' }, effectiveAt: '2020-01-01T00:00:00Z' }),
      400,
      'invalid_effective_at',
      'effectiveAt',
    );

    // Assigned books cannot be deleted; unassigned ones go with their rates.
    const ws = await newWorkspace('Reseller A');
    await call('PATCH', `/api/admin/workspaces/${ws}`, { priceBookId: pb });
    expect((await call('GET', `/api/admin/price-books/${pb}`)).body).toMatchObject({ workspaceCount: 1, modelCount: 1 });
    expectError(await call('DELETE', `/api/admin/price-books/${pb}`), 409, 'price_book_in_use');
    await call('PATCH', `/api/admin/workspaces/${ws}`, { priceBookId: null });
    expect((await call('DELETE', `/api/admin/price-books/${pb}`)).body).toEqual({ id: pb, object: 'price_book', deleted: true });
    expectError(await call('GET', `/api/admin/price-books/${pb}`), 404, 'price_book_not_found');
    expectError(await call('DELETE', `/api/admin/price-books/${pb}`), 404, 'price_book_not_found');
    expect(await db().selectFrom('model_rates').select('id').where('price_book_id', '=', pb).execute()).toEqual([]);
    expect((await call('GET', `/api/admin/models/${model.id}`)).body.priceBooks).toEqual([]);
    expect((await s.running.ctx.catalog.get()).models.get('book-model')!.rates.map((r) => r.id)).toEqual([model.rateId]);
    expectError(await call('PATCH', `/api/admin/workspaces/${ws}`, { priceBookId: pb }), 400, 'unknown_price_book', 'priceBookId');
  });

  it('validates aliases: known plain models of the same workload, no cycles', async () => {
    const sonnet = await textModel('claude-sonnet');
    const gpt = await textModel('gpt-4o', null);
    const smart = await newModel({ name: 'smart', workload: 'text', aliasOf: ['claude-sonnet', 'gpt-4o'], routingStrategy: 'cost' });
    expect(smart).toMatchObject({ aliasOf: ['claude-sonnet', 'gpt-4o'], routingStrategy: 'cost', routes: [], rates: null, callable: true, notCallableReason: null });
    expect(sonnet).toMatchObject({ aliasOf: null, routingStrategy: 'weighted' });

    // Callable while any target is.
    await call('PATCH', `/api/admin/models/${sonnet.id}`, { status: 'inactive' });
    expect((await call('GET', `/api/admin/models/${smart.id}`)).body).toMatchObject({ callable: false, notCallableReason: 'None of the models this alias stands for is callable.' });
    await call('POST', `/api/admin/models/${gpt.id}/rates`, { rates: { inputPer1M: '2.5', outputPer1M: '10' } });
    expect((await call('GET', `/api/admin/models/${smart.id}`)).body.callable).toBe(true);
    const listed = (await call('GET', '/api/admin/models?limit=200')).body.data.find((m: { id: string }) => m.id === smart.id);
    expect(listed.callable).toBe(true);

    const catalog = await loadCatalog(db(), s.running.ctx.secrets);
    expect(catalog.models.get('smart')).toMatchObject({ aliasOf: ['claude-sonnet', 'gpt-4o'], routingStrategy: 'cost', routes: [], rates: [] });
    expect(catalog.models.get('gpt-4o')).toMatchObject({ aliasOf: null, routingStrategy: 'weighted' });

    const embed = await newModel({ name: 'embed-small', workload: 'embedding', routes: [] });
    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ name: 'a1', workload: 'text', aliasOf: ['claude-sonnet', 'nope'] }, 'unknown_model', 'aliasOf.1'],
      [{ name: 'a1', workload: 'text', aliasOf: ['smart'] }, 'alias_of_alias', 'aliasOf.0'],
      [{ name: 'a1', workload: 'text', aliasOf: ['a1'] }, 'alias_cycle', 'aliasOf.0'],
      [{ name: 'a1', workload: 'text', aliasOf: ['embed-small'] }, 'alias_workload_mismatch', 'aliasOf.0'],
      [{ name: 'a1', workload: 'text', aliasOf: [] }, 'invalid_alias_of', 'aliasOf'],
      [{ name: 'a1', workload: 'text', aliasOf: ['bad name'] }, 'invalid_alias_of', 'aliasOf.0'],
      [{ name: 'a1', workload: 'text', aliasOf: ['gpt-4o'], routes: [{ providerId: await provider(), upstreamModel: 'x' }] }, 'alias_has_routes', 'routes'],
      [{ name: 'a1', workload: 'text', aliasOf: ['gpt-4o'], rates: { inputPer1M: '1' } }, 'alias_has_rates', 'rates'],
      [{ name: 'a1', workload: 'text', routingStrategy: 'cheapest', routes: [] }, 'invalid_routing_strategy', 'routingStrategy'],
      [{ name: 'a1', workload: 'text' }, 'invalid_routes', 'routes'],
    ];
    for (const [body, code, param] of cases) expectError(await call('POST', '/api/admin/models', body), 400, code, param);
    expect(await db().selectFrom('models').select('id').where('name', '=', 'a1').execute()).toEqual([]);

    // A target turned into an alias of its own alias is a cycle; of anything else, a chain.
    expectError(await call('PATCH', `/api/admin/models/${gpt.id}`, { aliasOf: ['smart'], routes: [] }), 400, 'alias_cycle', 'aliasOf.0');
    const plain = await textModel('plain-model');
    expectError(await call('PATCH', `/api/admin/models/${sonnet.id}`, { aliasOf: ['plain-model'], routes: [] }), 400, 'alias_has_rates', 'aliasOf');
    const bare = await newModel({ name: 'bare', workload: 'text', routes: [] });
    const aliasOfBare = await newModel({ name: 'points-at-bare', workload: 'text', aliasOf: ['bare'] });
    expectError(await call('PATCH', `/api/admin/models/${bare.id}`, { aliasOf: ['plain-model'] }), 400, 'model_is_alias_target', 'aliasOf');
    expectError(await call('PATCH', `/api/admin/models/${bare.id}`, { workload: 'embedding' }), 400, 'alias_workload_mismatch', 'workload');
    expectError(await call('PATCH', `/api/admin/models/${smart.id}`, { aliasOf: ['smart'] }), 400, 'alias_cycle', 'aliasOf.0');
    expectError(await call('PATCH', `/api/admin/models/${smart.id}`, { routes: [{ providerId: await provider(), upstreamModel: 'x' }] }), 400, 'alias_has_routes', 'routes');
    expectError(await call('PATCH', `/api/admin/models/${smart.id}`, { workload: 'embedding' }), 400, 'alias_workload_mismatch', 'aliasOf.0');
    expectError(await call('POST', `/api/admin/models/${smart.id}/rates`, { rates: { inputPer1M: '1', outputPer1M: '1' } }), 400, 'alias_has_rates', 'rates');
    expectError(await call('DELETE', `/api/admin/models/${gpt.id}`), 409, 'model_in_use');
    expect((await call('GET', `/api/admin/models/${smart.id}`)).body).toMatchObject({ aliasOf: ['claude-sonnet', 'gpt-4o'], routes: [], workload: 'text' });

    // A plain model without routes or rates may become an alias, and back.
    const became = await call('PATCH', `/api/admin/models/${embed.id}`, { workload: 'text', aliasOf: ['plain-model', 'gpt-4o'] });
    expect(became.status, JSON.stringify(became.body)).toBe(200);
    expect(became.body).toMatchObject({ aliasOf: ['plain-model', 'gpt-4o'], callable: true });
    const back = await call('PATCH', `/api/admin/models/${embed.id}`, { aliasOf: null, routingStrategy: 'cost' });
    expect(back.body).toMatchObject({ aliasOf: null, routingStrategy: 'cost', callable: false });

    // Renaming a target keeps its aliases pointing at it.
    const renamed = await call('PATCH', `/api/admin/models/${gpt.id}`, { name: 'gpt-4o-2024' });
    expect(renamed.status).toBe(200);
    expect((await call('GET', `/api/admin/models/${smart.id}`)).body.aliasOf).toEqual(['claude-sonnet', 'gpt-4o-2024']);
    const switched = await call('PATCH', `/api/admin/models/${smart.id}`, { aliasOf: ['plain-model'], routingStrategy: 'weighted' });
    expect(switched.body).toMatchObject({ aliasOf: ['plain-model'], routingStrategy: 'weighted' });
    expect((await call('DELETE', `/api/admin/models/${gpt.id}`)).status).toBe(200);
    expect((await call('DELETE', `/api/admin/models/${aliasOfBare.id}`)).status).toBe(200);
    expect((await call('DELETE', `/api/admin/models/${bare.id}`)).status).toBe(200);
    expect(plain.aliasOf).toBeNull();
  });

  it('lists opted-in workspaces and stores, pages and expires their prompt logs', async () => {
    const logging = await newWorkspace('Logs on');
    const quiet = await newWorkspace('Logs off');
    await call('PATCH', `/api/admin/workspaces/${logging}`, { logging: { enabled: true, retentionDays: 14 } });
    await call('PATCH', `/api/admin/workspaces/${quiet}`, { logging: { enabled: false, retentionDays: 90 } });

    const nowMs = Date.now();
    for (let i = 0; i < 3; i++) {
      await storeRequestLog(db(), {
        requestId: `req_log_${logging}_${i}`,
        workspaceId: logging,
        requestBody: { model: 'smart', messages: [{ role: 'user', content: `hello ${i}` }] },
        responseBody: i === 2 ? null : `{"id":"r${i}"}`,
        retentionDays: 14,
        nowMs: nowMs + i,
      });
    }
    // A retry of the same request keeps the first log.
    await storeRequestLog(db(), { requestId: `req_log_${logging}_0`, workspaceId: logging, requestBody: 'other', responseBody: null, retentionDays: 14, nowMs });
    await expect(storeRequestLog(db(), { requestId: 'req_x', workspaceId: logging, requestBody: 'x', responseBody: null, retentionDays: 0 })).rejects.toThrow(RangeError);

    const opted = (await call('GET', '/api/admin/logging?limit=200')).body;
    const mine = opted.data.filter((w: { id: string }) => w.id === logging || w.id === quiet);
    expect(mine).toEqual([{ id: logging, object: 'logging_workspace', name: 'Logs on', retentionDays: 14, storedLogs: 3, oldestLogAt: new Date(nowMs).toISOString() }]);

    const page1 = (await call('GET', `/api/admin/workspaces/${logging}/request-logs?limit=2`)).body;
    expect(page1).toMatchObject({ object: 'list', hasMore: true });
    expect(page1.data.map((l: { id: string }) => l.id)).toEqual([`req_log_${logging}_2`, `req_log_${logging}_1`]);
    expect(page1.data[0]).toMatchObject({
      object: 'request_log',
      workspaceId: logging,
      requestBody: JSON.stringify({ model: 'smart', messages: [{ role: 'user', content: 'hello 2' }] }),
      responseBody: null,
      createdAt: new Date(nowMs + 2).toISOString(),
      expiresAt: new Date(nowMs + 2 + 14 * dayMs).toISOString(),
    });
    const page2 = (await call('GET', `/api/admin/workspaces/${logging}/request-logs?limit=2&cursor=${page1.nextCursor}`)).body;
    expect(page2).toMatchObject({ hasMore: false, nextCursor: null });
    expect(page2.data).toHaveLength(1);
    expect(page2.data[0]).toMatchObject({ id: `req_log_${logging}_0`, responseBody: '{"id":"r0"}' });
    expectError(await call('GET', `/api/admin/workspaces/${logging}/request-logs?limit=21`), 400, 'invalid_parameter', 'limit');
    expectError(await call('GET', '/api/admin/workspaces/ws_missing/request-logs'), 404, 'workspace_not_found');

    // Shortening the retention applies to the logs already stored.
    await call('PATCH', `/api/admin/workspaces/${logging}`, { logging: { enabled: true, retentionDays: 1 } });
    const expiries = await db().selectFrom('request_logs').select(['id', 'created_at', 'expires_at']).where('workspace_id', '=', logging).execute();
    for (const r of expiries) expect(Number(r.expires_at) - Number(r.created_at)).toBe(dayMs);

    // Retention: exactly the logs past their expiry go, whoever they belong to.
    const old = [`req_old_${quiet}_a`, `req_old_${quiet}_b`];
    for (const id of old) {
      await db()
        .insertInto('request_logs')
        .values({ id, workspace_id: quiet, request_body: '{}', response_body: null, created_at: nowMs - 100 * dayMs, expires_at: nowMs - 10 * dayMs })
        .execute();
    }
    await db()
      .insertInto('request_logs')
      .values({ id: `req_edge_${quiet}`, workspace_id: quiet, request_body: '{}', response_body: null, created_at: nowMs - dayMs, expires_at: nowMs + 1 })
      .execute();
    const allBefore = (await db().selectFrom('request_logs').select('id').execute()).map((r) => r.id).sort();
    expect(await deleteExpiredRequestLogs(db(), nowMs)).toBe(2);
    const allAfter = (await db().selectFrom('request_logs').select('id').execute()).map((r) => r.id).sort();
    expect(allAfter).toEqual(allBefore.filter((id) => !old.includes(id)));
    expect(await deleteExpiredRequestLogs(db(), nowMs)).toBe(0);
    expect(await deleteExpiredRequestLogs(db(), nowMs + 1)).toBe(1);
    // A day after they were written, the one-day retention takes the opted-in workspace's logs too.
    expect(await deleteExpiredRequestLogs(db(), nowMs + 2 + dayMs)).toBe(3);
    expect((await call('GET', `/api/admin/workspaces/${logging}/request-logs`)).body.data).toEqual([]);

    // The job runs the same deletion on its interval and stops cleanly.
    await db()
      .insertInto('request_logs')
      .values({ id: `req_job_${quiet}`, workspace_id: quiet, request_body: '{}', response_body: null, created_at: 0, expires_at: 1 })
      .execute();
    const stop = startRequestLogRetention(db(), createLogger({ logLevel: 'silent' }), 20);
    for (let i = 0; i < 100 && (await db().selectFrom('request_logs').select('id').where('id', '=', `req_job_${quiet}`).executeTakeFirst()); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    stop();
    expect(await db().selectFrom('request_logs').select('id').where('id', '=', `req_job_${quiet}`).executeTakeFirst()).toBeUndefined();

    await call('PATCH', `/api/admin/workspaces/${logging}`, { logging: { enabled: false } });
    expect((await call('GET', '/api/admin/logging?limit=200')).body.data.map((w: { id: string }) => w.id)).not.toContain(logging);
  });

  it('summarizes usage by key, model and key metadata', async () => {
    const ws = await newWorkspace('Usage Co');
    const mkKey = async (name: string, metadata: Record<string, string>) => (await call('POST', `/api/admin/workspaces/${ws}/keys`, { name, metadata })).body.id as string;
    const research = await mkKey('research', { department: 'research', customer: 'acme' });
    const sales = await mkKey('sales', { department: 'sales' });
    const misc = await mkKey('misc', {});
    const t0 = Date.parse('2026-03-01T00:00:00Z');
    let n = 0;
    const usage = async (keyId: string, model: string, inputTokens: number, outputTokens: number, chargeMicros: bigint, cost: [bigint, string] | null, atMs: number) => {
      await db()
        .insertInto('usage_records')
        .values({
          id: `use_${ws}_${n++}`,
          workspace_id: ws,
          key_id: keyId,
          endpoint: 'chat.completions',
          model,
          provider_id: null,
          upstream_model: null,
          route_id: null,
          rate_id: null,
          input_tokens: inputTokens,
          cached_input_tokens: 0,
          output_tokens: outputTokens,
          reasoning_tokens: 0,
          images: 0,
          estimated: 0,
          cost_nanos: cost ? cost[0] : null,
          cost_currency: cost ? cost[1] : null,
          charge_micros: chargeMicros,
          margin_nanos: null,
          balance_after_micros: null,
          hold_id: null,
          transfer_id: null,
          status: 'ok',
          error_code: null,
          stream: 0,
          latency_ms: null,
          ttfb_ms: null,
          attempts: 1,
          route_summary: null,
          created_at: atMs,
        })
        .execute();
    };
    await usage(research, 'smart', 100, 50, 1_500_000n, [1_000_000_000n, 'USD'], t0 + 1000);
    await usage(research, 'gpt-4o', 10, 5, 250_000n, [200_000_000n, 'EUR'], t0 + 2000);
    await usage(sales, 'smart', 1000, 500, 3_000_001n, [2_000_000_000n, 'USD'], t0 + 3000);
    await usage(misc, 'smart', 1, 1, 1n, null, t0 + 4000);
    // Before the range, at its (exclusive) end, and another workspace's usage: none counts.
    await usage(research, 'smart', 999, 999, 999_000_000n, null, t0 - 1);
    await usage(research, 'smart', 7, 7, 7n, null, t0 + dayMs);
    await usage(research, 'smart', 999, 999, 999_000_000n, null, t0 + 5000);
    const elsewhere = await newWorkspace('Elsewhere');
    await db().updateTable('usage_records').set({ workspace_id: elsewhere }).where('id', '=', `use_${ws}_${n - 1}`).execute();

    const range = `from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z`;
    const summary = async (groupBy: string) => {
      const r = await call('GET', `/api/admin/workspaces/${ws}/usage-summary?groupBy=${groupBy}&${range}`);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body;
    };
    const byKey = await summary('key');
    expect(byKey).toMatchObject({ object: 'usage_summary', workspaceId: ws, groupBy: 'key', from: '2026-03-01T00:00:00.000Z', to: '2026-03-02T00:00:00.000Z' });
    expect(byKey.data).toEqual([
      { group: sales, keyName: 'sales', requests: 1, inputTokens: 1000, outputTokens: 500, credits: '3.000001', cost: [{ amount: '2', currency: 'USD' }] },
      {
        group: research,
        keyName: 'research',
        requests: 2,
        inputTokens: 110,
        outputTokens: 55,
        credits: '1.75',
        cost: [
          { amount: '0.2', currency: 'EUR' },
          { amount: '1', currency: 'USD' },
        ],
      },
      { group: misc, keyName: 'misc', requests: 1, inputTokens: 1, outputTokens: 1, credits: '0.000001', cost: [] },
    ]);
    expect((await summary('model')).data).toEqual([
      { group: 'smart', requests: 3, inputTokens: 1101, outputTokens: 551, credits: '4.500002', cost: [{ amount: '3', currency: 'USD' }] },
      { group: 'gpt-4o', requests: 1, inputTokens: 10, outputTokens: 5, credits: '0.25', cost: [{ amount: '0.2', currency: 'EUR' }] },
    ]);
    expect((await summary('metadata.department')).data.map((r: { group: string | null; requests: number; credits: string }) => [r.group, r.requests, r.credits])).toEqual([
      ['sales', 1, '3.000001'],
      ['research', 2, '1.75'],
      [null, 1, '0.000001'],
    ]);
    expect((await summary('metadata.customer')).data.map((r: { group: string | null; credits: string }) => [r.group, r.credits])).toEqual([
      [null, '3.000002'],
      ['acme', '1.75'],
    ]);
    // Metadata changed later regroups past usage by the key's current metadata.
    await call('PATCH', `/api/admin/workspaces/${ws}/keys/${misc}`, { metadata: { department: 'sales' } });
    expect((await summary('metadata.department')).data.map((r: { group: string | null; requests: number; credits: string }) => [r.group, r.requests, r.credits])).toEqual([
      ['sales', 2, '3.000002'],
      ['research', 2, '1.75'],
    ]);
    const later = await call('GET', `/api/admin/workspaces/${ws}/usage-summary?groupBy=model&from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z`);
    expect(later.body.data).toEqual([{ group: 'smart', requests: 1, inputTokens: 7, outputTokens: 7, credits: '0.000007', cost: [] }]);
    const empty = await call('GET', `/api/admin/workspaces/${ws}/usage-summary?groupBy=metadata.department&from=2025-01-01&to=2025-02-01`);
    expect(empty.body.data).toEqual([]);

    expectError(await call('GET', `/api/admin/workspaces/${ws}/usage-summary?groupBy=provider`), 400, 'invalid_group_by', 'groupBy');
    expectError(await call('GET', `/api/admin/workspaces/${ws}/usage-summary?groupBy=metadata.`), 400, 'invalid_group_by', 'groupBy');
    expectError(await call('GET', `/api/admin/workspaces/${ws}/usage-summary?from=2026-03-02&to=2026-03-01`), 400, 'invalid_time_range', 'from');
    expectError(await call('GET', `/api/admin/workspaces/${ws}/usage-summary?from=2024-01-01&to=2026-03-01`), 400, 'invalid_time_range', 'from');
    expectError(await call('GET', `/api/admin/workspaces/${ws}/usage-summary?from=yesterday`), 400, 'invalid_time', 'from');
    expectError(await call('GET', '/api/admin/workspaces/ws_missing/usage-summary'), 404, 'workspace_not_found');
  });
});

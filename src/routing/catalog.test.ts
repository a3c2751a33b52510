import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kysely } from 'kysely';
import { engines, openTestStore, type TestStore } from '../../test/helpers/store.ts';
import { QueryCounter } from '../../test/helpers/query-counter.ts';
import type { Database } from '../store/schema.ts';
import { SecretBox } from '../lib/secrets.ts';
import { callabilityOf, loadCatalog } from './catalog.ts';
import { CatalogCache } from './catalog-cache.ts';
import { addRates, createModel } from './models.ts';
import { addCredential, createProvider, updateProvider } from './providers.ts';
import { unitMargins } from '../pricing/margin.ts';
import type { ModelEntry } from './types.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(engines)('catalog on %s', (engine) => {
  let t: TestStore;
  let db: Kysely<Database>;
  const secrets = new SecretBox(randomBytes(32).toString('hex'));

  beforeAll(async () => {
    t = await openTestStore(engine);
    db = t.store.db;
  });
  afterAll(async () => t?.close());

  it('loads exactly the Catalog the gateway reads', async () => {
    const openai = await createProvider(db, secrets, { name: 'OpenAI', type: 'openai', apiKey: 'sk-one-0123456789abcdef', regions: ['us'] });
    await addCredential(db, secrets, openai.id, { label: 'second', apiKey: 'sk-two-0123456789abcdef' });
    const azure = await createProvider(db, secrets, { name: 'Azure', type: 'azure-openai', baseUrl: 'https://acme.openai.azure.com', apiVersion: '2024-10-21', retention: 'zero', status: 'inactive', resale: 'pending', timeoutMs: 20_000 });
    const now = Date.now();
    const model = await createModel(
      db,
      {
        name: 'nova-lite',
        workload: 'text',
        maxOutputTokens: 4096,
        routes: [
          { providerId: azure.id, upstreamModel: 'nova-deploy', priority: 2, weight: 5, region: 'eu', cost: { currency: 'USD', inputPer1M: '0.5' } },
          { providerId: openai.id, upstreamModel: 'gpt-4o-mini' },
        ],
        rates: { inputPer1M: '1', outputPer1M: '4' },
        ratesEffectiveAt: now - 1000,
      },
      now,
    );
    const future = await addRates(db, model.id, { rates: { inputPer1M: '2', outputPer1M: '8' }, effectiveAtMs: now + 60_000 }, now);

    const catalog = await loadCatalog(db, secrets);
    const o = catalog.providers.get(openai.id)!;
    expect(o).toEqual({
      id: openai.id,
      name: 'OpenAI',
      type: 'openai',
      baseUrl: 'https://api.openai.com/v1',
      apiVersion: null,
      regions: ['us'],
      retention: 'standard',
      status: 'active',
      resale: 'approved',
      timeoutMs: 60_000,
      credentials: [
        { id: openai.credentials[0].id, label: 'default', apiKey: 'sk-one-0123456789abcdef' },
        { id: expect.stringMatching(/^cred_/), label: 'second', apiKey: 'sk-two-0123456789abcdef' },
      ],
    });
    expect(catalog.providers.get(azure.id)).toMatchObject({ baseUrl: 'https://acme.openai.azure.com', apiVersion: '2024-10-21', retention: 'zero', status: 'inactive', resale: 'pending', timeoutMs: 20_000, credentials: [] });

    const entry = catalog.models.get('nova-lite')!;
    expect(entry).toMatchObject({ id: model.id, name: 'nova-lite', workload: 'text', description: null, maxOutputTokens: 4096, status: 'active', createdAt: now });
    expect(entry.routes.map((r) => [r.provider, r.upstreamModel, r.priority, r.weight, r.region, r.cost])).toEqual([
      [o, 'gpt-4o-mini', 1, 1, null, null],
      [catalog.providers.get(azure.id), 'nova-deploy', 2, 5, 'eu', { currency: 'USD', inputPer1M: '0.5' }],
    ]);
    expect(entry.rates).toEqual([
      { id: model.rates[0].id, priceBookId: null, effectiveAt: now - 1000, rates: { inputPer1M: '1', outputPer1M: '4' } },
      { id: future.id, priceBookId: null, effectiveAt: now + 60_000, rates: { inputPer1M: '2', outputPer1M: '8' } },
    ]);
    expect(callabilityOf(entry, now)).toEqual({ callable: true, reason: null });
  });

  it('fails loudly when a credential cannot be decrypted', async () => {
    const other = new SecretBox(randomBytes(32).toString('hex'));
    await expect(loadCatalog(db, other)).rejects.toThrow(/cannot decrypt credential cred_/);
  });

  it('serves the cached catalog with no query until invalidated, sharing one reload', async () => {
    const counter = new QueryCounter();
    const cache = new CatalogCache(db.withPlugin(counter), secrets, { refreshMs: 0 });
    const first = await cache.get();
    const perLoad = counter.count;
    expect(perLoad).toBeGreaterThan(0);

    const provider = await createProvider(db, secrets, { name: 'Cached', type: 'sandbox' });
    for (let i = 0; i < 100; i++) expect(await cache.get()).toBe(first);
    expect(counter.count).toBe(perLoad);
    expect(first.providers.has(provider.id)).toBe(false);

    cache.invalidate();
    const [a, b, c] = await Promise.all([cache.get(), cache.get(), cache.get()]);
    expect(counter.count).toBe(2 * perLoad);
    expect(a).toBe(b);
    expect(b).toBe(c);
    expect(a.providers.get(provider.id)?.name).toBe('Cached');

    await updateProvider(db, provider.id, { name: 'Renamed' });
    await db.deleteFrom('providers').where('id', '=', provider.id).execute();
    expect((await cache.get()).providers.get(provider.id)?.name).toBe('Cached');
    cache.invalidate();
    expect((await cache.get()).providers.has(provider.id)).toBe(false);
    expect(counter.count).toBe(3 * perLoad);
  });

  it('does not let a load that began before invalidate() satisfy it', async () => {
    const cache = new CatalogCache(db, secrets, { refreshMs: 0 });
    await cache.get();
    cache.invalidate();
    const stale = cache.get();
    const provider = await createProvider(db, secrets, { name: 'Raced', type: 'sandbox' });
    cache.invalidate();
    await stale;
    expect((await cache.get()).providers.has(provider.id)).toBe(true);
  });

  it('reloads in the background to see other processes’ changes', async () => {
    const cache = new CatalogCache(db, secrets, { refreshMs: 50 });
    try {
      const before = await cache.get();
      // Another process's write: no invalidate() reaches this cache.
      const provider = await createProvider(db, secrets, { name: 'Elsewhere', type: 'sandbox' });
      let seen = before;
      for (let i = 0; i < 100 && !seen.providers.has(provider.id); i++) {
        await sleep(20);
        seen = await cache.get();
      }
      expect(seen.providers.get(provider.id)?.name).toBe('Elsewhere');
    } finally {
      cache.close();
    }
  });
});

describe('callability and margins', () => {
  const model = (over: Partial<ModelEntry> = {}): Pick<ModelEntry, 'status' | 'workload' | 'routes' | 'rates'> => ({
    status: 'active',
    workload: 'text',
    routes: [{ provider: { status: 'active' } }] as ModelEntry['routes'],
    rates: [{ id: 'rate_1', priceBookId: null, effectiveAt: 1000, rates: { inputPer1M: '1', outputPer1M: '2' } }],
    ...over,
  });

  it('fails closed', () => {
    expect(callabilityOf(model(), 2000).callable).toBe(true);
    expect(callabilityOf(model(), 999)).toEqual({ callable: false, reason: 'No rates are in effect for this model yet.' });
    expect(callabilityOf(model({ status: 'inactive' }), 2000).reason).toBe('The model is inactive.');
    expect(callabilityOf(model({ workload: 'image' }), 2000).reason).toContain('perImage or perRequest');
    expect(callabilityOf(model({ routes: [{ provider: { status: 'inactive' } }] as ModelEntry['routes'] }), 2000).reason).toBe('No route goes to an active provider.');
    // A price book's rates are not the default rates.
    expect(callabilityOf(model({ rates: [{ id: 'rate_2', priceBookId: 'pb_1', effectiveAt: 0, rates: { inputPer1M: '1', outputPer1M: '2' } }] }), 2000).callable).toBe(false);
  });

  it('computes margins with the same fallbacks as billing', () => {
    expect(unitMargins({ inputPer1M: '3', outputPer1M: '15', reasoningPer1M: '20' }, { currency: 'USD', inputPer1M: '2.5', cachedInputPer1M: '0.25', outputPer1M: '10' })).toEqual([
      { unit: 'inputPer1M', price: '3', cost: '2.5', margin: '0.5' },
      { unit: 'cachedInputPer1M', price: '3', cost: '0.25', margin: '2.75' },
      { unit: 'outputPer1M', price: '15', cost: '10', margin: '5' },
      { unit: 'reasoningPer1M', price: '20', cost: '10', margin: '10' },
    ]);
    expect(unitMargins({ perImage: '0.01' }, { currency: 'USD', perImage: '0.04', perRequest: '0.001' })).toEqual([
      { unit: 'perImage', price: '0.01', cost: '0.04', margin: '-0.03' },
      { unit: 'perRequest', price: '0', cost: '0.001', margin: '-0.001' },
    ]);
  });
});

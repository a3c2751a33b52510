import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kysely } from 'kysely';
import { engines, openTestStore, type TestStore } from '../../test/helpers/store.ts';
import { QueryCounter } from '../../test/helpers/query-counter.ts';
import type { Database } from '../store/schema.ts';
import { sha256Hex } from '../lib/secrets.ts';
import { createWorkspace } from '../workspaces/workspaces.ts';
import { KeyCache, createApiKey, listApiKeys, revokeApiKey } from './keys.ts';

const unknownKey = (i: number) => `tg_live_${String(i).padStart(32, 'x')}`;

describe.each(engines)('API keys on %s', (engine) => {
  let t: TestStore;
  let db: Kysely<Database>;
  let workspaceId: string;

  beforeAll(async () => {
    t = await openTestStore(engine);
    db = t.store.db;
    workspaceId = (await createWorkspace(db, { name: 'Keys' })).id;
  });
  afterAll(async () => t?.close());

  it('creates a key stored only as its hash, with a display prefix', async () => {
    const { apiKey, key } = await createApiKey(db, workspaceId, { name: 'prod', scopes: ['chat.completions'], models: ['nova-pro'] });
    expect(key).toMatch(/^tg_live_[A-Za-z0-9]{32}$/);
    expect(apiKey).toMatchObject({ workspaceId, name: 'prod', prefix: key.slice(0, 12), scopes: ['chat.completions'], models: ['nova-pro'], status: 'active', expiresAt: null, revokedAt: null });
    const row = await db.selectFrom('api_keys').selectAll().where('id', '=', apiKey.id).executeTakeFirstOrThrow();
    expect(row.hash).toBe(sha256Hex(key));
    expect(Object.values(row).some((v) => typeof v === 'string' && v.includes(key))).toBe(false);
    const listed = await listApiKeys(db, workspaceId, { limit: 10 });
    expect(listed.data.map((k) => k.id)).toContain(apiKey.id);
  });

  it('answers from memory after the first lookup, until invalidated', async () => {
    const { apiKey, key } = await createApiKey(db, workspaceId, { name: 'cached', metadata: { team: 'search' } });
    const counter = new QueryCounter();
    const cache = new KeyCache(db.withPlugin(counter));
    const entry = await cache.authenticate(key);
    expect(entry).toEqual({
      id: apiKey.id,
      workspaceId,
      name: 'cached',
      scopes: apiKey.scopes,
      models: null,
      status: 'active',
      expiresAt: null,
      metadata: { team: 'search' },
      limits: { budget: null, rpm: null, tpm: null },
    });
    expect(counter.count).toBe(1);
    for (let i = 0; i < 100; i++) expect(await cache.authenticate(key)).toBe(entry);
    expect(counter.count).toBe(1);

    // Revoked elsewhere (no invalidate reaches this cache): the cached answer stands until invalidate().
    await revokeApiKey(db, workspaceId, apiKey.id);
    expect((await cache.authenticate(key))?.status).toBe('active');
    cache.invalidate();
    expect(await cache.authenticate(key)).toMatchObject({ id: apiKey.id, status: 'revoked' });
    expect(counter.count).toBe(2);

    await db.deleteFrom('api_keys').where('id', '=', apiKey.id).execute();
    expect((await cache.authenticate(key))?.id).toBe(apiKey.id);
    cache.invalidate();
    expect(await cache.authenticate(key)).toBeNull();
  });

  it('returns expired keys as they are, for the gateway to name the reason', async () => {
    const nowMs = Date.now();
    const { key } = await createApiKey(db, workspaceId, { name: 'short-lived', expiresAtMs: nowMs + 1000 }, nowMs);
    const cache = new KeyCache(db, { now: () => nowMs + 5000 });
    expect(await cache.authenticate(key)).toMatchObject({ status: 'active', expiresAt: nowMs + 1000 });
  });

  it('refuses malformed tokens without a query and shares concurrent lookups', async () => {
    const { key } = await createApiKey(db, workspaceId, { name: 'shared' });
    const counter = new QueryCounter();
    const cache = new KeyCache(db.withPlugin(counter));
    for (const bad of ['', 'sk-openai-key', 'tg_live_short', `tg_live_${'a'.repeat(200)}`, `${key} `, 'tg_live_ab$cdefghijklmnopqrstuvwxyz012345']) {
      expect(await cache.authenticate(bad)).toBeNull();
    }
    expect(counter.count).toBe(0);
    const answers = await Promise.all(Array.from({ length: 20 }, () => cache.authenticate(key)));
    expect(new Set(answers).size).toBe(1);
    expect(answers[0]?.name).toBe('shared');
    expect(counter.count).toBe(1);
  });

  it('remembers unknown keys briefly, in bounded memory', async () => {
    let nowMs = 1_000_000;
    const counter = new QueryCounter();
    const cache = new KeyCache(db.withPlugin(counter), { now: () => nowMs, negativeTtlMs: 5000, maxUnknownKeys: 3 });
    expect(await cache.authenticate(unknownKey(1))).toBeNull();
    expect(await cache.authenticate(unknownKey(1))).toBeNull();
    expect(counter.count).toBe(1);
    nowMs += 5001;
    expect(await cache.authenticate(unknownKey(1))).toBeNull();
    expect(counter.count).toBe(2);

    // A flood of distinct bad keys pushes the oldest out instead of growing the map.
    for (let i = 2; i <= 4; i++) await cache.authenticate(unknownKey(i));
    expect(counter.count).toBe(5);
    await cache.authenticate(unknownKey(4));
    expect(counter.count).toBe(5);
    await cache.authenticate(unknownKey(1));
    expect(counter.count).toBe(6);
  });

  it('reloads a found key after its time-to-live, so revocations elsewhere show', async () => {
    let nowMs = Date.now();
    const { apiKey, key } = await createApiKey(db, workspaceId, { name: 'ttl' }, nowMs);
    const cache = new KeyCache(db, { now: () => nowMs, ttlMs: 30_000 });
    expect((await cache.authenticate(key))?.status).toBe('active');
    await revokeApiKey(db, workspaceId, apiKey.id);
    nowMs += 29_000;
    expect((await cache.authenticate(key))?.status).toBe('active');
    nowMs += 2000;
    expect((await cache.authenticate(key))?.status).toBe('revoked');
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';

describe.each(engines)('admin API on %s', (engine) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(engine);
  });
  afterAll(async () => s?.close());

  const newWorkspace = async (name = 'Acme') => {
    const r = await s.admin('POST', '/api/admin/workspaces', { name });
    expect(r.status).toBe(201);
    return r.body.id as string;
  };

  it('rejects requests without the master key', async () => {
    const r = await fetch(`${s.url}/api/admin/workspaces`);
    expect(r.status).toBe(401);
    expect(((await r.json()) as any).error).toMatchObject({ type: 'authentication_error', code: 'invalid_master_key' });
    const wrong = await fetch(`${s.url}/api/admin/workspaces`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
  });

  it('serves health and readiness', async () => {
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${s.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as any).database).toBe(engine);
  });

  it('creates, reads, lists and paginates workspaces', async () => {
    const ids = [await newWorkspace('One'), await newWorkspace('Two'), await newWorkspace('Three')];
    expect(ids.every((id) => id.startsWith('ws_'))).toBe(true);
    const got = await s.admin('GET', `/api/admin/workspaces/${ids[0]}`);
    expect(got.body).toMatchObject({ id: ids[0], object: 'workspace', name: 'One', overdraftLimit: '0', warningLimit: null });
    const page1 = await s.admin('GET', '/api/admin/workspaces?limit=2');
    expect(page1.body.data).toHaveLength(2);
    expect(page1.body.hasMore).toBe(true);
    const page2 = await s.admin('GET', `/api/admin/workspaces?limit=2&cursor=${page1.body.nextCursor}`);
    const seen = [...page1.body.data, ...page2.body.data].map((w: { id: string }) => w.id);
    expect(new Set(seen).size).toBe(seen.length);
    for (const id of ids) expect(seen).toContain(id);
    expect((await s.admin('GET', '/api/admin/workspaces/ws_missing')).status).toBe(404);
  });

  it('grants credits exactly and idempotently', async () => {
    const id = await newWorkspace();
    const g = await s.admin('POST', `/api/admin/workspaces/${id}/grants`, { credits: '4700.25', source: 'purchase' }, { 'idempotency-key': 'order-1' });
    expect(g.status).toBe(201);
    expect(g.body).toMatchObject({ object: 'lot', credits: '4700.25', remaining: '4700.25', source: 'purchase' });
    const again = await s.admin('POST', `/api/admin/workspaces/${id}/grants`, { credits: '4700.25', source: 'purchase' }, { 'idempotency-key': 'order-1' });
    expect(again.status).toBe(201);
    expect(again.body.id).toBe(g.body.id);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    const clash = await s.admin('POST', `/api/admin/workspaces/${id}/grants`, { credits: '1', source: 'purchase' }, { 'idempotency-key': 'order-1' });
    expect(clash.status).toBe(409);
    expect(clash.body.error.code).toBe('idempotency_key_reused');
    const num = await s.admin('POST', `/api/admin/workspaces/${id}/grants`, { credits: 0.000001 });
    expect(num.body.credits).toBe('0.000001');
    const b = await s.admin('GET', `/api/admin/workspaces/${id}/balance`);
    expect(b.body).toMatchObject({ available: '4700.250001', balance: '4700.250001', purchased: '4700.25', totalGranted: '4700.250001', pending: '0' });
    const tx = await s.admin('GET', `/api/admin/workspaces/${id}/transactions?kind=grant`);
    expect(tx.body.data.map((t: { credits: string }) => t.credits)).toEqual(['0.000001', '4700.25']);
    const hist = await s.admin('GET', `/api/admin/workspaces/${id}/balance-history?granularity=month`);
    expect(hist.body.data.at(-1).balance).toBe('4700.250001');
    const lots = await s.admin('GET', `/api/admin/workspaces/${id}/lots`);
    expect(lots.body.data).toHaveLength(2);
  });

  it('rejects bad input with a clear error and changes nothing', async () => {
    const id = await newWorkspace();
    const grant = (body: unknown, headers: Record<string, string> = {}) => s.admin('POST', `/api/admin/workspaces/${id}/grants`, body, headers);
    const cases: Array<[unknown, number, string]> = [
      [{ credits: '-5' }, 400, 'invalid_amount'],
      [{ credits: 0 }, 400, 'invalid_amount'],
      [{ credits: '1.0000001' }, 400, 'invalid_amount'],
      [{ credits: 'ten' }, 400, 'invalid_amount'],
      [{ credits: 1e21 }, 400, 'invalid_amount'],
      [{ credits: '1', source: 'gift' }, 400, 'invalid_source'],
      [{ credits: '1', expiresAt: 'yesterday' }, 400, 'invalid_time'],
      [{ credits: '1', expiresAt: '2001-01-01T00:00:00Z' }, 400, 'invalid_expiry'],
      [{}, 400, 'invalid_parameter'],
      [{ credits: '1', surprise: true }, 400, 'invalid_parameter'],
      ['{"credits": "1"', 400, 'invalid_json'],
    ];
    for (const [body, status, code] of cases) {
      const r = await grant(body);
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(r.body.error.code, JSON.stringify(body)).toBe(code);
      expect(r.body.error.type).toBe('invalid_request_error');
    }
    const big = await grant({ credits: '1', note: 'x'.repeat(2 * 1024 * 1024) });
    expect(big.status).toBe(413);
    const missing = await s.admin('POST', '/api/admin/workspaces/ws_nope/grants', { credits: '1' });
    expect(missing.status).toBe(404);
    expect(missing.body.error.type).toBe('not_found_error');
    const b = await s.admin('GET', `/api/admin/workspaces/${id}/balance`);
    expect(b.body.totalGranted).toBe('0');
    expect((await s.admin('PATCH', `/api/admin/workspaces/${id}`, { overdraftLimit: '-1' })).status).toBe(400);
    expect((await s.admin('POST', '/api/admin/workspaces', { name: '' })).status).toBe(400);
  });

  it('updates warning and overdraft limits and writes a warning event when crossed', async () => {
    const id = await newWorkspace();
    const p = await s.admin('PATCH', `/api/admin/workspaces/${id}`, { warningLimit: '5', overdraftLimit: '2.5', name: 'Renamed' });
    expect(p.status).toBe(200);
    expect(p.body).toMatchObject({ name: 'Renamed', warningLimit: '5', overdraftLimit: '2.5' });
    await s.admin('POST', `/api/admin/workspaces/${id}/grants`, { credits: '10' });
    const { ledger, store } = s.running.ctx;
    const h = await ledger.hold({ workspaceId: id, amountMicros: 12_500_000n, timeoutMs: 60_000, idempotencyKey: `t-${id}` });
    expect(h.ok).toBe(true);
    if (!h.ok) return;
    await ledger.settle({ workspaceId: id, holdId: h.holdId, actualMicros: 12_000_000n });
    const b = await s.admin('GET', `/api/admin/workspaces/${id}/balance`);
    expect(b.body).toMatchObject({ balance: '-2', available: '0.5' });
    const events = await store.db.selectFrom('outbox').selectAll().where('workspace_id', '=', id).execute();
    expect(events.map((e) => e.topic)).toEqual(['balance.warning']);
    const tx = await s.admin('GET', `/api/admin/workspaces/${id}/transactions?kind=usage`);
    expect(tx.body.data[0]).toMatchObject({ credits: '-12', overdrawn: '2', balanceAfter: '-2' });
    // A top-up repays the debt first.
    const g = await s.admin('POST', `/api/admin/workspaces/${id}/grants`, { credits: '3' });
    expect(g.body).toMatchObject({ credits: '3', remaining: '1', repaidDebt: '2' });
    expect(await verifyLedger(store.db)).toEqual([]);
  });
});

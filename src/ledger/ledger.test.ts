import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines, openTestStore, type TestStore } from '../../test/helpers/store.ts';
import { createWorkspace } from '../workspaces/workspaces.ts';
import { Ledger } from './ledger.ts';
import { balanceOf, listTransactions, balanceHistory } from './reads.ts';
import { verifyLedger } from './verify.ts';
import { parseCredits as c } from './money.ts';

describe.each(engines)('ledger on %s', (engine) => {
  let t: TestStore;
  let ledger: Ledger;
  let clock = Date.UTC(2026, 0, 1);
  beforeAll(async () => {
    t = await openTestStore(engine);
    ledger = new Ledger(t.store, { now: () => clock });
  });
  afterAll(async () => t?.close());

  const ws = async (name = 'acme') => (await createWorkspace(t.store.db, { name }, clock)).id;

  it('grants, holds, settles and voids with exact balances', async () => {
    const id = await ws();
    const g = await ledger.grant({ workspaceId: id, amountMicros: c('10'), source: 'purchase', idempotencyKey: 'g1' });
    expect(g.replayed).toBe(false);
    const h = await ledger.hold({ workspaceId: id, amountMicros: c('4'), timeoutMs: 60_000, idempotencyKey: 'r1' });
    expect(h.ok).toBe(true);
    let b = await balanceOf(t.store.db, id);
    expect(b.availableMicros).toBe(c('6'));
    expect(b.pendingMicros).toBe(c('4'));
    const s = await ledger.settle({ workspaceId: id, holdId: h.holdId, actualMicros: c('1.000001'), model: 'm' });
    expect(s.chargedMicros).toBe(1_000_001n);
    expect(s.releasedMicros).toBe(c('2.999999'));
    b = await balanceOf(t.store.db, id);
    expect(b.balanceMicros).toBe(c('8.999999'));
    expect(b.availableMicros).toBe(c('8.999999'));
    expect(b.consumedMicros).toBe(1_000_001n);
    const h2 = await ledger.hold({ workspaceId: id, amountMicros: c('8.999999'), timeoutMs: 60_000, idempotencyKey: 'r2' });
    expect(h2.ok).toBe(true);
    const v = await ledger.void(id, h2.holdId);
    expect(v.releasedMicros).toBe(c('8.999999'));
    const refused = await ledger.hold({ workspaceId: id, amountMicros: c('9'), timeoutMs: 60_000, idempotencyKey: 'r3' });
    expect(refused.ok).toBe(false);
    const tx = await listTransactions(t.store.db, id, {});
    expect(tx.data.map((x) => [x.kind, x.amountMicros])).toEqual([
      ['usage', -1_000_001n],
      ['grant', c('10')],
    ]);
    const hist = await balanceHistory(t.store.db, t.store.engine, id, 'day', clock - 86_400_000, clock + 1);
    expect(hist.at(-1)!.balanceMicros).toBe(c('8.999999'));
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('stamps each write with the time it was posted, so ids list in posting order with consistent balances', async () => {
    // A settlement queued at T that runs after a write stamped T+1 (another workspace's, first in
    // the same batch) must not be stamped T: its id would sort before an earlier settlement's.
    let now = Date.UTC(2026, 1, 1);
    const ordered = new Ledger(t.store, { now: () => now });
    const first = await ws('order-first');
    const second = await ws('order-second');
    for (const id of [first, second]) await ordered.grant({ workspaceId: id, amountMicros: c('100'), source: 'purchase', idempotencyKey: `order-g-${id}` });
    now += 1000;
    const h1 = await ordered.hold({ workspaceId: second, amountMicros: c('1'), timeoutMs: 60_000, idempotencyKey: 'order-h1' });
    const h2 = await ordered.hold({ workspaceId: second, amountMicros: c('1'), timeoutMs: 60_000, idempotencyKey: 'order-h2' });
    if (!h1.ok || !h2.ok) throw new Error('refused');
    await ordered.settle({ workspaceId: second, holdId: h1.holdId, actualMicros: 1000n });
    const later = ordered.settle({ workspaceId: second, holdId: h2.holdId, actualMicros: 2000n });
    now += 1;
    const other = ordered.hold({ workspaceId: first, amountMicros: c('1'), timeoutMs: 60_000, idempotencyKey: 'order-h3' });
    await Promise.all([later, other]);
    const { data } = await listTransactions(t.store.db, second, {});
    expect(data.map((x) => x.amountMicros)).toEqual([-2000n, -1000n, c('100')]);
    expect(data.map((x) => x.balanceAfterMicros)).toEqual([c('99.997'), c('99.999'), c('100')]);
    expect(data[0].createdAt).toBe(now);
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('gathers writes that arrive over a few turns of the event loop into one batch once writes come together', async () => {
    const turn = () => new Promise((r) => setImmediate(r));
    const spreadOverTurns = async (l: Ledger, id: string, prefix: string) => {
      // Two writes together (the lane's last batch then carries more than one), then one write per turn.
      await Promise.all([0, 1].map((i) => l.hold({ workspaceId: id, amountMicros: 1000n, timeoutMs: 60_000, idempotencyKey: `${prefix}-pair-${i}` })));
      const before = l.writer.stats.batches;
      const spread = [];
      for (let i = 0; i < 5; i++) {
        spread.push(l.hold({ workspaceId: id, amountMicros: 1000n, timeoutMs: 60_000, idempotencyKey: `${prefix}-spread-${i}` }));
        await turn();
      }
      const held = await Promise.all(spread);
      expect(held.every((h) => h.ok)).toBe(true);
      return l.writer.stats.batches - before;
    };
    const id = await ws('gather');
    await ledger.grant({ workspaceId: id, amountMicros: c('1'), source: 'purchase', idempotencyKey: 'gather-g' });
    expect(await spreadOverTurns(new Ledger(t.store, { now: () => clock, gatherTurns: 8 }), id, 'g8')).toBe(1);
    expect(await spreadOverTurns(new Ledger(t.store, { now: () => clock, gatherTurns: 0 }), id, 'g0')).toBeGreaterThan(1);
    const b = await balanceOf(t.store.db, id);
    expect(b.pendingMicros).toBe(14_000n);
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('lets deferrable writes wait for company, and commits them at once when a write someone waits on joins them or the ledger drains', async () => {
    const id = await ws('defer');
    await ledger.grant({ workspaceId: id, amountMicros: c('1'), source: 'purchase', idempotencyKey: 'defer-g' });
    // A deferral longer than the test: only another write or a drain can start these batches.
    const l = new Ledger(t.store, { now: () => clock, deferMs: 60_000 });
    const holds = [];
    for (let i = 0; i < 5; i++) {
      const h = await l.hold({ workspaceId: id, amountMicros: 10_000n, timeoutMs: 60_000, idempotencyKey: `defer-h${i}` });
      if (!h.ok) throw new Error('hold refused');
      holds.push(h.holdId);
    }
    const settled: string[] = [];
    const settle = (holdId: string) =>
      l.settle({ workspaceId: id, holdId, actualMicros: 1_000n }, { deferrable: true }).then((r) => {
        settled.push(holdId);
        return r;
      });

    const batches = l.writer.stats.batches;
    const firstTwo = [settle(holds[0]), settle(holds[1])];
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toEqual([]);
    expect(l.writer.stats.batches).toBe(batches);
    // A write its caller waits on starts the batch, the deferred ones in it.
    const joined = await l.hold({ workspaceId: id, amountMicros: 10_000n, timeoutMs: 60_000, idempotencyKey: 'defer-join' });
    expect(joined.ok).toBe(true);
    await Promise.all(firstTwo);
    expect(settled).toEqual([holds[0], holds[1]]);
    expect(l.writer.stats.batches).toBe(batches + 1);

    const nextTwo = [settle(holds[2]), settle(holds[3])];
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toHaveLength(2);
    await l.drain();
    await Promise.all(nextTwo);
    expect(settled).toHaveLength(4);
    expect(l.writer.stats.batches).toBe(batches + 2);

    // With a short deferral, a deferrable write commits on its own.
    const soon = new Ledger(t.store, { now: () => clock, deferMs: 5 });
    expect((await soon.settle({ workspaceId: id, holdId: holds[4], actualMicros: 1_000n }, { deferrable: true })).chargedMicros).toBe(1_000n);
    const b = await balanceOf(t.store.db, id);
    expect(b.consumedMicros).toBe(5_000n);
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('stops gathering after gatherMaxMs when the turns of the event loop are long', async () => {
    const id = await ws('gather-cap');
    await ledger.grant({ workspaceId: id, amountMicros: c('1'), source: 'purchase', idempotencyKey: 'gather-cap-g' });
    const capped = new Ledger(t.store, { now: () => clock, gatherTurns: 1000, gatherMaxMs: 20 });
    await Promise.all([0, 1].map((i) => capped.hold({ workspaceId: id, amountMicros: 1000n, timeoutMs: 60_000, idempotencyKey: `cap-pair-${i}` })));
    // Turns of 5 ms each (a busy event loop); the write must not wait for 1000 of them.
    let turnsSeen = 0;
    let stop = false;
    const busyTurn = () => {
      const until = performance.now() + 5;
      while (performance.now() < until);
      turnsSeen++;
      if (!stop && turnsSeen < 200) setImmediate(busyTurn);
    };
    setImmediate(busyTurn);
    const held = await capped.hold({ workspaceId: id, amountMicros: 1000n, timeoutMs: 60_000, idempotencyKey: 'cap-late' });
    const turnsAtCommit = turnsSeen;
    stop = true;
    expect(held.ok).toBe(true);
    // 20 ms is 4 or 5 turns of 5 ms; the PostgreSQL round trips add a few more.
    expect(turnsAtCommit).toBeLessThan(50);
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });
});

describe.each(engines)('key budgets on %s', (engine) => {
  let t: TestStore;
  let ledger: Ledger;
  const clock = Date.UTC(2026, 0, 15, 12);
  beforeAll(async () => {
    t = await openTestStore(engine);
    ledger = new Ledger(t.store, { now: () => clock });
  });
  afterAll(async () => t?.close());

  it('refuses holds beyond a key budget, concurrently, and counts settled spend exactly', async () => {
    const id = (await createWorkspace(t.store.db, { name: 'budgeted' }, clock)).id;
    await ledger.grant({ workspaceId: id, amountMicros: c('100'), source: 'purchase' });
    const budgets = [{ keyId: 'key_a', period: 'day' as const, limitMicros: c('10') }];
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => ledger.hold({ workspaceId: id, amountMicros: c('1'), timeoutMs: 60_000, idempotencyKey: `b${i}`, budgets })),
    );
    const admitted = results.filter((r) => r.ok);
    expect(admitted).toHaveLength(10);
    const refused = results.find((r) => !r.ok);
    expect(refused && !refused.ok && refused.reason).toBe('budget_exceeded');
    // Settle each below its hold: the unused part returns to the budget.
    for (const r of admitted) if (r.ok) await ledger.settle({ workspaceId: id, holdId: r.holdId, actualMicros: c('0.5') });
    const more = await Promise.all(
      Array.from({ length: 20 }, (_, i) => ledger.hold({ workspaceId: id, amountMicros: c('1'), timeoutMs: 60_000, idempotencyKey: `m${i}`, budgets })),
    );
    expect(more.filter((r) => r.ok)).toHaveLength(5);
    const b = await balanceOf(t.store.db, id);
    expect(b.balanceMicros).toBe(c('95'));
    expect(b.pendingMicros).toBe(c('5'));
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('answers a replayed budget refusal as the first call: budget_exceeded, with the budget it hit', async () => {
    const id = (await createWorkspace(t.store.db, { name: 'replayed refusal' }, clock)).id;
    await ledger.grant({ workspaceId: id, amountMicros: c('100'), source: 'purchase' });
    const budgets = [{ keyId: 'key_r', period: 'month' as const, limitMicros: c('2') }];
    const first = await ledger.hold({ workspaceId: id, amountMicros: c('3'), timeoutMs: 60_000, idempotencyKey: 'refused-once', budgets });
    expect(first).toMatchObject({ ok: false, reason: 'budget_exceeded', budget: budgets[0], replayed: false });
    const again = await ledger.hold({ workspaceId: id, amountMicros: c('3'), timeoutMs: 60_000, idempotencyKey: 'refused-once', budgets });
    expect(again).toEqual({ ...first, replayed: true });
    expect(again.ok === false && again.availableMicros).toBe(c('2'));
    expect((await balanceOf(t.store.db, id)).pendingMicros).toBe(0n);
  });
});

describe.each(engines)('late settlement on %s', (engine) => {
  let t: TestStore;
  let ledger: Ledger;
  let clock = Date.UTC(2026, 2, 1);
  beforeAll(async () => {
    t = await openTestStore(engine);
    ledger = new Ledger(t.store, { now: () => clock });
  });
  afterAll(async () => t?.close());

  it('posts a settlement after the sweeper expired its hold, and a replay still says it was late', async () => {
    const id = (await createWorkspace(t.store.db, { name: 'late' }, clock)).id;
    await ledger.grant({ workspaceId: id, amountMicros: c('10'), source: 'purchase' });
    const h = await ledger.hold({ workspaceId: id, amountMicros: c('4'), timeoutMs: 1_000, idempotencyKey: 'slow-call' });
    expect(h.ok).toBe(true);
    clock += 2_000;
    expect(await ledger.sweepExpiredHolds()).toBe(1);
    expect((await balanceOf(t.store.db, id)).pendingMicros).toBe(0n);
    const settled = await ledger.settle({ workspaceId: id, holdId: h.holdId, actualMicros: c('1.5') });
    expect(settled).toMatchObject({ chargedMicros: c('1.5'), releasedMicros: 0n, balanceAfterMicros: c('8.5'), late: true, replayed: false });
    const replay = await ledger.settle({ workspaceId: id, holdId: h.holdId, actualMicros: c('1.5') });
    expect(replay).toEqual({ ...settled, replayed: true });
    const b = await balanceOf(t.store.db, id);
    expect(b).toMatchObject({ balanceMicros: c('8.5'), pendingMicros: 0n, availableMicros: c('8.5') });
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });
});

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { engines, openTestStore, type TestStore } from '../../test/helpers/store.ts';
import { prng } from '../../test/helpers/prng.ts';
import { createWorkspace } from '../workspaces/workspaces.ts';
import { AppError, Ledger, type HoldResult } from './ledger.ts';
import { LeasedLedger } from './leases.ts';
import { workspaceAccountId } from './accounts.ts';
import { balanceOf } from './reads.ts';
import { verifyLedger } from './verify.ts';
import { parseCredits as c, toBigInt } from './money.ts';

const minute = 60_000;

describe.each(engines)('balance leases on %s', (engine) => {
  let t: TestStore;
  let clock: number;
  const now = () => clock;
  const instances: LeasedLedger[] = [];
  const instance = () => {
    // Tests end with calls left in flight on purpose: close hands their leases back at once.
    const l = new LeasedLedger(new Ledger(t.store, { now }), { closeWaitMs: 0 });
    instances.push(l);
    return l;
  };
  beforeEach(async () => {
    clock = Date.UTC(2026, 5, 1);
    t = await openTestStore(engine);
  });
  afterEach(async () => {
    await Promise.all(instances.splice(0).map((l) => l.close()));
    await t?.close();
  });

  const funded = async (credits: string) => {
    const id = (await createWorkspace(t.store.db, { name: `ws-${Math.random()}` }, clock)).id;
    await new Ledger(t.store, { now }).grant({ workspaceId: id, amountMicros: c(credits), source: 'purchase', idempotencyKey: `g-${id}` });
    return id;
  };
  const hold = (l: LeasedLedger, workspaceId: string, amount: bigint, key: string) => l.hold({ workspaceId, amountMicros: amount, timeoutMs: 30 * minute, idempotencyKey: key });
  const admitted = (r: HoldResult) => {
    if (!r.ok) throw new Error(`refused: ${r.reason}`);
    return r;
  };
  const accountRow = async (workspaceId: string) => {
    const a = await t.store.db.selectFrom('accounts').selectAll().where('id', '=', workspaceAccountId(workspaceId)).executeTakeFirstOrThrow();
    return { posted: toBigInt(a.debits_posted), pending: toBigInt(a.debits_pending), credits: toBigInt(a.credits_posted) };
  };
  const leaseRows = (workspaceId: string) =>
    t.store.db.selectFrom('holds').select(['id', 'status', 'amount_micros']).where('workspace_id', '=', workspaceId).where('kind', '=', 'lease').execute();

  it('admits calls from memory against one lease and settles each exactly, with its record', async () => {
    const ws = await funded('1000');
    const l = instance();
    const first = admitted(await hold(l, ws, c('0.5'), 'call-1'));
    // The first call made the lease: one row, reserving room for many calls, a slice of the balance.
    const [lease] = await leaseRows(ws);
    expect(lease.status).toBe('pending');
    const leased = toBigInt(lease.amount_micros);
    expect(leased).toBe(c('125')); // min(256 calls of 0.5, 1000 / 8)
    expect((await accountRow(ws)).pending).toBe(leased);
    // The lease is the instance's working reserve, not a call in flight: the balance view leaves it out.
    const shown = await balanceOf(t.store.db, ws);
    expect(shown.pendingMicros).toBe(0n);
    expect(shown.availableMicros).toBe(c('1000'));

    const rest = await Promise.all(Array.from({ length: 20 }, (_, i) => hold(l, ws, c('0.5'), `call-${i + 2}`)));
    expect(rest.every((r) => r.ok)).toBe(true);
    expect(l.stats.admittedFromLease).toBe(21);
    expect(l.stats.leaseWrites).toBe(1);
    expect(await leaseRows(ws)).toHaveLength(1);
    expect(l.leasedCallsInFlight(ws)).toBe(21);

    const s = await l.settle({ workspaceId: ws, holdId: first.holdId, actualMicros: c('0.123456'), model: 'm', keyUsage: undefined });
    expect(s).toMatchObject({ chargedMicros: c('0.123456'), releasedMicros: c('0.376544'), balanceAfterMicros: c('999.876544'), late: false, overdrawnMicros: 0n });
    // The lease shrank by what the call had reserved; the account's pending with it.
    expect(toBigInt((await leaseRows(ws))[0].amount_micros)).toBe(leased - c('0.5'));
    expect(await accountRow(ws)).toMatchObject({ posted: c('0.123456'), pending: leased - c('0.5') });
    const transfer = await t.store.db.selectFrom('transfers').selectAll().where('hold_id', '=', first.holdId).executeTakeFirstOrThrow();
    expect(toBigInt(transfer.amount_micros)).toBe(c('0.123456'));

    let charged = c('0.123456');
    for (const [i, r] of rest.entries()) {
      const h = admitted(r);
      if (i % 3 === 0) {
        const v = await l.void(ws, h.holdId);
        expect(v).toMatchObject({ status: 'voided', releasedMicros: c('0.5') });
      } else {
        await l.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: c('0.2') });
        charged += c('0.2');
      }
    }
    expect(l.leasedCallsInFlight(ws)).toBe(0);
    expect((await balanceOf(t.store.db, ws)).balanceMicros).toBe(c('1000') - charged);
    expect(await verifyLedger(t.store.db)).toEqual([]);
    // Closing hands the lease back: nothing stays reserved.
    await l.close();
    expect((await leaseRows(ws)).map((r) => r.status)).toEqual(['voided']);
    expect((await accountRow(ws)).pending).toBe(0n);
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('hands back a lease whose first growth was on its way when close() began, and holds that call directly', async () => {
    const ws = await funded('1000');
    const l = new LeasedLedger(new Ledger(t.store, { now }), { closeWaitMs: 0 });
    const call = hold(l, ws, c('0.5'), 'closing-call');
    const closing = l.close();
    const answer = admitted(await call);
    await closing;
    // The call holds its own 0.5 in the ledger; nothing stays reserved for a lease.
    expect((await leaseRows(ws)).map((r) => r.status)).toEqual(['voided']);
    expect((await accountRow(ws)).pending).toBe(c('0.5'));
    expect(l.stats.directHolds).toBe(1);
    const held = await t.store.db.selectFrom('holds').select(['status', 'kind']).where('id', '=', answer.holdId).executeTakeFirstOrThrow();
    expect(held).toEqual({ status: 'pending', kind: 'call' });
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('answers a replayed hold as first answered while the call is in flight, and refuses a changed one', async () => {
    const ws = await funded('100');
    const l = instance();
    const h = admitted(await hold(l, ws, c('1'), 'same'));
    expect(await hold(l, ws, c('1'), 'same')).toMatchObject({ ok: true, holdId: h.holdId, replayed: true });
    const err = await hold(l, ws, c('2'), 'same').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe('idempotency_key_reused');
    expect(l.leasedCallsInFlight(ws)).toBe(1);
    await l.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: c('1') });
    // A second settlement of the same call can never post twice.
    await expect(l.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: c('1') })).rejects.toThrow();
    expect((await balanceOf(t.store.db, ws)).balanceMicros).toBe(c('99'));
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('near the limit holds every call directly, after handing back what the lease held free', async () => {
    const ws = await funded('10');
    const l = instance();
    // A small call on a roomy balance: a lease of 10 / 8 = 1.25 credits.
    const small = admitted(await hold(l, ws, c('0.1'), 'small'));
    expect(toBigInt((await leaseRows(ws))[0].amount_micros)).toBe(c('1.25'));
    // A call for all that is left (9.9) does not fit the lease, and the ledger alone has 8.75
    // available beside it: the lease hands its free 1.15 back and the call is held directly.
    const big = admitted(await hold(l, ws, c('9.9'), 'big'));
    expect(l.stats.directHolds).toBe(1);
    const calls = await t.store.db.selectFrom('holds').select(['status', 'amount_micros']).where('workspace_id', '=', ws).where('kind', '=', 'call').execute();
    expect(calls.map((h) => [h.status, toBigInt(h.amount_micros)])).toEqual([['pending', c('9.9')]]);
    // The retired lease keeps exactly what its call in flight reserves.
    expect(toBigInt((await leaseRows(ws))[0].amount_micros)).toBe(c('0.1'));
    expect((await accountRow(ws)).pending).toBe(c('10'));
    expect((await hold(l, ws, c('0.000001'), 'nothing-left')).ok).toBe(false);

    await l.settle({ workspaceId: ws, holdId: small.holdId, actualMicros: c('0.1') });
    await l.drain();
    // Its last call ended: the retired lease is voided.
    expect((await leaseRows(ws)).map((r) => r.status)).toEqual(['voided']);
    await l.settle({ workspaceId: ws, holdId: big.holdId, actualMicros: c('9.9') });
    expect(await balanceOf(t.store.db, ws)).toMatchObject({ balanceMicros: 0n, pendingMicros: 0n });
    expect((await accountRow(ws)).pending).toBe(0n);
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('holds calls with a key budget directly, so the budget is reserved with them', async () => {
    const ws = await funded('100');
    const l = instance();
    const h = admitted(await l.hold({ workspaceId: ws, amountMicros: c('1'), timeoutMs: minute, idempotencyKey: 'b1', budgets: [{ keyId: 'key_1', period: 'day', limitMicros: c('5') }] }));
    expect(await leaseRows(ws)).toHaveLength(0);
    await l.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: c('1') });
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('writes the usage record of a voided leased call', async () => {
    const ws = await funded('100');
    const l = instance();
    const h = admitted(await hold(l, ws, c('1'), 'v1'));
    const record = {
      table: 'usage_records' as const,
      values: { id: 'req_void', workspace_id: ws, key_id: 'key_void', endpoint: 'chat.completions', model: 'm', status: 'upstream_error', charge_micros: 0n, hold_id: h.holdId, created_at: clock },
    };
    const v = await l.void(ws, h.holdId, [record]);
    expect(v).toMatchObject({ status: 'voided', releasedMicros: c('1') });
    const stored = await t.store.db.selectFrom('usage_records').select(['id', 'status', 'hold_id']).where('id', '=', 'req_void').executeTakeFirst();
    expect(stored).toMatchObject({ status: 'upstream_error', hold_id: h.holdId });
  });

  it('posts late when another process swept the lease of a stalled instance, then makes a new lease', async () => {
    const ws = await funded('100');
    const l = instance();
    const h = admitted(await hold(l, ws, c('1'), 'stalled'));
    clock += 61 * minute; // past the lease's expiry (twice the hold timeout)
    // Another process's sweeper: this instance, stalled, has not run its own.
    expect(await new Ledger(t.store, { now }).sweepExpiredHolds()).toBe(1);
    expect((await accountRow(ws)).pending).toBe(0n);
    const s = await l.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: c('0.7') });
    expect(s).toMatchObject({ late: true, chargedMicros: c('0.7'), releasedMicros: 0n });
    // The next call is admitted against a new lease.
    admitted(await hold(l, ws, c('1'), 'after'));
    expect((await leaseRows(ws)).map((r) => r.status).sort()).toEqual(['expired', 'pending']);
    expect((await balanceOf(t.store.db, ws)).balanceMicros).toBe(c('99.3'));
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  it('never moves the expiry of a lease earlier when a call with a shorter timeout grows it', async () => {
    const ws = await funded('10000');
    const l = instance();
    admitted(await hold(l, ws, c('1'), 'long')); // 30-minute timeout: the lease runs an hour
    const expiry = async () => Number((await t.store.db.selectFrom('holds').select('expires_at').where('kind', '=', 'lease').where('workspace_id', '=', ws).executeTakeFirstOrThrow()).expires_at);
    const before = await expiry();
    admitted(await l.hold({ workspaceId: ws, amountMicros: c('300'), timeoutMs: minute, idempotencyKey: 'short-and-large' }));
    expect(l.stats.leaseWrites).toBe(2); // it grew the lease
    expect(await expiry()).toBe(before);
    clock += 3 * minute;
    expect(await new Ledger(t.store, { now }).sweepExpiredHolds()).toBe(0);
  });

  it('gives a leased call past its hold timeout back to the lease, and still posts its settlement late', async () => {
    const ws = await funded('100');
    const l = instance();
    const h = admitted(await l.hold({ workspaceId: ws, amountMicros: c('1'), timeoutMs: minute, idempotencyKey: 'slow' }));
    const leased = toBigInt((await leaseRows(ws))[0].amount_micros);
    clock += 1.5 * minute; // past the call's timeout, not yet the lease's (twice it)
    expect(await l.sweepExpiredHolds()).toBe(1);
    expect(l.leasedCallsInFlight(ws)).toBe(0);
    // Its reservation went back to the lease, which still reserves the same on the account.
    expect(toBigInt((await leaseRows(ws))[0].amount_micros)).toBe(leased);
    const s = await l.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: c('0.25') });
    expect(s).toMatchObject({ late: true, chargedMicros: c('0.25'), releasedMicros: 0n });
    expect(await accountRow(ws)).toMatchObject({ posted: c('0.25'), pending: leased });
    await expect(l.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: c('0.25') })).rejects.toThrow();
    // Voiding a call past its timeout answers as for an expired hold.
    const other = admitted(await l.hold({ workspaceId: ws, amountMicros: c('1'), timeoutMs: minute, idempotencyKey: 'slow-2' }));
    clock += 1.5 * minute;
    expect(await l.sweepExpiredHolds()).toBe(1);
    expect(await l.void(ws, other.holdId)).toMatchObject({ status: 'expired', releasedMicros: 0n, replayed: true });
    expect(await verifyLedger(t.store.db)).toEqual([]);
    await l.close();
    expect((await accountRow(ws)).pending).toBe(0n);
  });

  it('retires a lease whose settlement failed, and releases the call once its timeout passes', async () => {
    const ws = await funded('100');
    const l = instance();
    const record = (id: string, holdId: string) => ({
      table: 'usage_records' as const,
      values: { id, workspace_id: ws, key_id: 'key_x', endpoint: 'chat.completions', model: 'm', status: 'ok', hold_id: holdId, created_at: clock },
    });
    const a = admitted(await hold(l, ws, c('1'), 'a'));
    const b = admitted(await hold(l, ws, c('1'), 'b'));
    const first = (await leaseRows(ws))[0];
    await l.settle({ workspaceId: ws, holdId: a.holdId, actualMicros: c('0.5'), records: [record('req_same', a.holdId)] });
    // The same usage record id again: the settlement's transaction fails and nothing of it is written.
    await expect(l.settle({ workspaceId: ws, holdId: b.holdId, actualMicros: c('0.5'), records: [record('req_same', b.holdId)] })).rejects.toThrow();
    expect((await balanceOf(t.store.db, ws)).balanceMicros).toBe(c('99.5'));
    await l.drain();
    // The lease admits nothing more: it handed back what it held free and keeps only the failed call's 1 credit.
    expect(toBigInt((await leaseRows(ws)).find((r) => r.id === first.id)!.amount_micros)).toBe(c('1'));
    admitted(await hold(l, ws, c('1'), 'c'));
    expect(await leaseRows(ws)).toHaveLength(2);
    clock += 31 * minute;
    expect(await l.sweepExpiredHolds()).toBe(2); // the failed call b, and c
    await l.drain();
    expect((await leaseRows(ws)).find((r) => r.id === first.id)!.status).toBe('voided');
    expect(await verifyLedger(t.store.db)).toEqual([]);
    await l.close();
    expect((await accountRow(ws)).pending).toBe(0n);
  });

  it('settles calls that share a batch set-based, exactly as one at a time: balances, lots burnt, overdraft, warning', async () => {
    const actuals = ['0.5', '1.7', '0', '2.2', '1.9', '0.3', '1.5'].map((x) => c(x)); // 8.1 credits against 6
    const fund = async () => {
      const id = (await createWorkspace(t.store.db, { name: `lots-${Math.random()}` }, clock)).id;
      const l = new Ledger(t.store, { now });
      await l.grant({ workspaceId: id, amountMicros: c('3'), source: 'purchase', priority: 10, expiresAt: clock + 100 * minute, idempotencyKey: `a-${id}` });
      await l.grant({ workspaceId: id, amountMicros: c('2'), source: 'promo', priority: 5, idempotencyKey: `b-${id}` });
      await l.grant({ workspaceId: id, amountMicros: c('1'), source: 'purchase', priority: 10, idempotencyKey: `c-${id}` });
      await l.setLimits(id, { warningLimitMicros: c('3') });
      return id;
    };
    const burnt = async (ws: string) =>
      (
        await t.store.db
          .selectFrom('lot_consumptions')
          .innerJoin('transfers', 'transfers.id', 'lot_consumptions.transfer_id')
          .innerJoin('lots', 'lots.id', 'lot_consumptions.lot_id')
          .select(['transfers.balance_after_micros as after', 'lots.note', 'lots.source', 'lots.priority', 'lot_consumptions.amount_micros as amount'])
          .where('transfers.workspace_id', '=', ws)
          .orderBy('transfers.balance_after_micros', 'desc')
          .orderBy('lots.priority')
          .orderBy('lots.source')
          .execute()
      ).map((r) => [toBigInt(r.after), r.source, Number(r.priority), toBigInt(r.amount)]);
    const warnings = (ws: string) => t.store.db.selectFrom('outbox').select('payload').where('workspace_id', '=', ws).where('topic', '=', 'balance.warning').execute();

    // One at a time, through the ledger's own holds.
    const one = await fund();
    const direct = new Ledger(t.store, { now });
    const heldOne = [];
    for (const i of actuals.keys()) heldOne.push(admitted(await direct.hold({ workspaceId: one, amountMicros: c('0.01'), timeoutMs: minute, idempotencyKey: `seq-${i}` })));
    const sequential = [];
    for (const [i, h] of heldOne.entries()) sequential.push(await direct.settle({ workspaceId: one, holdId: h.holdId, actualMicros: actuals[i] }));

    // Together: admitted from a lease, settled in one batch.
    const many = await fund();
    const l = instance();
    const held = [];
    for (const i of actuals.keys()) held.push(admitted(await hold(l, many, c('0.01'), `many-${i}`)));
    expect(l.stats.admittedFromLease).toBe(actuals.length);
    const batchesBefore = l.inner.writer.stats.batches;
    const together = await Promise.all(held.map((h, i) => l.settle({ workspaceId: many, holdId: h.holdId, actualMicros: actuals[i] })));
    expect(l.inner.writer.stats.batches - batchesBefore).toBe(1);

    const view = (r: { balanceAfterMicros: bigint; overdrawnMicros: bigint; chargedMicros: bigint }) => [r.chargedMicros, r.balanceAfterMicros, r.overdrawnMicros];
    expect(together.map(view)).toEqual(sequential.map(view));
    expect(together.map((r) => r.overdrawnMicros)).toEqual(['0', '0', '0', '0', '0.3', '0.3', '1.5'].map((x) => c(x)));
    expect(await burnt(many)).toEqual(await burnt(one));
    expect((await balanceOf(t.store.db, many)).balanceMicros).toBe(c('-2.1'));
    // The warning limit (3 credits) was crossed once, by the same call, in both.
    const [w1, w2] = [await warnings(one), await warnings(many)];
    expect(w1).toHaveLength(1);
    expect(JSON.parse(w2[0].payload).balanceMicros).toBe(JSON.parse(w1[0].payload).balanceMicros);
    expect(w2).toHaveLength(1);
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });

  // Two instances (each its own committer, as two processes have) race random calls at one small
  // balance. Whatever the interleaving: no call is admitted without cover, so settling every call
  // within its reservation can never take the balance below zero, every debit is exact, and once
  // both instances close nothing stays reserved.
  it.each([11, 12, 13])('never commits more than the balance across instances (seed %i)', async (seed) => {
    const rng = prng(seed);
    const granted = c('20');
    const ws = await funded('20');
    const a = instance();
    const b = instance();
    let charged = 0n;
    let inFlight = 0n;
    let maxInFlight = 0n;
    let refused = 0;
    const run = async (n: number) => {
      const l = rng.chance(0.5) ? a : b;
      const amount = rng.micros(0, 0);
      const r = await hold(l, ws, amount, `s${seed}-${n}`);
      if (!r.ok) {
        refused++;
        return;
      }
      inFlight += amount;
      if (inFlight > maxInFlight) maxInFlight = inFlight;
      // Calls end in any order, some after others started.
      await new Promise((resolve) => setTimeout(resolve, rng.int(0, 3)));
      inFlight -= amount;
      if (rng.chance(0.2)) {
        await l.void(ws, r.holdId);
        return;
      }
      const actual = amount === 0n ? 0n : BigInt(rng.int(0, Number(amount)));
      charged += actual;
      const s = await l.settle({ workspaceId: ws, holdId: r.holdId, actualMicros: actual });
      expect(s.overdrawnMicros).toBe(0n);
    };
    await Promise.all(Array.from({ length: 160 }, (_, n) => run(n)));
    // The sequence went through every path: leased admissions, direct holds near the limit, refusals.
    expect(a.stats.admittedFromLease + b.stats.admittedFromLease).toBeGreaterThan(0);
    expect(a.stats.directHolds + b.stats.directHolds).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
    expect(maxInFlight).toBeLessThanOrEqual(granted);
    const b1 = await balanceOf(t.store.db, ws);
    expect(b1.balanceMicros).toBe(granted - charged);
    expect(b1.balanceMicros).toBeGreaterThanOrEqual(0n);
    expect(await verifyLedger(t.store.db)).toEqual([]);
    await a.close();
    await b.close();
    expect((await accountRow(ws)).pending).toBe(0n);
    expect((await leaseRows(ws)).every((r) => r.status === 'voided')).toBe(true);
    expect(await verifyLedger(t.store.db)).toEqual([]);
  });
});

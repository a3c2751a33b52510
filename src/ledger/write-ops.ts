// The ledger's writes as data: each is a name and a plain input (no callbacks, no class
// instances), run inside a transaction of the group committer by the function of that name here
// (see src/ledger/writer.ts). A write reads the time when it runs (`batch.now()`), so ids and
// timestamps follow the order of posting; what it decides by from the caller's memory (a lease's
// free part, a call's expiry, whether the instance is closing) is read when it is submitted and
// travels in its input.
import { conflict, invalid, notFound } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import type { Engine } from '../store/db.ts';
import { execute, prepare, queryRows } from '../store/prepared.ts';
import type { Batch, Tx } from './committer.ts';
import { operatorAccounts, type OperatorAccountId } from './accounts.ts';
import { lockExistingAccount, max, min } from './lots.ts';
import { postUsages, warnIfCrossed } from './posting.ts';
import { parseCounterIds, postBudgets, releaseBudgets, reserveBudgets, type BudgetLimit } from './budgets.ts';
import { maxAccountMicros, toBigInt } from './money.ts';
import { insertRecords, type LedgerRecord } from './records.ts';
import { assert } from './invariants.ts';
import type { GrantInput, GrantResult, HoldInput, HoldResult, LedgerLimits, SettleInput, SettleResult, VoidResult } from './ledger.ts';

export interface GrantWrite {
  input: GrantInput;
  accountId: string;
  funding: OperatorAccountId;
  priority: number;
  key: string;
  requestHash: string;
}

export interface HoldWrite {
  input: HoldInput;
  accountId: string;
  key: string;
}

export interface SettleWrite {
  input: SettleInput;
  accountId: string;
}

export interface VoidWrite {
  holdId: string;
  accountId: string;
  records: LedgerRecord[] | undefined;
}

export interface ExpireHoldWrite {
  holdId: string;
  accountId: string;
}

export interface ExpireLotWrite {
  lotId: string;
  accountId: string;
  workspaceId: string;
}

export interface SetLimitsWrite {
  workspaceId: string;
  accountId: string;
  limits: LedgerLimits;
}

export interface RecordsWrite {
  records: LedgerRecord[];
}

/** A balance lease grows (or is made) so it has room for a call of `need` and more. */
export interface LeaseGrowWrite {
  workspaceId: string;
  accountId: string;
  need: bigint;
  /** The open lease to grow (null: make one), and what it held free when the growth was asked for. */
  leaseId: string | null;
  free: bigint;
  callsPerLease: bigint;
  divisor: bigint;
  minCalls: bigint;
  closing: boolean;
  timeoutMs: number;
}

export type LeaseGrowResult = { kind: 'grown'; leaseId: string; created: boolean; added: bigint; expiresAt: number } | { kind: 'near_limit' } | { kind: 'lease_gone' };

export interface LeaseShrinkWrite {
  accountId: string;
  leaseId: string;
  /** What the retired lease holds free: its amount less what its calls in flight reserve. */
  free: bigint;
}

export interface LeaseEndWrite {
  accountId: string;
  leaseId: string;
}

/** A call admitted against a lease, settled. */
export interface LeaseSettleWrite {
  accountId: string;
  leaseId: string;
  /** What the call reserved in the lease. */
  amount: bigint;
  /** Its hold timeout passed before it settled: its reservation already went back to the lease. */
  expired: boolean;
  input: SettleInput;
}

export interface LeaseSettleResult {
  posted: SettleResult;
  late: boolean;
}

/** Every write: its input and its result. */
export interface WriteOps {
  grant: [GrantWrite, GrantResult];
  hold: [HoldWrite, HoldResult];
  settle: [SettleWrite, SettleResult];
  void: [VoidWrite, VoidResult];
  expireHold: [ExpireHoldWrite, number];
  expireLot: [ExpireLotWrite, number];
  setLimits: [SetLimitsWrite, void];
  records: [RecordsWrite, void];
  leaseGrow: [LeaseGrowWrite, LeaseGrowResult];
  leaseShrink: [LeaseShrinkWrite, bigint];
  leaseEnd: [LeaseEndWrite, void];
  leaseSettle: [LeaseSettleWrite, LeaseSettleResult];
}

export type WriteName = keyof WriteOps;
export type WriteInput<N extends WriteName> = WriteOps[N][0];
export type WriteResult<N extends WriteName> = WriteOps[N][1];

/**
 * A write run on its own, or (`groupKey`) together with the batch's consecutive writes of the same
 * key in one set-based call that answers each in order (see OpGroup in committer.ts).
 */
export type WriteOp<I, R> =
  | { groupKey?: undefined; run(tx: Tx, batch: Batch, input: I): Promise<R> }
  | { groupKey(input: I): string; run(tx: Tx, batch: Batch, inputs: I[]): Promise<R[]> };

export const writeOps: { [N in WriteName]: WriteOp<WriteInput<N>, WriteResult<N>> } = {
  grant: {
    async run(tx, batch, { input, accountId, funding, priority, key, requestHash }) {
      const nowMs = batch.now();
      // The account's row lock comes first, as in every other write: taking the idempotency key's
      // lock before it could deadlock with a batch that holds the account and wants the key.
      if (!(await lockExistingAccount(tx, batch, accountId))) throw notFound('workspace', input.workspaceId);
      const claimed = await claimKey(tx, 'grant', key, requestHash, nowMs);
      if (!claimed.fresh) return { ...(JSON.parse(claimed.response) as Omit<GrantResult, 'replayed'>), replayed: true };
      // Checked after the key, so a retry of a grant whose lot has expired since still gets its first answer.
      if (input.expiresAt != null && input.expiresAt <= nowMs) throw invalidExpiry();

      const amount = input.amountMicros;
      const acct = await tx
        .updateTable('accounts')
        .set((eb) => ({
          credits_posted: eb('credits_posted', '+', amount),
          purchased_micros: eb('purchased_micros', '+', input.source === 'purchase' ? amount : 0n),
        }))
        .where('id', '=', accountId)
        .where('workspace_id', '=', input.workspaceId)
        .returning(['credits_posted', 'debits_posted'])
        .executeTakeFirst();
      if (!acct) throw notFound('workspace', input.workspaceId);
      const creditsPosted = toBigInt(acct.credits_posted);
      if (creditsPosted > maxAccountMicros) throw invalid('amount_too_large', 'This grant would take the account past its maximum total.', 'credits');
      const balanceAfter = creditsPosted - toBigInt(acct.debits_posted);
      const balanceBefore = balanceAfter - amount;
      // A workspace in debt (overdraft or an overrun settlement) repays it from the new lot first.
      const repaid = balanceBefore < 0n ? min(-balanceBefore, amount) : 0n;

      const transferId = newId('txn', nowMs);
      const lotId = newId('lot', nowMs);
      await tx
        .insertInto('transfers')
        .values({
          id: transferId,
          kind: 'grant',
          debit_account_id: funding,
          credit_account_id: accountId,
          amount_micros: amount,
          workspace_id: input.workspaceId,
          hold_id: null,
          lot_id: lotId,
          model: null,
          tag: input.source,
          ref: key,
          note: input.note ?? null,
          balance_after_micros: balanceAfter,
          overdrawn_micros: 0n,
          created_at: nowMs,
        })
        .execute();
      await tx
        .insertInto('lots')
        .values({
          id: lotId,
          workspace_id: input.workspaceId,
          account_id: accountId,
          source: input.source,
          amount_micros: amount,
          remaining_micros: amount - repaid,
          repaid_micros: repaid,
          priority,
          effective_at: nowMs,
          expires_at: input.expiresAt ?? null,
          expired_at: null,
          transfer_id: transferId,
          note: input.note ?? null,
          created_at: nowMs,
        })
        .execute();
      batch.debitOperator(funding, amount);
      const result = { lotId, transferId };
      await completeKey(tx, 'grant', key, JSON.stringify(result));
      return { ...result, replayed: false };
    },
  },

  hold: {
    async run(tx, batch, { input, accountId, key }) {
      const nowMs = batch.now();
      const engine = batch.engine;
      const amount = input.amountMicros;
      const expiresAt = nowMs + input.timeoutMs;
      const holdId = newId('hold', nowMs);
      const [acct] = await queryRows<AccountAfterHold>(tx, engine, sqlReserve, [amount, accountId, amount]);
      // A refused reservation updated nothing, so it holds no lock yet: take the account's lock all
      // the same before the hold row's key, the order every write follows.
      if (acct) batch.lockedAccount(accountId);
      else await batch.lockAccount(tx, accountId);
      // A refused hold is recorded, so first make sure the account exists: an unknown workspace is
      // a not-found error, not a foreign-key failure of the insert below.
      const refusedAvailable = acct ? null : await availableOf(tx, accountId);
      if (!acct && refusedAvailable === null) throw notFound('workspace', input.workspaceId);
      // Key budgets come after the account's row lock (lock order: account, then its counters).
      const reservation = acct && input.budgets?.length ? await reserveBudgets(tx, input.budgets, amount, nowMs) : null;
      const overBudget = reservation !== null && !reservation.ok ? reservation : null;
      if (overBudget) await releasePending(tx, engine, accountId, amount);
      const admitted = acct !== undefined && overBudget === null;
      const counterIds = reservation?.ok ? reservation.counterIds : [];
      const status = admitted ? 'pending' : 'rejected';
      const [inserted] = await queryRows<{ id: string }>(tx, engine, sqlInsertHold, [
        holdId,
        accountId,
        input.workspaceId,
        amount,
        status,
        key,
        input.ref ?? null,
        expiresAt,
        nowMs,
        admitted ? null : nowMs,
        counterIds.length > 0 ? JSON.stringify(counterIds) : null,
        overBudget
          ? JSON.stringify({
              reason: 'budget_exceeded',
              budget: { ...overBudget.limit, limitMicros: overBudget.limit.limitMicros.toString() },
              remainingMicros: overBudget.remainingMicros.toString(),
            })
          : null,
      ]);

      if (!inserted) {
        // A replay: undo this attempt's reservation and answer as the first attempt did.
        if (admitted) {
          await releasePending(tx, engine, accountId, amount);
          await releaseBudgets(tx, counterIds, amount);
        }
        return replayHold(tx, key, accountId, amount);
      }
      if (!acct) return { ok: false, reason: 'insufficient_credits', holdId, availableMicros: refusedAvailable!, replayed: false };
      if (overBudget) {
        const available = (await availableOf(tx, accountId)) ?? 0n;
        return { ok: false, reason: 'budget_exceeded', holdId, availableMicros: min(available, overBudget.remainingMicros), budget: overBudget.limit, replayed: false };
      }
      const availableAfter =
        toBigInt(acct.credits_posted) - toBigInt(acct.debits_posted) - toBigInt(acct.debits_pending) + toBigInt(acct.overdraft_limit_micros);
      assert(availableAfter >= 0n, `hold ${holdId} left account ${accountId} below its floor`);
      return { ok: true, holdId, amountMicros: amount, expiresAt, availableAfterMicros: availableAfter, replayed: false };
    },
  },

  settle: {
    async run(tx, batch, { input, accountId }) {
      const nowMs = batch.now();
      const engine = batch.engine;
      const actual = input.actualMicros;
      await batch.lockAccount(tx, accountId);
      const transferId = actual > 0n ? newId('txn', nowMs) : null;
      const claim = async (from: 'pending' | 'expired') =>
        (await queryRows<{ amount_micros: unknown; budget_ids: string | null }>(tx, engine, sqlClaimHold, [actual, transferId, nowMs, from === 'expired' ? 1 : 0, input.holdId, accountId, from]))[0];
      let late = false;
      let claimed = await claim('pending');
      if (!claimed) {
        claimed = await claim('expired');
        if (!claimed) return replaySettle(tx, input, accountId);
        late = true;
      }
      // A late settlement's reservation was already released by the sweeper.
      const released = late ? 0n : toBigInt(claimed.amount_micros);
      await postBudgets(tx, parseCounterIds(claimed.budget_ids), released, actual);
      const [posted] = await postUsages(tx, batch, accountId, [{ ...input, releasedMicros: released, transferId, late, nowMs }]);
      return posted;
    },
  },

  void: {
    async run(tx, batch, { holdId, accountId, records }) {
      const nowMs = batch.now();
      const engine = batch.engine;
      await batch.lockAccount(tx, accountId);
      const claimed = await tx
        .updateTable('holds')
        .set({ status: 'voided', resolved_at: nowMs })
        .where('id', '=', holdId)
        .where('account_id', '=', accountId)
        .where('status', '=', 'pending')
        .where('kind', '=', 'call')
        .returning(['amount_micros', 'budget_ids'])
        .executeTakeFirst();
      if (!claimed) {
        // A balance lease is not a call's hold: only its instance ends it.
        const existing = await tx.selectFrom('holds').select('status').where('id', '=', holdId).where('account_id', '=', accountId).where('kind', '=', 'call').executeTakeFirst();
        if (!existing) throw notFound('hold', holdId);
        if (existing.status === 'settled') throw conflict('hold_already_settled', `Hold '${holdId}' was settled and cannot be voided.`);
        return { holdId, status: existing.status as VoidResult['status'], releasedMicros: 0n, replayed: true };
      }
      const amount = toBigInt(claimed.amount_micros);
      await releasePending(tx, engine, accountId, amount);
      await releaseBudgets(tx, parseCounterIds(claimed.budget_ids), amount);
      await insertRecords(tx, engine, records, { balanceAfterMicros: null, transferId: null });
      return { holdId, status: 'voided', releasedMicros: amount, replayed: false };
    },
  },

  expireHold: {
    async run(tx, batch, { holdId, accountId }) {
      const nowMs = batch.now();
      await batch.lockAccount(tx, accountId);
      const claimed = await tx
        .updateTable('holds')
        .set({ status: 'expired', resolved_at: nowMs })
        .where('id', '=', holdId)
        .where('status', '=', 'pending')
        .returning(['amount_micros', 'budget_ids'])
        .executeTakeFirst();
      if (!claimed) return 0;
      await releasePending(tx, batch.engine, accountId, toBigInt(claimed.amount_micros));
      await releaseBudgets(tx, parseCounterIds(claimed.budget_ids), toBigInt(claimed.amount_micros));
      return 1;
    },
  },

  expireLot: {
    async run(tx, batch, { lotId, accountId, workspaceId }) {
      const nowMs = batch.now();
      await batch.lockAccount(tx, accountId);
      const lot = await tx.selectFrom('lots').select('remaining_micros').where('id', '=', lotId).where('expired_at', 'is', null).executeTakeFirst();
      if (!lot) return 0;
      const remaining = toBigInt(lot.remaining_micros);
      await tx.updateTable('lots').set({ remaining_micros: 0, expired_at: nowMs }).where('id', '=', lotId).execute();
      if (remaining === 0n) return 1;
      const acct = await tx
        .updateTable('accounts')
        .set((eb) => ({
          debits_posted: eb('debits_posted', '+', remaining),
          expired_micros: eb('expired_micros', '+', remaining),
        }))
        .where('id', '=', accountId)
        .returning(['credits_posted', 'debits_posted', 'warning_limit_micros'])
        .executeTakeFirstOrThrow();
      const balanceAfter = toBigInt(acct.credits_posted) - toBigInt(acct.debits_posted);
      const transferId = newId('txn', nowMs);
      await tx
        .insertInto('transfers')
        .values({
          id: transferId,
          kind: 'expiry',
          debit_account_id: accountId,
          credit_account_id: operatorAccounts.expired,
          amount_micros: remaining,
          workspace_id: workspaceId,
          hold_id: null,
          lot_id: lotId,
          model: null,
          tag: null,
          ref: null,
          note: null,
          balance_after_micros: balanceAfter,
          overdrawn_micros: 0n,
          created_at: nowMs,
        })
        .execute();
      await tx.insertInto('lot_consumptions').values({ transfer_id: transferId, lot_id: lotId, amount_micros: remaining }).execute();
      batch.creditOperator(operatorAccounts.expired, remaining);
      await warnIfCrossed(tx, workspaceId, acct.warning_limit_micros, balanceAfter + remaining, balanceAfter, nowMs);
      return 1;
    },
  },

  setLimits: {
    async run(tx, _batch, { workspaceId, accountId, limits }) {
      const patch: { overdraft_limit_micros?: bigint; warning_limit_micros?: bigint | null } = {};
      if (limits.overdraftLimitMicros !== undefined) patch.overdraft_limit_micros = limits.overdraftLimitMicros;
      if (limits.warningLimitMicros !== undefined) patch.warning_limit_micros = limits.warningLimitMicros;
      if (Object.keys(patch).length === 0) return;
      const res = await tx.updateTable('accounts').set(patch).where('id', '=', accountId).executeTakeFirst();
      if (res.numUpdatedRows !== 1n) throw notFound('workspace', workspaceId);
    },
  },

  records: {
    async run(tx, batch, { records }) {
      await insertRecords(tx, batch.engine, records, { balanceAfterMicros: null, transferId: null });
    },
  },

  leaseGrow: {
    async run(tx, batch, w) {
      const { accountId, need, free } = w;
      await batch.lockAccount(tx, accountId);
      const available = await availableOf(tx, accountId);
      if (available === null) throw notFound('workspace', w.workspaceId);
      // `free` was read when the growth was asked for: calls admitted since have lowered it and
      // uncharged calls ended since have raised it. Either way what is added is at most 1/divisor
      // of what the account has available, so a lease never reserves credits that are not there.
      const room = available + free;
      const target = min(need * w.callsPerLease, room / w.divisor);
      if (target < need * w.minCalls || w.closing) return { kind: 'near_limit' };
      const added = target > free ? target - free : 0n;
      // A lease's expiry only ever moves later: calls admitted under it count on it.
      const nowMs = batch.now();
      const expiresAt = nowMs + 2 * w.timeoutMs;
      if (w.leaseId !== null) {
        const [row] = await queryRows<{ expires_at: unknown }>(tx, batch.engine, sqlGrowLease, [added, expiresAt, expiresAt, w.leaseId]);
        if (!row) return { kind: 'lease_gone' };
        await reservePending(tx, batch.engine, accountId, added);
        return { kind: 'grown', leaseId: w.leaseId, created: false, added, expiresAt: Number(row.expires_at) };
      }
      const leaseId = newId('hold', nowMs);
      await tx
        .insertInto('holds')
        .values({
          id: leaseId,
          account_id: accountId,
          workspace_id: w.workspaceId,
          amount_micros: added,
          status: 'pending',
          kind: 'lease',
          idempotency_key: `lease:${leaseId}`,
          ref: null,
          expires_at: expiresAt,
          settled_micros: null,
          transfer_id: null,
          created_at: nowMs,
          resolved_at: null,
          budget_ids: null,
          rejection: null,
        })
        .execute();
      await reservePending(tx, batch.engine, accountId, added);
      return { kind: 'grown', leaseId, created: true, added, expiresAt };
    },
  },

  leaseShrink: {
    async run(tx, batch, { accountId, leaseId, free }) {
      await batch.lockAccount(tx, accountId);
      if (free <= 0n) return 0n;
      const [row] = await queryRows<{ id: string }>(tx, batch.engine, sqlShrinkLease, [free, leaseId]);
      if (!row) return 0n;
      await releasePending(tx, batch.engine, accountId, free);
      return free;
    },
  },

  leaseEnd: {
    async run(tx, batch, { accountId, leaseId }) {
      const nowMs = batch.now();
      await batch.lockAccount(tx, accountId);
      const [row] = await queryRows<{ amount_micros: unknown }>(tx, batch.engine, sqlVoidLease, [nowMs, leaseId]);
      if (row) await releasePending(tx, batch.engine, accountId, toBigInt(row.amount_micros));
    },
  },

  /**
   * Settles the leased calls of one account that a batch runs together: each lease shrinks once by
   * what its charged calls had reserved (a lease the sweeper expired meanwhile already released
   * everything, and its calls post late, as a settled expired hold does; so do calls that outlived
   * their own hold timeout, whose reservation already went back to the lease), then every call
   * posts its actual amount, in order (src/ledger/posting.ts). An uncharged call leaves its
   * reservation in the lease for the next call, as a void does, so it writes no lease change that a
   * retry could repeat.
   */
  leaseSettle: {
    groupKey: (w: LeaseSettleWrite) => `lease-settle:${w.accountId}`,
    async run(tx: Tx, batch: Batch, items: LeaseSettleWrite[]): Promise<LeaseSettleResult[]> {
      const accountId = items[0].accountId;
      await batch.lockAccount(tx, accountId);
      const nowMs = batch.now();
      const shrinkBy = new Map<string, bigint>();
      for (const w of items) {
        if (w.expired || w.input.actualMicros === 0n) continue;
        shrinkBy.set(w.leaseId, (shrinkBy.get(w.leaseId) ?? 0n) + w.amount);
      }
      const gone = new Set<string>();
      for (const [leaseId, amount] of shrinkBy) {
        const [row] = await queryRows<{ id: string }>(tx, batch.engine, sqlShrinkLease, [amount, leaseId]);
        if (!row) gone.add(leaseId);
      }
      const postings = items.map((w) => {
        const late = w.expired || gone.has(w.leaseId);
        const released = late || w.input.actualMicros === 0n ? 0n : w.amount;
        return { ...w.input, releasedMicros: released, transferId: w.input.actualMicros > 0n ? newId('txn', nowMs) : null, late, nowMs };
      });
      const posted = await postUsages(tx, batch, accountId, postings);
      return posted.map((p, i) => ({ posted: p, late: postings[i].late }));
    },
  },
};

interface AccountAfterHold {
  credits_posted: unknown;
  debits_posted: unknown;
  debits_pending: unknown;
  overdraft_limit_micros: unknown;
}

// The hot path's statements (see src/store/prepared.ts).
const sqlReserve = prepare(`
  update accounts set debits_pending = debits_pending + ?
  where id = ? and credits_posted - debits_posted - debits_pending + overdraft_limit_micros >= ?
  returning credits_posted, debits_posted, debits_pending, overdraft_limit_micros`);
const sqlInsertHold = prepare(`
  insert into holds (id, account_id, workspace_id, amount_micros, status, idempotency_key, ref, expires_at,
    settled_micros, transfer_id, created_at, resolved_at, budget_ids, rejection)
  values (?, ?, ?, ?, ?, ?, ?, ?, null, null, ?, ?, ?, ?)
  on conflict (idempotency_key) do nothing
  returning id`);
const sqlClaimHold = prepare(`
  update holds set status = 'settled', settled_micros = ?, transfer_id = ?, resolved_at = ?, settled_late = ?
  where id = ? and account_id = ? and status = ? and kind = 'call'
  returning amount_micros, budget_ids`);
const sqlReservePending = prepare('update accounts set debits_pending = debits_pending + ? where id = ?');
const sqlReleasePending = prepare('update accounts set debits_pending = debits_pending - ? where id = ?');

/** Adds to the account's pending reservations, unconditionally (a balance lease growing: the caller checked what is available). */
export async function reservePending(tx: Tx, engine: Engine, accountId: string, amount: bigint): Promise<void> {
  await execute(tx, engine, sqlReservePending, [amount, accountId]);
}

/** Takes a released reservation off the account's pending total. */
export async function releasePending(tx: Tx, engine: Engine, accountId: string, amount: bigint): Promise<void> {
  await execute(tx, engine, sqlReleasePending, [amount, accountId]);
}

/** What the account has available to hold: balance less pending plus overdraft (null when there is no such account). */
export async function availableOf(tx: Tx, accountId: string): Promise<bigint | null> {
  const a = await tx
    .selectFrom('accounts')
    .select(['credits_posted', 'debits_posted', 'debits_pending', 'overdraft_limit_micros'])
    .where('id', '=', accountId)
    .executeTakeFirst();
  if (!a) return null;
  return toBigInt(a.credits_posted) - toBigInt(a.debits_posted) - toBigInt(a.debits_pending) + toBigInt(a.overdraft_limit_micros);
}

async function replayHold(tx: Tx, key: string, accountId: string, amount: bigint): Promise<HoldResult> {
  const h = await tx
    .selectFrom('holds')
    .select(['id', 'account_id', 'amount_micros', 'status', 'expires_at', 'rejection'])
    .where('idempotency_key', '=', key)
    .executeTakeFirstOrThrow();
  if (h.account_id !== accountId || toBigInt(h.amount_micros) !== amount) {
    throw conflict('idempotency_key_reused', `Idempotency key '${key}' was already used for a different hold.`);
  }
  if (h.status === 'rejected') {
    const availableMicros = (await availableOf(tx, accountId)) ?? 0n;
    const rejection = h.rejection
      ? (JSON.parse(h.rejection) as { reason: string; budget: { keyId: string; period: BudgetLimit['period']; limitMicros: string }; remainingMicros: string })
      : null;
    if (rejection?.reason === 'budget_exceeded') {
      const budget: BudgetLimit = { ...rejection.budget, limitMicros: BigInt(rejection.budget.limitMicros) };
      // As first answered: what the balance and the budget (as it stood then) both allow.
      return { ok: false, reason: 'budget_exceeded', holdId: h.id, availableMicros: min(availableMicros, BigInt(rejection.remainingMicros)), budget, replayed: true };
    }
    return { ok: false, reason: 'insufficient_credits', holdId: h.id, availableMicros, replayed: true };
  }
  return {
    ok: true,
    holdId: h.id,
    amountMicros: amount,
    expiresAt: Number(h.expires_at),
    availableAfterMicros: (await availableOf(tx, accountId)) ?? 0n,
    replayed: true,
  };
}

async function replaySettle(tx: Tx, input: SettleInput, accountId: string): Promise<SettleResult> {
  const h = await tx
    .selectFrom('holds')
    .select(['status', 'settled_micros', 'transfer_id', 'amount_micros', 'settled_late'])
    .where('id', '=', input.holdId)
    .where('account_id', '=', accountId)
    .where('kind', '=', 'call')
    .executeTakeFirst();
  if (!h) throw notFound('hold', input.holdId);
  if (h.status !== 'settled') throw conflict('hold_not_pending', `Hold '${input.holdId}' is ${h.status} and cannot be settled.`);
  const settled = toBigInt(h.settled_micros);
  if (settled !== input.actualMicros) {
    throw conflict('hold_already_settled', `Hold '${input.holdId}' was already settled for a different amount.`);
  }
  let balanceAfter = 0n;
  let overdrawn = 0n;
  if (h.transfer_id) {
    const t = await tx.selectFrom('transfers').select(['balance_after_micros', 'overdrawn_micros']).where('id', '=', h.transfer_id).executeTakeFirstOrThrow();
    balanceAfter = toBigInt(t.balance_after_micros);
    overdrawn = toBigInt(t.overdrawn_micros);
  } else {
    const a = await tx.selectFrom('accounts').select(['credits_posted', 'debits_posted']).where('id', '=', accountId).executeTakeFirstOrThrow();
    balanceAfter = toBigInt(a.credits_posted) - toBigInt(a.debits_posted);
  }
  // A late settlement released nothing: the sweeper had already released its reservation.
  const late = Number(h.settled_late) === 1;
  return {
    holdId: input.holdId,
    transferId: h.transfer_id,
    chargedMicros: settled,
    releasedMicros: late ? 0n : max(toBigInt(h.amount_micros) - settled, 0n),
    balanceAfterMicros: balanceAfter,
    overdrawnMicros: overdrawn,
    late,
    replayed: true,
  };
}

/** Claims an idempotency key inside the write's own transaction; a replay returns the stored answer. */
async function claimKey(tx: Tx, scope: string, key: string, requestHash: string, nowMs: number): Promise<{ fresh: true } | { fresh: false; response: string }> {
  const inserted = await tx
    .insertInto('idempotency_keys')
    .values({ scope, key, request_hash: requestHash, status: 'pending', response: '{}', created_at: nowMs })
    .onConflict((oc) => oc.columns(['scope', 'key']).doNothing())
    .returning('key')
    .executeTakeFirst();
  if (inserted) return { fresh: true };
  const row = await tx
    .selectFrom('idempotency_keys')
    .select(['request_hash', 'status', 'response'])
    .where('scope', '=', scope)
    .where('key', '=', key)
    .executeTakeFirstOrThrow();
  if (row.request_hash !== requestHash) {
    throw conflict('idempotency_key_reused', `Idempotency key '${key}' was already used with a different request.`);
  }
  assert(row.status === 'ok', `idempotency key ${scope}/${key} is committed without a result`);
  return { fresh: false, response: row.response };
}

async function completeKey(tx: Tx, scope: string, key: string, response: string): Promise<void> {
  await tx.updateTable('idempotency_keys').set({ status: 'ok', response }).where('scope', '=', scope).where('key', '=', key).execute();
}

const sqlShrinkLease = prepare("update holds set amount_micros = amount_micros - ? where id = ? and status = 'pending' returning id");
const sqlGrowLease = prepare(`
  update holds set amount_micros = amount_micros + ?, expires_at = case when expires_at > ? then expires_at else ? end
  where id = ? and status = 'pending' returning expires_at`);
const sqlVoidLease = prepare("update holds set status = 'voided', resolved_at = ? where id = ? and status = 'pending' returning amount_micros");

const invalidExpiry = () => invalid('invalid_expiry', "'expiresAt' must be a time in the future.", 'expiresAt');

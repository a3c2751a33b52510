// The credit ledger's writes: grants, two-phase holds (hold, settle, void), lot expiry and the
// hold sweeper. Every write is idempotent and runs inside one transaction through the group
// committer; after each write the ledger asserts what must hold (balances, floors) and a broken
// invariant aborts the transaction instead of being logged and ignored.
import { createHash } from 'node:crypto';
import type { Engine, Store } from '../store/db.ts';
import { AppError, conflict, invalid, notFound } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import { GroupCommitter, type CommitterOptions, type Tx } from './committer.ts';
import { fundingAccount, operatorAccounts, workspaceAccountId, type LotSource } from './accounts.ts';
import { lockExistingAccount, max, min } from './lots.ts';
import { postUsages } from './posting.ts';
import { parseCounterIds, postBudgets, releaseBudgets, reserveBudgets, type BudgetLimit } from './budgets.ts';
import { maxAbsMicros, maxAccountMicros, toBigInt } from './money.ts';
import { execute, prepare, queryRows } from '../store/prepared.ts';
import { insertRecords, type LedgerRecord } from './records.ts';

export interface GrantInput {
  workspaceId: string;
  amountMicros: bigint;
  source: LotSource;
  priority?: number;
  expiresAt?: number | null;
  note?: string | null;
  /** Unique per intended grant; generated when absent (the write then cannot be retried safely). */
  idempotencyKey?: string;
}

export interface GrantResult {
  lotId: string;
  transferId: string;
  replayed: boolean;
}

export interface HoldInput {
  workspaceId: string;
  amountMicros: bigint;
  timeoutMs: number;
  idempotencyKey: string;
  ref?: string | null;
  /** Spend caps (an API key's budgets) the hold must also fit in; reserved in the same transaction. */
  budgets?: BudgetLimit[];
}

export type HoldResult =
  | { ok: true; holdId: string; amountMicros: bigint; expiresAt: number; availableAfterMicros: bigint; replayed: boolean }
  | { ok: false; reason: 'insufficient_credits'; holdId: string; availableMicros: bigint; replayed: boolean }
  | { ok: false; reason: 'budget_exceeded'; holdId: string; availableMicros: bigint; budget: BudgetLimit; replayed: boolean };

export interface SettleInput {
  workspaceId: string;
  holdId: string;
  actualMicros: bigint;
  model?: string | null;
  tag?: string | null;
  ref?: string | null;
  note?: string | null;
  /** Rows written in the settlement's own transaction (the gateway's usage record): they commit if and only if the debit does. */
  records?: LedgerRecord[];
  /** The API key whose spend and request count this settlement adds to, and when it was used. */
  keyUsage?: { keyId: string; usedAtMs: number };
}

export interface SettleResult {
  holdId: string;
  transferId: string | null;
  chargedMicros: bigint;
  releasedMicros: bigint;
  balanceAfterMicros: bigint;
  /** The part of the charge no lot covered: the account went negative (or into its overdraft) by it. */
  overdrawnMicros: bigint;
  /** The hold had already expired; the charge was posted without a reservation. */
  late: boolean;
  replayed: boolean;
}

export interface VoidResult {
  holdId: string;
  status: 'voided' | 'expired' | 'rejected';
  releasedMicros: bigint;
  replayed: boolean;
}

export interface LedgerOptions extends CommitterOptions {
  now?: () => number;
}

/**
 * What the rest of Tollgate uses of the ledger: plain data in and out (records travel as rows,
 * not callbacks), so the writes can move (to a worker, to balance leases) without changing callers.
 */
export interface LedgerApi {
  grant(input: GrantInput): Promise<GrantResult>;
  hold(input: HoldInput): Promise<HoldResult>;
  settle(input: SettleInput): Promise<SettleResult>;
  void(workspaceId: string, holdId: string, records?: LedgerRecord[]): Promise<VoidResult>;
  sweepExpiredHolds(limit?: number): Promise<number>;
  expireLots(limit?: number): Promise<number>;
  setLimits(workspaceId: string, limits: LedgerLimits): Promise<void>;
  /** Resolves once every write submitted so far has committed or failed. */
  drain(): Promise<void>;
  /** Drains, then lets go of what the ledger holds of its own. */
  close(): Promise<void>;
}

export interface LedgerLimits {
  overdraftLimitMicros?: bigint;
  warningLimitMicros?: bigint | null;
}

export const defaultLotPriority = 10;
const maxNoteChars = 500;
const maxKeyChars = 255;
const maxHoldTimeoutMs = 24 * 60 * 60 * 1000;

export class Ledger implements LedgerApi {
  readonly store: Store;
  readonly committer: GroupCommitter;
  readonly now: () => number;

  constructor(store: Store, opts: LedgerOptions = {}) {
    this.store = store;
    this.committer = new GroupCommitter(store, opts);
    this.now = opts.now ?? Date.now;
  }

  /** Credits a workspace with a new lot, funded from the operator account of its source. */
  async grant(input: GrantInput): Promise<GrantResult> {
    validateAmount(input.amountMicros, 'credits', false);
    const priority = input.priority ?? defaultLotPriority;
    if (!Number.isSafeInteger(priority) || priority < 0 || priority > 1_000_000) {
      throw invalid('invalid_priority', "'priority' must be an integer from 0 to 1000000 (lower burns first).", 'priority');
    }
    const nowMs = this.now();
    if (input.expiresAt != null && !Number.isSafeInteger(input.expiresAt)) throw invalidExpiry();
    if (input.note != null && input.note.length > maxNoteChars) {
      throw invalid('note_too_long', `'note' is limited to ${maxNoteChars} characters.`, 'note');
    }
    const key = checkKey(input.idempotencyKey ?? newId('idem'));
    const requestHash = hashOf({
      workspaceId: input.workspaceId,
      amount: input.amountMicros.toString(),
      source: input.source,
      priority,
      expiresAt: input.expiresAt ?? null,
      note: input.note ?? null,
    });
    const accountId = workspaceAccountId(input.workspaceId);
    const funding = fundingAccount(input.source);

    return this.committer.submit(accountId, async (tx, batch) => {
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
    });
  }

  /**
   * Reserves credits for an in-flight call. Admits only when available (balance − pending +
   * overdraft limit) covers the amount; a refused hold is remembered under its key too.
   */
  async hold(input: HoldInput): Promise<HoldResult> {
    validateAmount(input.amountMicros, 'amount', true);
    checkHoldTimeout(input.timeoutMs);
    const key = checkKey(input.idempotencyKey);
    const accountId = workspaceAccountId(input.workspaceId);
    const amount = input.amountMicros;
    const engine = this.store.engine;

    return this.committer.submit(accountId, async (tx, batch) => {
      const nowMs = this.now();
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
    });
  }

  /**
   * Posts the actual amount of a held call and releases the rest of the hold. The real usage is
   * always recorded: an actual above the hold may take the account negative, which the result
   * reports as `overdrawnMicros`. Settling a hold the sweeper already expired posts it late.
   */
  async settle(input: SettleInput): Promise<SettleResult> {
    validateAmount(input.actualMicros, 'actual', true);
    const accountId = workspaceAccountId(input.workspaceId);
    const actual = input.actualMicros;
    const engine = this.store.engine;

    return this.committer.submit(accountId, async (tx, batch) => {
      await batch.lockAccount(tx, accountId);
      const nowMs = this.now();
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
    });
  }

  /** Releases a hold without charging anything. */
  async void(workspaceId: string, holdId: string, records?: LedgerRecord[]): Promise<VoidResult> {
    const accountId = workspaceAccountId(workspaceId);
    const engine = this.store.engine;
    return this.committer.submit(accountId, async (tx, batch) => {
      await batch.lockAccount(tx, accountId);
      const nowMs = this.now();
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
      const result: VoidResult = { holdId, status: 'voided', releasedMicros: amount, replayed: false };
      await insertRecords(tx, engine, records, { balanceAfterMicros: null, transferId: null });
      return result;
    });
  }

  /** Expires pending holds past their timeout, releasing their reservations. Returns how many. */
  async sweepExpiredHolds(limit = 500): Promise<number> {
    const nowMs = this.now();
    const due = await this.store.db
      .selectFrom('holds')
      .select(['id', 'account_id'])
      .where('status', '=', 'pending')
      .where('expires_at', '<=', BigInt(nowMs))
      .orderBy('expires_at')
      .limit(limit)
      .execute();
    const results = await Promise.all(
      due.map((h) =>
        this.committer.submit(h.account_id, async (tx, batch) => {
          await batch.lockAccount(tx, h.account_id);
          const claimed = await tx
            .updateTable('holds')
            .set({ status: 'expired', resolved_at: this.now() })
            .where('id', '=', h.id)
            .where('status', '=', 'pending')
            .returning(['amount_micros', 'budget_ids'])
            .executeTakeFirst();
          if (!claimed) return 0;
          await releasePending(tx, batch.engine, h.account_id, toBigInt(claimed.amount_micros));
          await releaseBudgets(tx, parseCounterIds(claimed.budget_ids), toBigInt(claimed.amount_micros));
          return 1;
        }),
      ),
    );
    return results.reduce<number>((a, b) => a + b, 0);
  }

  /** Expires lots past their expiry with an expiry transfer of what they had left. Returns how many. */
  async expireLots(limit = 500): Promise<number> {
    const nowMs = this.now();
    const due = await this.store.db
      .selectFrom('lots')
      .select(['id', 'account_id', 'workspace_id'])
      .where('expired_at', 'is', null)
      .where('expires_at', '<=', BigInt(nowMs))
      .orderBy('expires_at')
      .limit(limit)
      .execute();
    const results = await Promise.all(
      due.map((l) =>
        this.committer.submit(l.account_id, async (tx, batch) => {
          await batch.lockAccount(tx, l.account_id);
          const lot = await tx
            .selectFrom('lots')
            .select('remaining_micros')
            .where('id', '=', l.id)
            .where('expired_at', 'is', null)
            .executeTakeFirst();
          if (!lot) return 0;
          const remaining = toBigInt(lot.remaining_micros);
          const at = this.now();
          await tx.updateTable('lots').set({ remaining_micros: 0, expired_at: at }).where('id', '=', l.id).execute();
          if (remaining === 0n) return 1;
          const acct = await tx
            .updateTable('accounts')
            .set((eb) => ({
              debits_posted: eb('debits_posted', '+', remaining),
              expired_micros: eb('expired_micros', '+', remaining),
            }))
            .where('id', '=', l.account_id)
            .returning(['credits_posted', 'debits_posted', 'warning_limit_micros'])
            .executeTakeFirstOrThrow();
          const balanceAfter = toBigInt(acct.credits_posted) - toBigInt(acct.debits_posted);
          const transferId = newId('txn', at);
          await tx
            .insertInto('transfers')
            .values({
              id: transferId,
              kind: 'expiry',
              debit_account_id: l.account_id,
              credit_account_id: operatorAccounts.expired,
              amount_micros: remaining,
              workspace_id: l.workspace_id,
              hold_id: null,
              lot_id: l.id,
              model: null,
              tag: null,
              ref: null,
              note: null,
              balance_after_micros: balanceAfter,
              overdrawn_micros: 0n,
              created_at: at,
            })
            .execute();
          await tx.insertInto('lot_consumptions').values({ transfer_id: transferId, lot_id: l.id, amount_micros: remaining }).execute();
          batch.creditOperator(operatorAccounts.expired, remaining);
          await warnIfCrossed(tx, l.workspace_id, acct.warning_limit_micros, balanceAfter + remaining, balanceAfter, at);
          return 1;
        }),
      ),
    );
    return results.reduce<number>((a, b) => a + b, 0);
  }

  drain(): Promise<void> {
    return this.committer.drain();
  }

  /** The store is the caller's: closing the ledger only waits for its writes. */
  close(): Promise<void> {
    return this.drain();
  }

  /** Sets a workspace's overdraft limit and/or warning limit (null clears the warning limit). */
  async setLimits(workspaceId: string, limits: LedgerLimits): Promise<void> {
    if (limits.overdraftLimitMicros !== undefined) validateAmount(limits.overdraftLimitMicros, 'overdraftLimit', true);
    if (limits.warningLimitMicros != null) validateAmount(limits.warningLimitMicros, 'warningLimit', true);
    const accountId = workspaceAccountId(workspaceId);
    await this.committer.submit(accountId, async (tx) => {
      const patch: { overdraft_limit_micros?: bigint; warning_limit_micros?: bigint | null } = {};
      if (limits.overdraftLimitMicros !== undefined) patch.overdraft_limit_micros = limits.overdraftLimitMicros;
      if (limits.warningLimitMicros !== undefined) patch.warning_limit_micros = limits.warningLimitMicros;
      if (Object.keys(patch).length === 0) return;
      const res = await tx.updateTable('accounts').set(patch).where('id', '=', accountId).executeTakeFirst();
      if (res.numUpdatedRows !== 1n) throw notFound('workspace', workspaceId);
    });
  }
}

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

/** Writes a `balance.warning` event to the outbox when a debit takes the balance below the warning limit. */
export async function warnIfCrossed(tx: Tx, workspaceId: string, warningLimit: unknown, before: bigint, after: bigint, nowMs: number): Promise<void> {
  if (warningLimit === null || warningLimit === undefined) return;
  const limit = toBigInt(warningLimit);
  if (!(before >= limit && after < limit)) return;
  await tx
    .insertInto('outbox')
    .values({
      id: newId('evt', nowMs),
      topic: 'balance.warning',
      workspace_id: workspaceId,
      payload: JSON.stringify({ workspaceId, balanceMicros: after.toString(), warningLimitMicros: limit.toString() }),
      created_at: nowMs,
      delivered_at: null,
    })
    .execute();
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

const invalidExpiry = () => invalid('invalid_expiry', "'expiresAt' must be a time in the future.", 'expiresAt');

export function checkHoldTimeout(timeoutMs: number): void {
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > maxHoldTimeoutMs) {
    throw invalid('invalid_timeout', `hold timeout must be from 1 ms to ${maxHoldTimeoutMs} ms.`);
  }
}

export function checkKey(key: string): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > maxKeyChars) {
    throw invalid('invalid_idempotency_key', `Idempotency keys must be 1 to ${maxKeyChars} characters.`, 'Idempotency-Key');
  }
  return key;
}

export function validateAmount(micros: bigint, param: string, zeroAllowed: boolean): void {
  if (typeof micros !== 'bigint') throw new TypeError(`${param} must be a bigint of micro-credits`);
  if (micros < 0n || (!zeroAllowed && micros === 0n)) {
    throw invalid('invalid_amount', `'${param}' must be ${zeroAllowed ? 'zero or more' : 'greater than zero'}.`, param);
  }
  if (micros > maxAbsMicros) throw invalid('invalid_amount', `'${param}' is too large.`, param);
}

export function hashOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

/** A broken ledger invariant: never caught and ignored; it aborts the transaction it happened in. */
export class InvariantViolation extends Error {}

export function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new InvariantViolation(`ledger invariant violated: ${message}`);
}

export { AppError };

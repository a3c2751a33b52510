// The credit ledger's writes: grants, two-phase holds (hold, settle, void), lot expiry and the
// hold sweeper. Each is checked here and then runs as data (src/ledger/write-ops.ts) inside one
// transaction through the ledger's writer (src/ledger/writer.ts), which group-commits it. Every
// write is idempotent; after each write the ledger asserts what must hold (balances, floors) and
// a broken invariant aborts the transaction instead of being logged and ignored.
import { createHash } from 'node:crypto';
import type { Store } from '../store/db.ts';
import { AppError, invalid } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import type { CommitterOptions, WriteOptions } from './committer.ts';
import { fundingAccount, workspaceAccountId, type LotSource } from './accounts.ts';
import type { BudgetLimit } from './budgets.ts';
import { maxAbsMicros } from './money.ts';
import type { LedgerRecord } from './records.ts';
import { InlineWriter, type LedgerWriter } from './writer.ts';

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
  /** Where the writes run (default: in this thread, through the store's connection). */
  writer?: LedgerWriter;
}

/**
 * What the rest of Tollgate uses of the ledger: plain data in and out (records travel as rows,
 * not callbacks), so the writes can move (to a worker, to balance leases) without changing callers.
 */
export interface LedgerApi {
  grant(input: GrantInput): Promise<GrantResult>;
  hold(input: HoldInput): Promise<HoldResult>;
  settle(input: SettleInput, opts?: WriteOptions): Promise<SettleResult>;
  void(workspaceId: string, holdId: string, records?: LedgerRecord[], opts?: WriteOptions): Promise<VoidResult>;
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
  readonly writer: LedgerWriter;
  readonly now: () => number;

  constructor(store: Store, opts: LedgerOptions = {}) {
    this.store = store;
    this.now = opts.now ?? Date.now;
    this.writer = opts.writer ?? new InlineWriter(store, { ...opts, now: this.now });
  }

  /** Credits a workspace with a new lot, funded from the operator account of its source. */
  async grant(input: GrantInput): Promise<GrantResult> {
    validateAmount(input.amountMicros, 'credits', false);
    const priority = input.priority ?? defaultLotPriority;
    if (!Number.isSafeInteger(priority) || priority < 0 || priority > 1_000_000) {
      throw invalid('invalid_priority', "'priority' must be an integer from 0 to 1000000 (lower burns first).", 'priority');
    }
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
    return this.writer.write(accountId, 'grant', { input, accountId, funding: fundingAccount(input.source), priority, key, requestHash });
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
    return this.writer.write(accountId, 'hold', { input, accountId, key });
  }

  /**
   * Posts the actual amount of a held call and releases the rest of the hold. The real usage is
   * always recorded: an actual above the hold may take the account negative, which the result
   * reports as `overdrawnMicros`. Settling a hold the sweeper already expired posts it late.
   */
  async settle(input: SettleInput, opts?: WriteOptions): Promise<SettleResult> {
    validateAmount(input.actualMicros, 'actual', true);
    const accountId = workspaceAccountId(input.workspaceId);
    return this.writer.write(accountId, 'settle', { input, accountId }, opts);
  }

  /** Releases a hold without charging anything. */
  async void(workspaceId: string, holdId: string, records?: LedgerRecord[], opts?: WriteOptions): Promise<VoidResult> {
    const accountId = workspaceAccountId(workspaceId);
    return this.writer.write(accountId, 'void', { holdId, accountId, records }, opts);
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
    const results = await Promise.all(due.map((h) => this.writer.write(h.account_id, 'expireHold', { holdId: h.id, accountId: h.account_id })));
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
      due.map((l) => this.writer.write(l.account_id, 'expireLot', { lotId: l.id, accountId: l.account_id, workspaceId: l.workspace_id })),
    );
    return results.reduce<number>((a, b) => a + b, 0);
  }

  drain(): Promise<void> {
    return this.writer.drain();
  }

  /** The store is the caller's; the writer (and its thread, if it has one) is the ledger's. */
  close(): Promise<void> {
    return this.writer.close();
  }

  /** Sets a workspace's overdraft limit and/or warning limit (null clears the warning limit). */
  async setLimits(workspaceId: string, limits: LedgerLimits): Promise<void> {
    if (limits.overdraftLimitMicros !== undefined) validateAmount(limits.overdraftLimitMicros, 'overdraftLimit', true);
    if (limits.warningLimitMicros != null) validateAmount(limits.warningLimitMicros, 'warningLimit', true);
    const accountId = workspaceAccountId(workspaceId);
    await this.writer.write(accountId, 'setLimits', { workspaceId, accountId, limits });
  }
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

export { AppError };

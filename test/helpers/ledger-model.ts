// A tiny in-memory reference ledger for the seeded operation-sequence test: the same rules as
// src/ledger written as plainly as possible (plain maps, no SQL, no batching), so a difference
// between the two after any step is a bug in one of them. Ids are the real ledger's: the model
// keys lots by their grant's idempotency key and holds by their hold key, and learns the real ids
// through bindLot/bindHold once the real write has answered.
import type { LotSource } from '../../src/ledger/accounts.ts';

export interface ModelAccount {
  credits: bigint;
  debits: bigint;
  pending: bigint;
  overdraft: bigint;
  warning: bigint | null;
  purchased: bigint;
  consumed: bigint;
  expired: bigint;
  /** balance.warning events written to the outbox. */
  warnings: number;
}

export interface ModelLot {
  key: string;
  workspaceId: string;
  source: LotSource;
  amount: bigint;
  remaining: bigint;
  repaid: bigint;
  priority: number;
  expiresAt: number | null;
  createdAt: number;
  /** Creation order: the real ids sort this way within a process and a millisecond. */
  seq: number;
  expired: boolean;
  lotId: string | null;
  transferId: string | null;
}

export type HoldStatus = 'pending' | 'settled' | 'voided' | 'expired' | 'rejected';

export interface ModelHold {
  key: string;
  workspaceId: string;
  amount: bigint;
  status: HoldStatus;
  expiresAt: number;
  settled: bigint | null;
  /** What the settlement's transfer recorded (null when settled at zero: no transfer). */
  settleBalanceAfter: bigint | null;
  settleOverdrawn: bigint;
  settledLate: boolean;
  holdId: string | null;
}

export interface ModelTransfer {
  kind: 'grant' | 'usage' | 'expiry';
  /** Signed from the workspace's side, as listTransactions reports it. */
  amount: bigint;
  balanceAfter: bigint;
  overdrawn: bigint;
}

export type Expected<T> = { ok: T } | { error: string };

export interface GrantInputModel {
  workspaceId: string;
  amountMicros: bigint;
  source: LotSource;
  priority: number;
  expiresAt: number | null;
  note: string | null;
  idempotencyKey: string;
}

export type GrantExpect = { fresh: true } | { fresh: false; lotKey: string };

export type HoldExpect =
  | { ok: true; fresh: boolean; holdKey: string; amount: bigint; expiresAt: number; availableAfter: bigint }
  | { ok: false; fresh: boolean; holdKey: string; available: bigint };

export interface SettleExpect {
  charged: bigint;
  released: bigint;
  balanceAfter: bigint;
  overdrawn: bigint;
  late: boolean;
  replayed: boolean;
  hasTransfer: boolean;
}

export interface VoidExpect {
  status: 'voided' | 'expired' | 'rejected';
  released: bigint;
  replayed: boolean;
}

const min = (a: bigint, b: bigint) => (a < b ? a : b);
const max = (a: bigint, b: bigint) => (a > b ? a : b);

export class LedgerModel {
  readonly accounts = new Map<string, ModelAccount>();
  readonly lots: ModelLot[] = [];
  readonly holds = new Map<string, ModelHold>();
  readonly transfers = new Map<string, ModelTransfer[]>();
  readonly #grantKeys = new Map<string, { request: string; lotKey: string }>();
  #lotSeq = 0;

  addWorkspace(workspaceId: string): void {
    this.accounts.set(workspaceId, {
      credits: 0n,
      debits: 0n,
      pending: 0n,
      overdraft: 0n,
      warning: null,
      purchased: 0n,
      consumed: 0n,
      expired: 0n,
      warnings: 0,
    });
    this.transfers.set(workspaceId, []);
  }

  balance(workspaceId: string): bigint {
    const a = this.#account(workspaceId);
    return a.credits - a.debits;
  }

  available(workspaceId: string): bigint {
    const a = this.#account(workspaceId);
    return a.credits - a.debits - a.pending + a.overdraft;
  }

  hasGrantKey(key: string): boolean {
    return this.#grantKeys.has(key);
  }

  grantRequestOf(key: string): GrantInputModel {
    const g = this.#grantKeys.get(key);
    if (!g) throw new Error(`no grant under ${key}`);
    return JSON.parse(g.request, (_k, v) => (typeof v === 'string' && v.startsWith('#big:') ? BigInt(v.slice(5)) : v)) as GrantInputModel;
  }

  grant(input: GrantInputModel, nowMs: number): Expected<GrantExpect> {
    const request = JSON.stringify(input, (_k, v) => (typeof v === 'bigint' ? `#big:${v}` : v));
    const previous = this.#grantKeys.get(input.idempotencyKey);
    if (previous) {
      if (previous.request !== request) return { error: 'idempotency_key_reused' };
      return { ok: { fresh: false, lotKey: previous.lotKey } };
    }
    const a = this.accounts.get(input.workspaceId);
    if (!a) return { error: 'workspace_not_found' };
    const balanceBefore = a.credits - a.debits;
    a.credits += input.amountMicros;
    if (input.source === 'purchase') a.purchased += input.amountMicros;
    const repaid = balanceBefore < 0n ? min(-balanceBefore, input.amountMicros) : 0n;
    this.lots.push({
      key: input.idempotencyKey,
      workspaceId: input.workspaceId,
      source: input.source,
      amount: input.amountMicros,
      remaining: input.amountMicros - repaid,
      repaid,
      priority: input.priority,
      expiresAt: input.expiresAt,
      createdAt: nowMs,
      seq: this.#lotSeq++,
      expired: false,
      lotId: null,
      transferId: null,
    });
    this.#grantKeys.set(input.idempotencyKey, { request, lotKey: input.idempotencyKey });
    this.#log(input.workspaceId, { kind: 'grant', amount: input.amountMicros, balanceAfter: a.credits - a.debits, overdrawn: 0n });
    return { ok: { fresh: true } };
  }

  bindLot(key: string, lotId: string, transferId: string): void {
    const lot = this.lotByKey(key);
    lot.lotId = lotId;
    lot.transferId = transferId;
  }

  lotByKey(key: string): ModelLot {
    const lot = this.lots.find((l) => l.key === key);
    if (!lot) throw new Error(`no lot for grant ${key}`);
    return lot;
  }

  hold(input: { workspaceId: string; amountMicros: bigint; timeoutMs: number; idempotencyKey: string }, nowMs: number): Expected<HoldExpect> {
    const previous = this.holds.get(input.idempotencyKey);
    if (previous) {
      if (previous.workspaceId !== input.workspaceId || previous.amount !== input.amountMicros) return { error: 'idempotency_key_reused' };
      if (previous.status === 'rejected') return { ok: { ok: false, fresh: false, holdKey: previous.key, available: this.available(input.workspaceId) } };
      return {
        ok: { ok: true, fresh: false, holdKey: previous.key, amount: previous.amount, expiresAt: previous.expiresAt, availableAfter: this.available(input.workspaceId) },
      };
    }
    const a = this.accounts.get(input.workspaceId);
    if (!a) return { error: 'workspace_not_found' };
    const admitted = this.available(input.workspaceId) >= input.amountMicros;
    const expiresAt = nowMs + input.timeoutMs;
    this.holds.set(input.idempotencyKey, {
      key: input.idempotencyKey,
      workspaceId: input.workspaceId,
      amount: input.amountMicros,
      status: admitted ? 'pending' : 'rejected',
      expiresAt,
      settled: null,
      settleBalanceAfter: null,
      settleOverdrawn: 0n,
      settledLate: false,
      holdId: null,
    });
    if (!admitted) return { ok: { ok: false, fresh: true, holdKey: input.idempotencyKey, available: this.available(input.workspaceId) } };
    a.pending += input.amountMicros;
    return {
      ok: { ok: true, fresh: true, holdKey: input.idempotencyKey, amount: input.amountMicros, expiresAt, availableAfter: this.available(input.workspaceId) },
    };
  }

  bindHold(key: string, holdId: string): void {
    this.holds.get(key)!.holdId = holdId;
  }

  /** `holdKey` null stands for a hold id that does not exist (or belongs to another workspace). */
  settle(workspaceId: string, holdKey: string | null, actual: bigint): Expected<SettleExpect> {
    const h = holdKey === null ? undefined : this.holds.get(holdKey);
    if (!h || h.workspaceId !== workspaceId) return { error: 'hold_not_found' };
    const a = this.#account(workspaceId);
    if (h.status === 'settled') {
      if (h.settled !== actual) return { error: 'hold_already_settled' };
      // A replay answers from what was stored, a late settlement's included.
      return {
        ok: {
          charged: actual,
          released: h.settledLate ? 0n : max(h.amount - actual, 0n),
          balanceAfter: h.settleBalanceAfter ?? a.credits - a.debits,
          overdrawn: h.settleOverdrawn,
          late: h.settledLate,
          replayed: true,
          hasTransfer: actual > 0n,
        },
      };
    }
    if (h.status !== 'pending' && h.status !== 'expired') return { error: 'hold_not_pending' };
    const late = h.status === 'expired';
    const released = late ? 0n : h.amount;
    a.pending -= released;
    a.debits += actual;
    a.consumed += actual;
    const balanceAfter = a.credits - a.debits;
    let overdrawn = 0n;
    if (actual > 0n) {
      overdrawn = this.#burn(workspaceId, actual);
      this.#warn(a, balanceAfter + actual, balanceAfter);
      this.#log(workspaceId, { kind: 'usage', amount: -actual, balanceAfter, overdrawn });
    }
    h.status = 'settled';
    h.settledLate = late;
    h.settled = actual;
    h.settleBalanceAfter = actual > 0n ? balanceAfter : null;
    h.settleOverdrawn = overdrawn;
    return { ok: { charged: actual, released: late ? 0n : max(released - actual, 0n), balanceAfter, overdrawn, late, replayed: false, hasTransfer: actual > 0n } };
  }

  void(workspaceId: string, holdKey: string | null): Expected<VoidExpect> {
    const h = holdKey === null ? undefined : this.holds.get(holdKey);
    if (!h || h.workspaceId !== workspaceId) return { error: 'hold_not_found' };
    if (h.status === 'settled') return { error: 'hold_already_settled' };
    if (h.status !== 'pending') return { ok: { status: h.status, released: 0n, replayed: true } };
    h.status = 'voided';
    this.#account(workspaceId).pending -= h.amount;
    return { ok: { status: 'voided', released: h.amount, replayed: false } };
  }

  sweepExpiredHolds(nowMs: number): number {
    let n = 0;
    for (const h of this.holds.values()) {
      if (h.status !== 'pending' || h.expiresAt > nowMs) continue;
      h.status = 'expired';
      this.#account(h.workspaceId).pending -= h.amount;
      n++;
    }
    return n;
  }

  expireLots(nowMs: number): number {
    let n = 0;
    for (const lot of this.lots) {
      if (lot.expired || lot.expiresAt === null || lot.expiresAt > nowMs) continue;
      lot.expired = true;
      n++;
      const remaining = lot.remaining;
      lot.remaining = 0n;
      if (remaining === 0n) continue;
      const a = this.#account(lot.workspaceId);
      a.debits += remaining;
      a.expired += remaining;
      const balanceAfter = a.credits - a.debits;
      this.#warn(a, balanceAfter + remaining, balanceAfter);
      this.#log(lot.workspaceId, { kind: 'expiry', amount: -remaining, balanceAfter, overdrawn: 0n });
    }
    return n;
  }

  setLimits(workspaceId: string, limits: { overdraftLimitMicros?: bigint; warningLimitMicros?: bigint | null }): Expected<null> {
    const a = this.accounts.get(workspaceId);
    if (!a) return { error: 'workspace_not_found' };
    if (limits.overdraftLimitMicros !== undefined) a.overdraft = limits.overdraftLimitMicros;
    if (limits.warningLimitMicros !== undefined) a.warning = limits.warningLimitMicros;
    return { ok: null };
  }

  /** Lots in the order a debit burns them: priority, then soonest expiry (none last), then oldest. */
  burnOrder(workspaceId: string): ModelLot[] {
    return this.lots
      .filter((l) => l.workspaceId === workspaceId)
      .sort(
        (x, y) =>
          x.priority - y.priority ||
          Number(x.expiresAt === null) - Number(y.expiresAt === null) ||
          (x.expiresAt ?? 0) - (y.expiresAt ?? 0) ||
          x.createdAt - y.createdAt ||
          x.seq - y.seq,
      );
  }

  #burn(workspaceId: string, amount: bigint): bigint {
    let left = amount;
    for (const lot of this.burnOrder(workspaceId)) {
      if (left === 0n) break;
      const take = min(left, lot.remaining);
      lot.remaining -= take;
      left -= take;
    }
    return left;
  }

  #warn(a: ModelAccount, before: bigint, after: bigint): void {
    if (a.warning !== null && before >= a.warning && after < a.warning) a.warnings++;
  }

  #log(workspaceId: string, t: ModelTransfer): void {
    this.transfers.get(workspaceId)!.push(t);
  }

  #account(workspaceId: string): ModelAccount {
    const a = this.accounts.get(workspaceId);
    if (!a) throw new Error(`model has no workspace ${workspaceId}`);
    return a;
  }
}

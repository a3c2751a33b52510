// Balance leases: an instance reserves a slice of a workspace's available credits with one ledger
// hold (kind 'lease') and admits calls against that slice in memory, so a call's admission costs
// no database write; its settlement is still one durable transaction (debit, lots, transfer,
// usage record) that also shrinks the lease by what the call had reserved. Leases are what make
// this safe across processes: each instance can only admit what its own lease holds, and the
// lease itself was admitted against the workspace's available credits like any hold, so the
// workspace can never be committed past what it has. Near the limit leases stop: a lease is at
// most 1/`availableDivisor` of what is available, and when that is too small for a handful of
// calls every call goes to the ledger directly (with the gateway's strict mode), after the
// instance has handed back whatever its lease still held free. Calls with a key budget are held
// directly too, since their budget counters are reserved in the hold's own transaction.
// A crashed instance's lease is released by the hold sweeper when it expires, like any hold.
import { newId } from '../lib/ids.ts';
import { conflict } from '../lib/errors.ts';
import { workspaceAccountId } from './accounts.ts';
import type { LedgerRecord } from './records.ts';
import type { LeaseSettleResult } from './write-ops.ts';
import type { WriteOptions } from './committer.ts';
import {
  checkHoldTimeout,
  checkKey,
  validateAmount,
  type GrantInput,
  type GrantResult,
  type HoldInput,
  type HoldResult,
  type Ledger,
  type LedgerApi,
  type LedgerLimits,
  type SettleInput,
  type SettleResult,
  type VoidResult,
} from './ledger.ts';

export interface LeaseOptions {
  /** A lease holds free at most this many calls of the size that made it grow. */
  callsPerLease?: number;
  /** ...and at most this share (1/n) of what the workspace has available. */
  availableDivisor?: number;
  /** Below room for this many calls, no lease: every call is held in the ledger directly. */
  minCallsPerLease?: number;
  /** How long close() waits for leased calls in flight to end before handing the leases back (default 10 s). */
  closeWaitMs?: number;
}

const defaultCallsPerLease = 256n;
const defaultAvailableDivisor = 8n;
const defaultMinCallsPerLease = 4n;
/** Attempts to admit against a lease (each may wait for it to grow) before holding directly. */
const maxLeaseAttempts = 4;
/** After a workspace was found near its limit for calls of some size, calls as large are held directly for this long without asking again. */
const nearLimitMemoMs = 1000;
const defaultCloseWaitMs = 10_000;
/** Leased calls that outlived their hold timeout are remembered this long for a late settlement. */
const expiredCallMemoryMs = 24 * 60 * 60 * 1000;

interface Lease {
  /** The id of the lease's holds row. */
  id: string;
  workspaceId: string;
  accountId: string;
  /** What the lease row reserves, as of its last committed change. */
  amount: bigint;
  /** What calls admitted against it and not yet settled or voided reserve. */
  reserved: bigint;
  inFlight: number;
  /** The lease row's expiry, as of its last committed change. */
  expiresAt: number;
  /** Admits new calls; false once retired (handed back) or found expired. */
  open: boolean;
  /** The hand-back under way (one at a time per lease), and whether another must follow it. */
  returning: Promise<void> | null;
  returnAgain: boolean;
  /** The row is voided: nothing more to hand back. */
  finished: boolean;
}

interface LeasedCall {
  lease: Lease;
  workspaceId: string;
  amount: bigint;
  key: string;
  admitted: Extract<HoldResult, { ok: true }>;
  /** A settlement or void is under way (or finished). */
  done: boolean;
  /** Its settlement failed: nothing to wait for at close (it stays reserved until its timeout). */
  failed: boolean;
  /** Past its hold timeout without a settlement (see sweepExpiredHolds): its reservation went back to the lease. */
  expired: boolean;
}

export interface LeaseStats {
  leases: number;
  leasedCallsInFlight: number;
  /** Admissions served from memory, and those that took a database write (lease growth or a direct hold). */
  admittedFromLease: number;
  leaseWrites: number;
  directHolds: number;
}

export class LeasedLedger implements LedgerApi {
  readonly inner: Ledger;
  readonly stats: LeaseStats = { leases: 0, leasedCallsInFlight: 0, admittedFromLease: 0, leaseWrites: 0, directHolds: 0 };
  readonly #callsPerLease: bigint;
  readonly #divisor: bigint;
  readonly #minCalls: bigint;
  readonly #closeWaitMs: number;
  readonly #now: () => number;
  readonly #leases = new Map<string, Lease>();
  readonly #calls = new Map<string, LeasedCall>();
  readonly #byKey = new Map<string, LeasedCall>();
  /** The one growth (or creation) of a workspace's lease in flight. */
  readonly #growth = new Map<string, Promise<'grown' | 'near_limit'>>();
  readonly #nearLimit = new Map<string, { until: number; needMicros: bigint }>();
  /** Leased calls whose hold timeout passed unsettled, by hold id: a settlement still posts, late. */
  readonly #expiredCalls = new Map<string, LeasedCall>();
  #closing = false;
  /** Hand-backs and final releases still running, awaited by drain(). */
  readonly #background = new Set<Promise<void>>();

  constructor(inner: Ledger, opts: LeaseOptions = {}) {
    this.inner = inner;
    this.#callsPerLease = BigInt(opts.callsPerLease ?? defaultCallsPerLease);
    this.#divisor = BigInt(opts.availableDivisor ?? defaultAvailableDivisor);
    this.#minCalls = BigInt(opts.minCallsPerLease ?? defaultMinCallsPerLease);
    if (this.#callsPerLease < 1n || this.#divisor < 1n || this.#minCalls < 1n) throw new Error('lease options must be positive');
    this.#closeWaitMs = opts.closeWaitMs ?? defaultCloseWaitMs;
    // The ledger's clock: the lease rows it writes and the admissions made here read the same time.
    this.#now = inner.now;
  }

  grant(input: GrantInput): Promise<GrantResult> {
    return this.inner.grant(input);
  }

  async hold(input: HoldInput): Promise<HoldResult> {
    validateAmount(input.amountMicros, 'amount', true);
    checkHoldTimeout(input.timeoutMs);
    const key = checkKey(input.idempotencyKey);
    // Key budgets are reserved in the hold's own transaction, and so is a zero amount's nothing.
    if ((input.budgets && input.budgets.length > 0) || input.amountMicros === 0n) return this.#direct(input);
    const replay = this.#byKey.get(key);
    if (replay) {
      if (replay.workspaceId !== input.workspaceId || replay.amount !== input.amountMicros) {
        throw conflict('idempotency_key_reused', `Idempotency key '${key}' was already used for a different hold.`);
      }
      return { ...replay.admitted, replayed: true };
    }
    const ws = input.workspaceId;
    const near = this.#nearLimit.get(ws);
    if (near && near.until <= this.#now()) this.#nearLimit.delete(ws);
    if (!this.#closing && (!near || near.until <= this.#now() || input.amountMicros < near.needMicros)) {
      for (let attempt = 0; attempt < maxLeaseAttempts; attempt++) {
        const lease = this.#leases.get(ws);
        if (lease && this.#fits(lease, input)) return this.#admit(lease, input, key);
        const outcome = await (this.#growth.get(ws) ?? this.#grow(input, lease ?? null));
        if (outcome === 'near_limit') {
          // Calls at least this large are held directly for a while; a smaller one may still fit a lease.
          const known = this.#nearLimit.get(ws);
          const needMicros = known && known.until > this.#now() && known.needMicros < input.amountMicros ? known.needMicros : input.amountMicros;
          this.#nearLimit.set(ws, { until: this.#now() + nearLimitMemoMs, needMicros });
          break;
        }
      }
    }
    // Near the limit (or admissions keep outrunning growth): hand back what the lease holds free
    // so the direct hold sees every available credit, then hold in the ledger.
    const lease = this.#leases.get(ws);
    // A hand-back that fails leaves the credits reserved until the sweeper expires the lease: the
    // direct hold then sees less, never more, than is available.
    if (lease) await this.#retire(lease).catch(() => undefined);
    return this.#direct(input);
  }

  async settle(input: SettleInput, opts?: WriteOptions): Promise<SettleResult> {
    const call = this.#calls.get(input.holdId) ?? this.#expiredCalls.get(input.holdId);
    if (!call || call.workspaceId !== input.workspaceId) return this.inner.settle(input, opts);
    validateAmount(input.actualMicros, 'actual', true);
    if (call.done) throw conflict('hold_not_pending', `Hold '${input.holdId}' is already being settled.`);
    call.done = true;
    const { lease } = call;
    let outcome: LeaseSettleResult;
    try {
      outcome = await this.inner.writer.write(lease.accountId, 'leaseSettle', {
        accountId: lease.accountId,
        leaseId: lease.id,
        amount: call.amount,
        expired: call.expired,
        input,
      }, opts);
    } catch (err) {
      // The settlement may have failed for good, or (a connection lost at COMMIT) succeeded after
      // all: either way this lease's numbers in memory can no longer be trusted to match its row.
      // It admits nothing more and is ended from what its row says; the call stays reserved until
      // it is settled again or its hold timeout passes.
      call.done = false;
      call.failed = true;
      if (!call.expired) void this.#retire(lease);
      throw err;
    }
    const { posted: result, late } = outcome;
    if (call.expired) {
      this.#expiredCalls.delete(input.holdId);
      return result;
    }
    const charged = input.actualMicros > 0n;
    this.#release(call, late || !charged ? 0n : call.amount);
    if (late) this.#stopAdmitting(lease);
    // An uncharged call gave its whole reservation up, back to the lease rather than the account.
    return late || charged ? result : { ...result, releasedMicros: call.amount };
  }

  async void(workspaceId: string, holdId: string, records?: LedgerRecord[], opts?: WriteOptions): Promise<VoidResult> {
    const expired = this.#expiredCalls.get(holdId);
    if (expired && expired.workspaceId === workspaceId && !expired.done) {
      // As for a hold the sweeper expired: already released, nothing to write.
      this.#expiredCalls.delete(holdId);
      return { holdId, status: 'expired', releasedMicros: 0n, replayed: true };
    }
    const call = this.#calls.get(holdId);
    if (!call || call.workspaceId !== workspaceId) return this.inner.void(workspaceId, holdId, records, opts);
    if (call.done) throw conflict('hold_not_pending', `Hold '${holdId}' is already being settled.`);
    call.done = true;
    // Nothing is charged, so the lease keeps the reservation for the next call: only the records
    // need a write. The reservation is released whether or not they could be written (they are
    // metadata; a call that is never charged must not keep credits reserved).
    try {
      if (records && records.length > 0) await this.inner.writer.write(call.lease.accountId, 'records', { records }, opts);
    } finally {
      this.#release(call, 0n);
    }
    return { holdId, status: 'voided', releasedMicros: call.amount, replayed: false };
  }

  /**
   * Expires the ledger's holds past their timeout and, as the ledger does to a hold, releases the
   * reservations of this instance's leased calls past theirs (back to their lease). A later
   * settlement of such a call still posts, late, as for an expired hold.
   */
  async sweepExpiredHolds(limit?: number): Promise<number> {
    const nowMs = this.#now();
    let expired = 0;
    for (const call of [...this.#calls.values()]) {
      if (call.done || call.admitted.expiresAt > nowMs) continue;
      call.expired = true;
      this.#release(call, 0n);
      this.#expiredCalls.set(call.admitted.holdId, call);
      expired++;
    }
    for (const [id, call] of this.#expiredCalls) if (call.admitted.expiresAt + expiredCallMemoryMs <= nowMs) this.#expiredCalls.delete(id);
    return expired + (await this.inner.sweepExpiredHolds(limit));
  }

  expireLots(limit?: number): Promise<number> {
    return this.inner.expireLots(limit);
  }

  setLimits(workspaceId: string, limits: LedgerLimits): Promise<void> {
    return this.inner.setLimits(workspaceId, limits);
  }

  /** Leased calls of a workspace admitted and not yet settled or voided (in this instance). */
  leasedCallsInFlight(workspaceId: string): number {
    let n = 0;
    for (const c of this.#calls.values()) if (c.workspaceId === workspaceId) n++;
    return n;
  }

  async drain(): Promise<void> {
    do {
      await Promise.all(this.#background);
      await this.inner.drain();
    } while (this.#background.size > 0);
  }

  /**
   * Stops growing leases, waits (at most `closeWaitMs`) for the leased calls in flight to end,
   * hands every lease back, then drains. What calls still in flight after the wait reserve stays
   * held until the sweeper expires the lease.
   */
  async close(): Promise<void> {
    this.#closing = true;
    const deadline = Date.now() + this.#closeWaitMs;
    const running = () => [...this.#calls.values()].some((c) => !c.failed);
    while (running() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    await this.drain();
    await Promise.allSettled([...this.#leases.values()].map((l) => this.#retire(l)));
    await this.drain();
    await this.inner.close();
  }

  #fits(lease: Lease, input: HoldInput): boolean {
    return lease.open && lease.amount - lease.reserved >= input.amountMicros && lease.expiresAt - this.#now() >= input.timeoutMs;
  }

  #admit(lease: Lease, input: HoldInput, key: string): HoldResult {
    const nowMs = this.#now();
    const holdId = newId('hold', nowMs);
    lease.reserved += input.amountMicros;
    lease.inFlight++;
    this.stats.leasedCallsInFlight++;
    this.stats.admittedFromLease++;
    const admitted = {
      ok: true as const,
      holdId,
      amountMicros: input.amountMicros,
      expiresAt: nowMs + input.timeoutMs,
      // What this instance's lease still has free: a lower bound of the workspace's available credits.
      availableAfterMicros: lease.amount - lease.reserved,
      replayed: false,
    };
    const call: LeasedCall = { lease, workspaceId: input.workspaceId, amount: input.amountMicros, key, admitted, done: false, failed: false, expired: false };
    this.#calls.set(holdId, call);
    this.#byKey.set(key, call);
    return admitted;
  }

  /** A leased call ended: its reservation leaves the lease (and `fromLease` leaves the lease row, as committed). */
  #release(call: LeasedCall, fromLease: bigint): void {
    const { lease } = call;
    this.#calls.delete(call.admitted.holdId);
    this.#byKey.delete(call.key);
    lease.reserved -= call.amount;
    lease.amount -= fromLease;
    lease.inFlight--;
    this.stats.leasedCallsInFlight--;
    // A retired lease gives back what each ending call leaves free, and ends with its last call.
    if (!lease.open) void this.#returnFree(lease);
  }

  #direct(input: HoldInput): Promise<HoldResult> {
    this.stats.directHolds++;
    return this.inner.hold(input);
  }

  /**
   * Grows the workspace's lease (creating it when there is none) so it has room for `input` and
   * more, and pushes its expiry out. One growth per workspace at a time; other calls wait for it.
   * A lease already retired is not grown: a new one is made instead. One retired while its growth
   * was on the way hands back what the growth added.
   */
  #grow(input: HoldInput, lease: Lease | null): Promise<'grown' | 'near_limit'> {
    const accountId = workspaceAccountId(input.workspaceId);
    const need = input.amountMicros;
    // The free part is read now, not when the write runs (see leaseGrow in write-ops.ts).
    const open = lease && lease.open ? lease : null;
    const growth = this.inner.writer.write(accountId, 'leaseGrow', {
      workspaceId: input.workspaceId,
      accountId,
      need,
      leaseId: open?.id ?? null,
      free: open ? open.amount - open.reserved : 0n,
      callsPerLease: this.#callsPerLease,
      divisor: this.#divisor,
      minCalls: this.#minCalls,
      closing: this.#closing,
      timeoutMs: input.timeoutMs,
    });
    const done = growth
      .then((outcome): 'grown' | 'near_limit' => {
        this.stats.leaseWrites++;
        if (outcome.kind === 'near_limit') return 'near_limit';
        if (outcome.kind === 'lease_gone') {
          if (lease) this.#stopAdmitting(lease);
          return 'grown';
        }
        let grown: Lease | null = lease;
        if (outcome.created) {
          grown = {
            id: outcome.leaseId,
            workspaceId: input.workspaceId,
            accountId,
            amount: outcome.added,
            reserved: 0n,
            inFlight: 0,
            expiresAt: outcome.expiresAt,
            open: true,
            returning: null,
            returnAgain: false,
            finished: false,
          };
          this.#leases.set(input.workspaceId, grown);
          this.stats.leases++;
        } else if (lease) {
          lease.amount += outcome.added;
          lease.expiresAt = Math.max(lease.expiresAt, outcome.expiresAt);
        }
        // The lease was retired, or close() began, while the growth was on its way: what it
        // reserved goes straight back (while closing, the call that asked is held directly).
        if (grown && (this.#closing || !grown.open)) void this.#retire(grown);
        return this.#closing ? 'near_limit' : 'grown';
      })
      .finally(() => this.#growth.delete(input.workspaceId));
    this.#growth.set(input.workspaceId, done);
    return done;
  }

  /** Stops a lease admitting calls and hands back what it holds free (all of it once no call is in flight). */
  #retire(lease: Lease): Promise<void> {
    this.#stopAdmitting(lease);
    return this.#returnFree(lease);
  }

  /**
   * Hands back what a retired lease holds free, one hand-back at a time (each reads the lease's
   * numbers when it is submitted, so two at once would give the same credits back twice); asked again
   * while one runs, it runs once more after it. Resolves when the lease's row matches its calls.
   */
  #returnFree(lease: Lease): Promise<void> {
    if (lease.returning) {
      lease.returnAgain = true;
      return lease.returning;
    }
    const run = async () => {
      do {
        lease.returnAgain = false;
        if (lease.inFlight === 0) await this.#finishLease(lease);
        else await this.#handBackFree(lease);
      } while (lease.returnAgain && !lease.finished);
    };
    const returning = run().finally(() => {
      lease.returning = null;
    });
    lease.returning = returning;
    this.#inBackground(returning);
    return returning;
  }

  /** A retired lease with calls still in flight keeps exactly what they reserve. */
  async #handBackFree(lease: Lease): Promise<void> {
    const accountId = lease.accountId;
    const free = await this.inner.writer.write(accountId, 'leaseShrink', { accountId, leaseId: lease.id, free: lease.amount - lease.reserved });
    lease.amount -= free;
  }

  /** Ends a lease no call uses any more: the row is voided and whatever it still reserves is released. */
  async #finishLease(lease: Lease): Promise<void> {
    const accountId = lease.accountId;
    await this.inner.writer.write(accountId, 'leaseEnd', { accountId, leaseId: lease.id });
    lease.amount = 0n;
    lease.finished = true;
  }

  /**
   * A lease admits nothing more and leaves its workspace's slot: retired, or expired by the sweeper
   * (this instance stalled past its expiry), whose row then needs nothing handed back.
   */
  #stopAdmitting(lease: Lease): void {
    if (this.#leases.get(lease.workspaceId) === lease) this.#leases.delete(lease.workspaceId);
    if (lease.open) this.stats.leases--;
    lease.open = false;
  }

  #inBackground(work: Promise<void>): void {
    const tracked = work.catch(() => {
      // A failed hand-back leaves the lease row pending: the sweeper releases it at its expiry.
    });
    this.#background.add(tracked);
    void tracked.finally(() => this.#background.delete(tracked));
  }
}

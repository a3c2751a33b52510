// Settlements after the answer. A call is answered as soon as its price is known; its settlement
// (the debit, the lots it burns, its usage record, all in one transaction) is written right after,
// and may wait a few milliseconds to share a commit with its neighbours (the committer's
// `deferMs`). Waiting for the commit before answering protected no credit: the upstream has
// already done the work, and the credits the call was admitted with stay reserved (in its hold or
// its balance lease) until the settlement commits, so nothing can be spent twice meanwhile. A
// crash leaves the same calls unbilled either way (their reservations go back when the hold or
// lease expires); they are now answered ones, where before they were not. What the wait cost was
// latency: at one connection, the commit was a third of a call.
//
// Only a call that finishes alone (no other call in flight in this process) is answered first.
// Alone, the wait for its commit is pure latency, and the next calls' settlements share the
// commit it would have had to itself. Among other calls in flight, the settlement joins the batch
// theirs gather into and the call is answered when it commits, as are theirs: answered together,
// the calls' answers and next requests move in bursts, which on the bench machine cost 13 to 40%
// less CPU per call than answering each call as soon as it was priced (see bench/gateway/README.md).
//
// This process's own reads wait for its settlements first: the balance, usage and admin reads
// (see `app.ts`), and an admission refused for lack of credits while the workspace has
// settlements pending (they free the part of their reservations the calls did not use); none
// waits for one sleeping before a retry. A settlement that fails is retried (unless the database
// refused it for good, or it turns out an earlier attempt did commit); one that still fails is
// logged, and its reservation returns when its hold times out, as for a call cut by a crash.
// Too many settlements pending (a store that stopped keeping up) and calls wait for their own
// again, so memory stays bounded.
import type { Logger } from 'pino';
import { AppError } from '../lib/errors.ts';
import { isConstraintViolation, isUniqueViolation } from '../store/errors.ts';

export interface SettlementsOptions {
  /** Settlements pending at once before a call waits for its own (default 4,096). */
  maxPending?: number;
  /** Delays before each retry of a failed settlement (default 0.1, 0.5, 2, 10 and 30 s). */
  retryDelaysMs?: number[];
}

const defaultMaxPending = 4096;
const defaultRetryDelaysMs = [100, 500, 2_000, 10_000, 30_000];

export class Settlements {
  readonly #log: Logger;
  readonly #maxPending: number;
  readonly #retryDelaysMs: number[];
  readonly #byWorkspace = new Map<string, Set<Entry>>();
  /** Wakes each settlement sleeping before a retry. */
  readonly #wakers = new Set<() => void>();
  #pending = 0;
  /** Calls admitted and not yet finished, in this process. */
  #inFlight = 0;
  #draining = false;
  /** Settlements that failed for good, since the start (a metric; each was logged). */
  failed = 0;

  constructor(log: Logger, opts: SettlementsOptions = {}) {
    this.#log = log;
    this.#maxPending = opts.maxPending ?? defaultMaxPending;
    this.#retryDelaysMs = opts.retryDelaysMs ?? defaultRetryDelaysMs;
  }

  /** A call was admitted: it is in flight until it finishes. */
  admitted(): void {
    this.#inFlight++;
  }

  /** A call is finishing: whether it was the only call in flight in this process. */
  finishing(): boolean {
    const alone = this.#inFlight <= 1;
    if (this.#inFlight > 0) this.#inFlight--;
    return alone;
  }

  /** Calls admitted and not yet finished. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Settlements started and not yet committed (or given up). */
  get pending(): number {
    return this.#pending;
  }

  /**
   * Starts `write` (a settlement or void of call `requestId`) and tracks it until it commits.
   * Resolves at once, or, when too many are pending, once this one has committed or failed.
   */
  async start(workspaceId: string, requestId: string, write: () => Promise<unknown>): Promise<void> {
    const entry: Entry = { attempt: Promise.resolve(), sleeping: false, done: Promise.resolve() };
    entry.done = this.#run(entry, requestId, write);
    let set = this.#byWorkspace.get(workspaceId);
    if (!set) {
      set = new Set();
      this.#byWorkspace.set(workspaceId, set);
    }
    set.add(entry);
    this.#pending++;
    const tracked = entry.done.finally(() => {
      this.#pending--;
      set.delete(entry);
      if (set.size === 0 && this.#byWorkspace.get(workspaceId) === set) this.#byWorkspace.delete(workspaceId);
    });
    if (this.#pending > this.#maxPending) await tracked;
  }

  /** Whether this process has settlements of the workspace (or of any workspace) not yet committed. */
  has(workspaceId?: string): boolean {
    return workspaceId === undefined ? this.#pending > 0 : this.#byWorkspace.has(workspaceId);
  }

  /**
   * Waits until the settlements of the workspace (or of every workspace) being written now have
   * committed or failed, for at most `maxWaitMs`. One that failed and sleeps before its retry is
   * not waited for: a store that is down must not hang every read.
   */
  async settled(workspaceId?: string, maxWaitMs = 5_000): Promise<void> {
    const entries = workspaceId === undefined ? [...this.#byWorkspace.values()].flatMap((s) => [...s]) : [...(this.#byWorkspace.get(workspaceId) ?? [])];
    const writing = entries.filter((e) => !e.sleeping).map((e) => e.attempt);
    if (writing.length > 0) await within(Promise.all(writing), maxWaitMs);
  }

  /**
   * For stopping: wakes the settlements sleeping before a retry for one last attempt, and waits
   * (at most `maxWaitMs`) until every settlement has committed or been given up.
   */
  async drain(maxWaitMs: number): Promise<void> {
    this.#draining = true;
    for (const wake of [...this.#wakers]) wake();
    const all = [...this.#byWorkspace.values()].flatMap((s) => [...s].map((e) => e.done));
    if (all.length > 0) await within(Promise.all(all), maxWaitMs);
  }

  async #run(entry: Entry, requestId: string, write: () => Promise<unknown>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let failure: { err: unknown } | null = null;
      entry.attempt = write().then(
        () => undefined,
        (err: unknown) => {
          failure = { err };
        },
      );
      await entry.attempt;
      if (!failure) return;
      const { err } = failure as { err: unknown };
      if (attempt > 0 && isUniqueViolation(err)) {
        // The earlier attempt committed after all (a connection lost at COMMIT): the call's
        // transfer or usage record is there, and the database refused a second one.
        this.#log.warn({ err, requestId }, 'a settlement retried after a failure had already been written');
        return;
      }
      // A refusal (the hold is no longer pending, a constraint) will not change on a retry.
      const final = err instanceof AppError || isConstraintViolation(err) || attempt >= this.#retryDelaysMs.length || this.#draining;
      if (final) {
        this.failed++;
        this.#log.error({ err, requestId }, 'a settlement could not be written');
        return;
      }
      this.#log.warn({ err, requestId, attempt: attempt + 1 }, 'writing a settlement failed; retrying');
      entry.sleeping = true;
      await this.#sleep(this.#retryDelaysMs[attempt]);
      entry.sleeping = false;
    }
  }

  /** A pause before a retry that `drain` can cut short; it does not keep the process alive. */
  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref();
      this.#wakers.add(wake);
    });
  }
}

interface Entry {
  /** The attempt under way (or the last one). */
  attempt: Promise<void>;
  /** Failed, and waiting to be retried. */
  sleeping: boolean;
  /** Committed, or given up. */
  done: Promise<void>;
}

async function within(work: Promise<unknown>, maxWaitMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, maxWaitMs);
  });
  try {
    await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// Group commit: ledger writes submitted while a transaction is in flight wait for it, then all of
// them run in the next single transaction. Callers see one promise per write; the store sees one
// commit per batch. Under load a batch gathers for a few turns of the event loop before it runs
// (see `gatherTurns`), so it carries the settlements of many calls, not of one turn's few. A batch
// that fails is re-run one write per transaction, so one bad write can never fail its neighbours,
// and deadlocks or serialization failures are retried.
// On PostgreSQL several batches are in flight at once, each on its own connection, in lanes: the
// writes of one account always go to the same lane, so they keep their order and never run in two
// transactions at once, while other accounts' writes commit beside them instead of waiting.
import type { Transaction } from 'kysely';
import type { Store } from '../store/db.ts';
import type { Database } from '../store/schema.ts';
import { execute, prepare } from '../store/prepared.ts';

export type Tx = Transaction<Database>;

/**
 * Per-batch state: counters many writes of a batch touch (operator accounts, API keys' spend) are
 * summed and applied once at the end of the batch, in id order: API keys first, operator accounts last.
 */
export interface Batch {
  engine: Store['engine'];
  /** The time now, by the ledger's clock: a write reads it when it runs, so ids follow posting order. */
  now(): number;
  creditOperator(accountId: string, amountMicros: bigint): void;
  debitOperator(accountId: string, amountMicros: bigint): void;
  /** Adds a settled call to its API key's spend and request count (and last use time). */
  addKeyUsage(keyId: string, spendMicros: bigint, usedAtMs: number): void;
  /**
   * Takes the workspace account's row lock before a write touches the account's other rows
   * (holds, lots), once per account and batch: every write then locks in the same order, account
   * first, so two processes' batches cannot each hold a row the other waits for. PostgreSQL only:
   * an SQLite transaction holds the whole database's write lock already.
   */
  lockAccount(tx: Tx, accountId: string): Promise<void>;
  /** Notes that this batch's transaction already holds the account's row lock (it updated the row). */
  lockedAccount(accountId: string): void;
}

export type OpRun<R> = (tx: Tx, batch: Batch) => Promise<R>;

/**
 * Writes of one kind that a batch runs together, set-based: consecutive writes of a batch with the
 * same `key` (and so the same sort key) go to one `run` call, which answers each input in order.
 * A write re-run on its own (after its batch failed) is a `run` of one input.
 */
export interface OpGroup<I, R> {
  key: string;
  run(tx: Tx, batch: Batch, inputs: I[]): Promise<R[]>;
}

interface Pending<R> {
  sortKey: string;
  /** Nobody waits on this write to answer anyone: it may wait up to `deferMs` to share a commit. */
  deferrable: boolean;
  run: OpRun<R> | null;
  group: { def: OpGroup<unknown, R>; input: unknown } | null;
  resolve: (value: R) => void;
  reject: (err: unknown) => void;
}

export interface CommitterOptions {
  maxBatchOps?: number;
  maxRetries?: number;
  /** Batches in flight at once (one connection each); 1 on SQLite, which has a single writer. */
  maxConcurrentBatches?: number;
  /** The clock writes read (`Batch.now`); Date.now by default. */
  now?: () => number;
  /**
   * Turns of the event loop a batch waits for more writes before it runs, when the lane's last
   * batch carried more than one write (writes are arriving together). After a batch of one (a
   * single caller, as at one connection) the next write runs at the next turn, as it always did.
   */
  gatherTurns?: number;
  /** The longest a batch gathers, in milliseconds, however few turns that took (turns are long under heavy requests). */
  gatherMaxMs?: number;
  /**
   * How long a batch of only deferrable writes (see `WriteOptions`) waits for company before it
   * commits, in milliseconds; any other write, a full batch or `drain()` starts it at once.
   */
  deferMs?: number;
}

export interface WriteOptions {
  /**
   * The caller does not wait on this write to answer anyone (a settlement whose call has been
   * answered): the write may wait up to `deferMs` for others to share its commit. What it posts
   * is exactly the same; only the moment it commits moves.
   */
  deferrable?: boolean;
}

const defaultMaxBatchOps = 256;
/**
 * Measured with the gateway bench at 50 connections (A/B runs of two Tollgate processes side by
 * side): batches gathered over 1 turn against 0 cost 7.5% less CPU per call, over 3 turns 13% less
 * again, over 8 a few percent more. A turn without I/O waiting is microseconds, so a light load
 * pays next to nothing; a heavy one gathers for as long as its turns take.
 */
const defaultGatherTurns = 8;
/**
 * At 50 connections in the bench a batch gathers for about 6 ms (8 turns of about 0.7 ms) and
 * carries about 40 settlements; a 2 ms limit halved the batches. 10 ms leaves the bench's batches
 * whole and bounds the wait when turns are long (requests heavy on CPU, such as huge prompts).
 */
const defaultGatherMaxMs = 10;
/**
 * A settlement whose call has been answered waits up to 5 ms for others: at one connection a
 * commit costs more than the rest of a call (about 20 WAL pages written; see
 * bench/gateway/README.md), and a few calls' settlements share one. The reservation the call was
 * admitted with stays in place until the commit, so nothing can be spent twice meanwhile.
 */
const defaultDeferMs = 5;
const defaultMaxRetries = 5;
const retryBaseDelayMs = 2;
const defaultPostgresLanes = 4;

interface Lane {
  queue: Pending<unknown>[];
  flushing: boolean;
  scheduled: boolean;
  /** Writes in the lane's last batch. */
  lastBatchOps: number;
  /** The timer of a batch of deferrable writes waiting for company. */
  deferTimer: NodeJS.Timeout | null;
}

export interface CommitterStats {
  batches: number;
  ops: number;
  retries: number;
  isolatedRuns: number;
}

export class GroupCommitter {
  readonly #store: Store;
  readonly #maxBatchOps: number;
  readonly #maxRetries: number;
  readonly #lanes: Lane[];
  readonly #now: () => number;
  readonly #gatherTurns: number;
  readonly #gatherMaxMs: number;
  readonly #deferMs: number;
  readonly stats: CommitterStats = { batches: 0, ops: 0, retries: 0, isolatedRuns: 0 };

  constructor(store: Store, opts: CommitterOptions = {}) {
    this.#store = store;
    this.#maxBatchOps = opts.maxBatchOps ?? defaultMaxBatchOps;
    this.#maxRetries = opts.maxRetries ?? defaultMaxRetries;
    this.#now = opts.now ?? Date.now;
    this.#gatherTurns = opts.gatherTurns ?? defaultGatherTurns;
    if (!Number.isSafeInteger(this.#gatherTurns) || this.#gatherTurns < 0) throw new Error('gatherTurns must be a non-negative integer');
    this.#gatherMaxMs = opts.gatherMaxMs ?? defaultGatherMaxMs;
    if (!(this.#gatherMaxMs >= 0)) throw new Error('gatherMaxMs must be a non-negative number');
    this.#deferMs = opts.deferMs ?? defaultDeferMs;
    if (!(this.#deferMs >= 0)) throw new Error('deferMs must be a non-negative number');
    const lanes = store.engine === 'sqlite' ? 1 : (opts.maxConcurrentBatches ?? defaultPostgresLanes);
    if (!Number.isSafeInteger(lanes) || lanes < 1) throw new Error('maxConcurrentBatches must be a positive integer');
    this.#lanes = Array.from({ length: lanes }, () => ({ queue: [], flushing: false, scheduled: false, lastBatchOps: 0, deferTimer: null }));
  }

  /**
   * Queues a write. `sortKey` (the workspace account it locks first) picks its lane and orders
   * writes inside a batch, so concurrent batches in several processes take row locks in the same order.
   */
  submit<R>(sortKey: string, run: OpRun<R>, opts: WriteOptions = {}): Promise<R> {
    return this.#enqueue<R>({ sortKey, run, group: null, deferrable: opts.deferrable === true });
  }

  /** Queues a write that runs together with the batch's other writes of the same group (see OpGroup). */
  submitGrouped<I, R>(sortKey: string, group: OpGroup<I, R>, input: I, opts: WriteOptions = {}): Promise<R> {
    return this.#enqueue<R>({ sortKey, run: null, group: { def: group as OpGroup<unknown, R>, input }, deferrable: opts.deferrable === true });
  }

  #enqueue<R>(op: Pick<Pending<R>, 'sortKey' | 'run' | 'group' | 'deferrable'>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const lane = this.#lanes[laneOf(op.sortKey, this.#lanes.length)];
      lane.queue.push({ ...op, resolve, reject } as Pending<unknown>);
      this.#schedule(lane, op.deferrable);
    });
  }

  /** Resolves once everything queued so far has been committed or failed (deferred writes commit at once). */
  async drain(): Promise<void> {
    for (const lane of this.#lanes) this.#commitDeferredNow(lane);
    while (this.#lanes.some((l) => l.queue.length > 0 || l.flushing)) {
      await new Promise((r) => setImmediate(r));
    }
  }

  #commitDeferredNow(lane: Lane): void {
    if (!lane.deferTimer) return;
    clearTimeout(lane.deferTimer);
    lane.deferTimer = null;
    lane.scheduled = false;
    this.#schedule(lane, false);
  }

  #schedule(lane: Lane, deferrable: boolean): void {
    if (lane.flushing) return;
    if (lane.scheduled) {
      // A batch of deferrable writes waiting for company: a write someone waits on, or a full
      // batch, starts it now.
      if (lane.deferTimer && (!deferrable || lane.queue.length >= this.#maxBatchOps)) this.#commitDeferredNow(lane);
      return;
    }
    lane.scheduled = true;
    if (deferrable && this.#deferMs > 0) {
      lane.deferTimer = setTimeout(() => {
        lane.deferTimer = null;
        lane.scheduled = false;
        void this.#flush(lane);
      }, this.#deferMs);
      return;
    }
    // setImmediate lets writes from the same turn of the event loop join the batch; when writes
    // have been arriving together, the batch also waits a few more turns (while it is not full,
    // and for at most `gatherMaxMs`).
    let turns = lane.lastBatchOps > 1 ? this.#gatherTurns : 0;
    const deadline = turns > 0 ? performance.now() + this.#gatherMaxMs : 0;
    const next = () => {
      if (turns-- > 0 && lane.queue.length < this.#maxBatchOps && performance.now() < deadline) {
        setImmediate(next);
        return;
      }
      lane.scheduled = false;
      void this.#flush(lane);
    };
    setImmediate(next);
  }

  async #flush(lane: Lane): Promise<void> {
    if (lane.flushing) return;
    lane.flushing = true;
    try {
      while (lane.queue.length > 0) {
        const ops = lane.queue.splice(0, this.#maxBatchOps);
        lane.lastBatchOps = ops.length;
        await this.#commitBatch(ops);
      }
    } finally {
      lane.flushing = false;
    }
  }

  async #commitBatch(ops: Pending<unknown>[]): Promise<void> {
    ops.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    try {
      const results = await this.#runWithRetry(ops);
      this.stats.batches++;
      this.stats.ops += ops.length;
      ops.forEach((op, i) => op.resolve(results[i]));
    } catch (err) {
      if (ops.length === 1) {
        ops[0].reject(err);
        return;
      }
      for (const op of ops) {
        this.stats.isolatedRuns++;
        try {
          const [result] = await this.#runWithRetry([op]);
          op.resolve(result);
        } catch (opErr) {
          op.reject(opErr);
        }
      }
    }
  }

  async #runWithRetry(ops: Pending<unknown>[]): Promise<unknown[]> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#store.db.transaction().execute(async (tx) => {
          const batch = new BatchState(this.#store.engine, this.#now);
          const results: unknown[] = [];
          for (let i = 0; i < ops.length; ) {
            const op = ops[i];
            if (op.run) {
              results.push(await op.run(tx, batch));
              i++;
              continue;
            }
            const def = op.group!.def;
            let end = i + 1;
            while (end < ops.length && ops[end].group?.def.key === def.key) end++;
            const answers = await def.run(tx, batch, ops.slice(i, end).map((o) => o.group!.input));
            if (answers.length !== end - i) throw new Error(`write group ${def.key} answered ${answers.length} of ${end - i} writes`);
            results.push(...answers);
            i = end;
          }
          await batch.applyDeltas(tx);
          return results;
        });
      } catch (err) {
        if (attempt >= this.#maxRetries || !isTransient(err)) throw err;
        this.stats.retries++;
        await sleep(retryBaseDelayMs * 2 ** attempt * (0.5 + Math.random()));
      }
    }
  }
}

class BatchState implements Batch {
  readonly engine: Store['engine'];
  readonly now: () => number;
  readonly #deltas = new Map<string, { credits: bigint; debits: bigint }>();
  readonly #keyUsage = new Map<string, { spend: bigint; requests: number; lastUsedAt: number }>();
  readonly #locked = new Set<string>();

  constructor(engine: Store['engine'], now: () => number) {
    this.engine = engine;
    this.now = now;
  }

  creditOperator(accountId: string, amountMicros: bigint): void {
    this.#delta(accountId).credits += amountMicros;
  }

  debitOperator(accountId: string, amountMicros: bigint): void {
    this.#delta(accountId).debits += amountMicros;
  }

  async lockAccount(tx: Tx, accountId: string): Promise<void> {
    if (this.engine !== 'postgres' || this.#locked.has(accountId)) return;
    await execute(tx, this.engine, sqlLockAccount, [accountId]);
    this.#locked.add(accountId);
  }

  lockedAccount(accountId: string): void {
    this.#locked.add(accountId);
  }

  addKeyUsage(keyId: string, spendMicros: bigint, usedAtMs: number): void {
    const u = this.#keyUsage.get(keyId);
    if (!u) {
      this.#keyUsage.set(keyId, { spend: spendMicros, requests: 1, lastUsedAt: usedAtMs });
      return;
    }
    u.spend += spendMicros;
    u.requests++;
    if (usedAtMs > u.lastUsedAt) u.lastUsedAt = usedAtMs;
  }

  #delta(accountId: string) {
    let d = this.#deltas.get(accountId);
    if (!d) {
      d = { credits: 0n, debits: 0n };
      this.#deltas.set(accountId, d);
    }
    return d;
  }

  async applyDeltas(tx: Tx): Promise<void> {
    for (const id of [...this.#keyUsage.keys()].sort()) {
      const u = this.#keyUsage.get(id)!;
      // A key deleted meanwhile has no counters to keep: its usage records still say what it spent.
      await execute(tx, this.engine, sqlAddKeyUsage, [u.spend, u.requests, u.lastUsedAt, u.lastUsedAt, id]);
    }
    for (const id of [...this.#deltas.keys()].sort()) {
      const d = this.#deltas.get(id)!;
      if (d.credits === 0n && d.debits === 0n) continue;
      const changed = await execute(tx, this.engine, sqlAddOperatorDelta, [d.credits, d.debits, id]);
      if (changed !== 1n) throw new Error(`operator account ${id} is missing`);
    }
  }
}

const sqlAddKeyUsage = prepare(`
  update api_keys set spend_micros = spend_micros + ?, requests = requests + ?,
    last_used_at = case when last_used_at is null or last_used_at < ? then ? else last_used_at end
  where id = ?`);
// FOR NO KEY UPDATE, the lock an UPDATE of the row takes: FOR UPDATE would also wait for every
// transaction that merely inserted a row referencing the account (a foreign key's KEY SHARE lock),
// and two processes' batches would deadlock on it.
const sqlLockAccount = prepare('select id from accounts where id = ? for no key update');
const sqlAddOperatorDelta = prepare('update accounts set credits_posted = credits_posted + ?, debits_posted = debits_posted + ? where id = ?');

/** FNV-1a of the sort key: the same account always lands in the same lane. */
function laneOf(sortKey: string, lanes: number): number {
  if (lanes === 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < sortKey.length; i++) h = Math.imul(h ^ sortKey.charCodeAt(i), 0x01000193);
  return (h >>> 0) % lanes;
}

/** PostgreSQL deadlocks and serialization failures, SQLite busy: safe to retry the whole batch. */
function isTransient(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return code === '40P01' || code === '40001' || code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_SNAPSHOT';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

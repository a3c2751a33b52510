// Prompt logging on the request path: a call of a workspace that opted in stores its request and
// response once the call has settled and its answer has gone out; any other call stores nothing
// (its metadata is in usage_records). A failed write is logged and never reaches the customer.
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../store/schema.ts';
import { storeRequestLog } from '../workspaces/request-logs.ts';
import type { CallState } from './pipeline.ts';

/**
 * Writes in flight at most: each holds a call's bodies in memory, so a store that falls behind
 * drops logs (counted and reported) rather than growing the process without bound.
 */
export const maxPendingLogWrites = 64;
const dropReportIntervalMs = 30_000;

export class RequestLogWriter {
  readonly #db: Kysely<Database>;
  readonly #log: Logger;
  readonly #pending = new Set<Promise<void>>();
  #dropped = 0;
  #lastDropReport = 0;

  constructor(db: Kysely<Database>, log: Logger) {
    this.#db = db;
    this.#log = log;
  }

  /** Stores the call's bodies when its workspace opted in (as it stood when the call began). Returns at once. */
  write(call: CallState, requestBody: unknown, responseBody: unknown): void {
    const { logging } = call.workspace;
    if (!logging.enabled) return;
    if (this.#pending.size >= maxPendingLogWrites) {
      this.#drop(call);
      return;
    }
    // Serialising a large body takes a while: do it after the answer in hand has been written.
    const written: Promise<void> = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() =>
        storeRequestLog(this.#db, {
          requestId: call.requestId,
          workspaceId: call.workspace.id,
          requestBody,
          responseBody,
          retentionDays: logging.retentionDays,
        }),
      )
      .catch((err: unknown) => this.#log.error({ err, requestId: call.requestId, workspaceId: call.workspace.id }, 'storing a request log failed'))
      .finally(() => this.#pending.delete(written));
    this.#pending.add(written);
  }

  /** How many logs were dropped because the store fell behind. */
  get dropped(): number {
    return this.#dropped;
  }

  #drop(call: CallState): void {
    this.#dropped++;
    const now = Date.now();
    if (now - this.#lastDropReport < dropReportIntervalMs) return;
    this.#lastDropReport = now;
    this.#log.warn(
      { requestId: call.requestId, workspaceId: call.workspace.id, droppedSoFar: this.#dropped, maxPending: maxPendingLogWrites },
      'prompt logs are being dropped: the store is not keeping up with the writes',
    );
  }

  /** Waits for the writes already started (on shutdown, before the store closes). */
  async drain(): Promise<void> {
    await Promise.all(this.#pending);
  }
}

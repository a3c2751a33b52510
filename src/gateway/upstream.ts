// Sends a prepared upstream request: over undici keep-alive pools for HTTP providers, in-process
// for the sandbox. Time limits: `headersTimeoutMs` until the upstream answers, `bodyIdleMs` between
// body chunks; the caller's signal cancels everything (client gone, overall deadline).
import { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import type { PreparedRequest, ProviderAdapter } from '../providers/types.ts';

export interface UpstreamAnswer {
  status: number;
  headers: Record<string, string>;
  body: AsyncIterable<Uint8Array>;
  /** True once the upstream has sent the whole body (pieces may still wait unread); absent where not known. */
  readonly complete?: boolean;
  /** Reads the whole body as text (for errors and non-streamed answers). */
  text(): Promise<string>;
}

const connectionsPerOrigin = 128;
const keepAliveTimeoutMs = 30_000;
export const maxUpstreamBodyBytes = 64 * 1024 * 1024;

const agent = new Agent({ connections: connectionsPerOrigin, keepAliveTimeout: keepAliveTimeoutMs, pipelining: 1 });

export class UpstreamTimeout extends Error {}
export class UpstreamTooLarge extends Error {}

/**
 * A call's cancel signal: an EventEmitter with `aborted` and `reason`, used in place of an
 * AbortSignal. An AbortController and the two listeners undici put on its signal cost about 6.5 µs
 * per call on this machine (2% of a call's CPU); this costs 0.3 µs.
 */
export class CallSignal extends EventEmitter {
  aborted = false;
  reason: unknown = undefined;

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.emit('abort');
  }
}

export type UpstreamSignal = AbortSignal | CallSignal;

/** Where a URL goes, as undici's dispatcher takes it: parsed once per distinct URL, not per call. */
const destinations = new Map<string, { origin: string; path: string }>();
const maxDestinations = 1000;

function destinationOf(url: string): { origin: string; path: string } {
  let d = destinations.get(url);
  if (!d) {
    const u = new URL(url);
    d = { origin: u.origin, path: `${u.pathname}${u.search}` };
    if (destinations.size >= maxDestinations) destinations.clear();
    destinations.set(url, d);
  }
  return d;
}

export async function sendUpstream(
  adapter: ProviderAdapter,
  prepared: PreparedRequest,
  opts: { signal: UpstreamSignal; headersTimeoutMs: number; bodyIdleMs: number; maxBodyBytes?: number },
): Promise<UpstreamAnswer> {
  if (adapter.local) {
    const res = await adapter.local.send(prepared, opts.signal);
    return { ...res, text: () => readAll(res.body) };
  }
  if (opts.signal.aborted) throw opts.signal.reason;
  return new Promise<UpstreamAnswer>((resolve, reject) => {
    const answer = new DispatchedAnswer(opts.signal, opts.maxBodyBytes ?? maxUpstreamBodyBytes, resolve, reject);
    agent.dispatch(
      {
        ...destinationOf(prepared.url),
        method: prepared.method,
        headers: prepared.headers,
        body: prepared.method === 'GET' ? undefined : prepared.body,
        headersTimeout: opts.headersTimeoutMs,
        bodyTimeout: opts.bodyIdleMs,
      },
      answer,
    );
  });
}

/** Body bytes read ahead of a consumer that has not asked for them before the upstream is paused. */
const readAheadBytes = 1024 * 1024;

/**
 * One upstream exchange, as undici's dispatch handler and as the answer the gateway reads. Undici's
 * `request()` wraps every answer in a Readable stream, whose machinery cost about 15 µs of CPU per
 * call at 50 concurrent calls on this machine (a fifth of the whole upstream exchange); here the
 * body's pieces are kept as they arrive and handed over as a string (`text()`) or one by one
 * (`body`), with the upstream paused while more than `readAheadBytes` wait unread.
 */
class DispatchedAnswer implements UpstreamAnswer, Dispatcher.DispatchHandler {
  status = 0;
  headers: Record<string, string> = {};
  readonly body: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => this.#iterate() };
  readonly #signal: UpstreamSignal;
  readonly #maxBodyBytes: number;
  #resolve: ((answer: UpstreamAnswer) => void) | null;
  readonly #reject: (err: unknown) => void;
  #controller: Dispatcher.DispatchController | null = null;
  readonly #pieces: Buffer[] = [];
  #queued = 0;
  #received = 0;
  #ended = false;
  #error: unknown = null;
  /** Wakes a reader waiting for the next piece, the end or an error. */
  #wake: (() => void) | null = null;
  #consumed = false;
  /** text() reads everything at once: nothing is paused for it. */
  #wholeWanted = false;

  constructor(signal: UpstreamSignal, maxBodyBytes: number, resolve: (answer: UpstreamAnswer) => void, reject: (err: unknown) => void) {
    this.#signal = signal;
    this.#maxBodyBytes = maxBodyBytes;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  get complete(): boolean {
    return this.#ended;
  }

  readonly #onAbort = () => this.#controller?.abort(asError(this.#signal.reason));

  onRequestStart(controller: Dispatcher.DispatchController): void {
    const first = this.#controller === null;
    this.#controller = controller;
    if (this.#signal.aborted) controller.abort(asError(this.#signal.reason));
    else if (first) listen(this.#signal, this.#onAbort);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    // Informational answers (1xx) come before the real one.
    if (statusCode < 200) return;
    this.status = statusCode;
    for (const k in headers) {
      const v = headers[k];
      if (typeof v === 'string') this.headers[k] = v;
    }
    const resolve = this.#resolve;
    this.#resolve = null;
    resolve?.(this);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#received += chunk.byteLength;
    if (this.#received > this.#maxBodyBytes) {
      controller.abort(new UpstreamTooLarge(`upstream answer larger than ${this.#maxBodyBytes} bytes`));
      return;
    }
    this.#pieces.push(chunk);
    this.#queued += chunk.byteLength;
    if (this.#queued > readAheadBytes && !this.#wholeWanted) controller.pause();
    this.#wakeReader();
  }

  onResponseEnd(): void {
    this.#ended = true;
    unlisten(this.#signal, this.#onAbort);
    this.#wakeReader();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    unlisten(this.#signal, this.#onAbort);
    const failure = upstreamError(err);
    if (this.#resolve) {
      this.#resolve = null;
      this.#reject(failure);
      return;
    }
    this.#error = failure;
    this.#wakeReader();
  }

  /** The whole body as text (at most the body limit). */
  async text(): Promise<string> {
    this.#claim();
    this.#wholeWanted = true;
    if (this.#controller?.paused) this.#controller.resume();
    while (!this.#ended && this.#error === null) await new Promise<void>((wake) => (this.#wake = wake));
    if (this.#error !== null) throw this.#error;
    const parts = this.#pieces.splice(0);
    this.#queued = 0;
    return parts.length === 1 ? parts[0].toString('utf8') : Buffer.concat(parts).toString('utf8');
  }

  #claim(): void {
    if (this.#consumed) throw new Error('the upstream answer was already read');
    this.#consumed = true;
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async *#iterate(): AsyncGenerator<Uint8Array> {
    this.#claim();
    try {
      for (;;) {
        if (this.#pieces.length > 0) {
          const piece = this.#pieces.shift()!;
          this.#queued -= piece.byteLength;
          if (this.#controller?.paused && this.#queued <= readAheadBytes) this.#controller.resume();
          yield piece;
          continue;
        }
        if (this.#error !== null) throw this.#error;
        if (this.#ended) return;
        await new Promise<void>((wake) => (this.#wake = wake));
      }
    } finally {
      // A reader that stopped early (a translator error, a client gone) lets the upstream go.
      if (!this.#ended && this.#error === null) this.#controller?.abort(new Error('upstream answer abandoned'));
    }
  }
}

function listen(signal: UpstreamSignal, onAbort: () => void): void {
  if (signal instanceof CallSignal) signal.once('abort', onAbort);
  else signal.addEventListener('abort', onAbort, { once: true });
}

function unlisten(signal: UpstreamSignal, onAbort: () => void): void {
  if (signal instanceof CallSignal) signal.off('abort', onAbort);
  else signal.removeEventListener('abort', onAbort);
}

const asError = (reason: unknown): Error => (reason instanceof Error ? reason : new Error(String(reason)));

/** Undici's timeouts become UpstreamTimeout; anything else (refused, reset, aborted) is passed on. */
function upstreamError(err: Error): Error {
  const code = (err as { code?: string }).code;
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new UpstreamTimeout(`upstream did not answer in time (${code})`);
  }
  return err;
}

async function readAll(body: AsyncIterable<Uint8Array>): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > maxUpstreamBodyBytes) throw new UpstreamTooLarge(`upstream answer larger than ${maxUpstreamBodyBytes} bytes`);
    parts.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  }
  return Buffer.concat(parts).toString('utf8');
}

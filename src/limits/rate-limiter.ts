// What the gateway asks of a rate limiter: may this key make one more call now (requests and
// tokens per minute), and how many tokens did the call use. Two implementations: memory.ts for a
// single process, redis.ts for limits shared by every Tollgate process.
//
// Semantics (both backends; the arithmetic is in window.ts):
// - RPM: each admitted call counts one in a sliding 60 s window (sliding-window-counter
//   approximation); a call is refused when counting it would exceed the limit. Refused calls do
//   not count.
// - TPM: a call's tokens are known only after it ends, so `admit` refuses while the tokens already
//   recorded in the window have reached the limit, and `recordTokens` adds the call's actual
//   tokens afterwards. A single call admitted just under the limit may therefore overshoot it by
//   its own size — as with every gateway that cannot know output length in advance.
// - A refusal carries Retry-After: whole seconds (at least 1) until enough of the window has slid
//   out for the same call to be admitted, the longer wait when both limits refuse.
// - null limits are unlimited and cost nothing: no counter is kept or read for them.

export interface RateLimits {
  /** Requests per minute; null: unlimited. */
  rpm: number | null;
  /** Tokens (input + output) per minute; null: unlimited. */
  tpm: number | null;
}

export type Admission =
  | { ok: true }
  | { ok: false; limit: 'rpm' | 'tpm'; retryAfterSeconds: number }
  /** The shared counters could not be reached and the operator chose to fail closed. */
  | { ok: false; limit: 'unavailable'; retryAfterSeconds: number };

export interface RateLimiterHealth {
  backend: 'memory' | 'redis';
  /** False while the shared counters cannot be reached (and before the first connection). */
  healthy: boolean;
  lastError: string | null;
  /** What an outage does: admit uncounted (true) or refuse with limit 'unavailable' (false). */
  failOpen: boolean;
}

export interface RateLimiter {
  /** Admits one call for `keyId` and counts it, or says which limit refused it and for how long. */
  admit(keyId: string, limits: RateLimits, nowMs?: number): Promise<Admission>;
  /** Adds a finished call's tokens to the key's TPM window; a no-op when `tpm` is null. Never throws on an outage. */
  recordTokens(keyId: string, tokens: number, tpm: number | null, nowMs?: number): Promise<void>;
  close(): Promise<void>;
  health(): RateLimiterHealth;
}

/** Limits are counts: null or a non-negative integer. A bad value is a bug upstream, so it throws. */
export function assertLimits(limits: RateLimits): void {
  for (const [name, value] of [['rpm', limits.rpm], ['tpm', limits.tpm]] as const) {
    if (value !== null && !(Number.isSafeInteger(value) && value >= 0)) {
      throw new RangeError(`${name} must be null or a non-negative integer (got ${value})`);
    }
  }
}

export function assertTokens(tokens: number): void {
  if (!(Number.isSafeInteger(tokens) && tokens >= 0)) throw new RangeError(`tokens must be a non-negative integer (got ${tokens})`);
}

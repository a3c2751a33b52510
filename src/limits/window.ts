// The sliding-window-counter arithmetic both limiters share (the Redis scripts in redis.ts mirror
// it line for line, so a memory and a Redis limiter give the same answers for the same history).
//
// A window is a fixed minute. A counter holds the count of the current minute and of the one
// before; the usage "over the last 60 s" is estimated as the current count plus the previous
// count weighted by the part of the previous minute still inside the sliding window — Cloudflare's
// approximation. It costs O(1) memory per key and per limit whatever the rate, where an exact
// sliding log costs one entry per request (or per call's tokens). It assumes the previous
// minute's traffic was spread evenly: for steady traffic it matches an exact log; traffic bunched
// early in a minute makes it stricter, bunched late makes it looser — in the adversarial case
// (the whole limit spent in a minute's last instant, then again over the next minute) up to about
// twice the limit can pass within one 60 s span, the same worst case as fixed windows.

/** The length of the rate-limit window: "per minute". */
export const windowMs = 60_000;
/** A counter idle this long holds nothing that can still count; safe to drop or expire. */
export const counterIdleMs = 2 * windowMs;
/** Retry-After sent for a limit of 0, which no amount of waiting satisfies. */
export const blockedRetryAfterSeconds = windowMs / 1000;

export interface WindowCounter {
  /** Index of the fixed minute `current` belongs to (floor(epoch ms / windowMs)). */
  window: number;
  current: number;
  previous: number;
}

export interface WindowPosition {
  window: number;
  /** Milliseconds since the start of `window`. */
  elapsedMs: number;
}

export function positionAt(nowMs: number): WindowPosition {
  const window = Math.floor(nowMs / windowMs);
  return { window, elapsedMs: nowMs - window * windowMs };
}

/**
 * The counter as seen from `window`: unchanged inside the same minute, shifted by one minute,
 * or empty after two or more. A counter from a later minute (a clock behind the one that wrote
 * it) is read as current rather than moved back.
 */
export function rolled(counter: WindowCounter | null, window: number): WindowCounter {
  if (counter === null) return { window, current: 0, previous: 0 };
  if (counter.window >= window) return counter;
  if (counter.window === window - 1) return { window, current: 0, previous: counter.current };
  return { window, current: 0, previous: 0 };
}

/** Estimated count over the sliding 60 s ending `elapsedMs` into the counter's minute. */
export function usage(counter: WindowCounter, elapsedMs: number): number {
  return (counter.previous * (windowMs - elapsedMs)) / windowMs + counter.current;
}

/** A request fits when counting it keeps the estimate within the limit. */
export function requestFits(counter: WindowCounter, elapsedMs: number, rpm: number): boolean {
  return usage(counter, elapsedMs) + 1 <= rpm;
}

/** Tokens are counted after the call, so a call is admitted while the estimate is below the limit. */
export function tokensLeft(counter: WindowCounter, elapsedMs: number, tpm: number): boolean {
  return usage(counter, elapsedMs) < tpm;
}

/**
 * Milliseconds from now until the estimate has fallen to `target` (`strict`: until it is about to
 * fall below it), given that nothing more is counted meanwhile. Inside the current minute the
 * estimate falls as the previous minute slides out; if the current minute's count alone is too
 * high, the wait runs into the next minute, where this minute's count becomes the one sliding out.
 */
export function msUntilUsageFallsTo(counter: WindowCounter, elapsedMs: number, target: number, strict: boolean): number {
  if (target < 0 || (strict && target === 0)) return Number.POSITIVE_INFINITY;
  const now = usage(counter, elapsedMs);
  if (strict ? now < target : now <= target) return 0;
  if (strict ? counter.current < target : counter.current <= target) {
    const crossAtMs = windowMs * (1 - (target - counter.current) / counter.previous);
    return Math.max(0, crossAtMs - elapsedMs);
  }
  const crossInNextMs = windowMs * (1 - target / counter.current);
  return windowMs - elapsedMs + crossInNextMs;
}

// Waits are computed in floating point from integer counts; this absorbs the rounding noise of
// the division (a wait of exactly 20 s must not come out as 20.000000000004 and round up to 21).
const floatNoiseMs = 1e-6;

/**
 * Whole seconds (at least 1) covering a wait. `strict`: the wait must pass its end, not just reach
 * it — at the exact crossing the token estimate equals the limit, which still refuses.
 */
export function retryAfterSeconds(waitMs: number, strict: boolean): number {
  if (!Number.isFinite(waitMs)) return blockedRetryAfterSeconds;
  const wholeMs = strict ? Math.floor(waitMs + floatNoiseMs) + 1 : Math.ceil(waitMs - floatNoiseMs);
  return Math.max(1, Math.ceil(wholeMs / 1000));
}

/** Seconds until one more request fits under `rpm`. */
export function rpmRetryAfterSeconds(counter: WindowCounter, elapsedMs: number, rpm: number): number {
  return retryAfterSeconds(msUntilUsageFallsTo(counter, elapsedMs, rpm - 1, false), false);
}

/** Seconds until the token estimate is below `tpm` again. */
export function tpmRetryAfterSeconds(counter: WindowCounter, elapsedMs: number, tpm: number): number {
  return retryAfterSeconds(msUntilUsageFallsTo(counter, elapsedMs, tpm, true), true);
}

export type Refusal = { ok: false; limit: 'rpm' | 'tpm'; retryAfterSeconds: number };

export function rpmRefusal(counter: WindowCounter, elapsedMs: number, rpm: number): Refusal {
  return { ok: false, limit: 'rpm', retryAfterSeconds: rpmRetryAfterSeconds(counter, elapsedMs, rpm) };
}

export function tpmRefusal(counter: WindowCounter, elapsedMs: number, tpm: number): Refusal {
  return { ok: false, limit: 'tpm', retryAfterSeconds: tpmRetryAfterSeconds(counter, elapsedMs, tpm) };
}

/** When both limits refuse, the call can go only once both allow it: report the longer wait. */
export function longestWait(refusals: Refusal[]): Refusal | null {
  let worst: Refusal | null = null;
  for (const r of refusals) if (worst === null || r.retryAfterSeconds > worst.retryAfterSeconds) worst = r;
  return worst;
}

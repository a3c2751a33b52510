// Rate limits for a single Tollgate process (no REDIS_URL): counters in a Map, bounded. With
// several processes each one would enforce the full limit on its own, which is why REDIS_URL exists.
import { assertLimits, assertTokens, type Admission, type RateLimiter, type RateLimiterHealth, type RateLimits } from './rate-limiter.ts';
import { counterIdleMs, longestWait, positionAt, requestFits, rolled, rpmRefusal, tokensLeft, tpmRefusal, type Refusal, type WindowCounter } from './window.ts';

/** Keys with live counters kept at most; beyond it the least recently used key is forgotten. */
export const defaultMaxKeys = 100_000;

interface KeyCounters {
  requests: WindowCounter | null;
  tokens: WindowCounter | null;
  lastUsedMs: number;
}

export interface MemoryRateLimiterOptions {
  maxKeys?: number;
  failOpen?: boolean;
}

export class MemoryRateLimiter implements RateLimiter {
  // Insertion order is recency order: every use moves a key to the end, so idle keys and the
  // least recently used ones are always at the front, where eviction looks.
  readonly #keys = new Map<string, KeyCounters>();
  readonly #maxKeys: number;
  readonly #failOpen: boolean;

  constructor(options: MemoryRateLimiterOptions = {}) {
    this.#maxKeys = options.maxKeys ?? defaultMaxKeys;
    if (!(Number.isSafeInteger(this.#maxKeys) && this.#maxKeys >= 1)) throw new RangeError('maxKeys must be a positive integer');
    this.#failOpen = options.failOpen ?? true;
  }

  /** Keys currently holding counters (for tests and metrics). */
  get size(): number {
    return this.#keys.size;
  }

  async admit(keyId: string, limits: RateLimits, nowMs: number = Date.now()): Promise<Admission> {
    assertLimits(limits);
    if (limits.rpm === null && limits.tpm === null) return { ok: true };
    const { window, elapsedMs } = positionAt(nowMs);
    const entry = this.#keys.get(keyId);
    const requests = rolled(entry?.requests ?? null, window);
    const tokens = rolled(entry?.tokens ?? null, window);
    const refusals: Refusal[] = [];
    if (limits.rpm !== null && !requestFits(requests, elapsedMs, limits.rpm)) refusals.push(rpmRefusal(requests, elapsedMs, limits.rpm));
    if (limits.tpm !== null && !tokensLeft(tokens, elapsedMs, limits.tpm)) refusals.push(tpmRefusal(tokens, elapsedMs, limits.tpm));
    const refusal = longestWait(refusals);
    if (refusal) return refusal;
    if (limits.rpm !== null) {
      this.#touch(keyId, nowMs).requests = { ...requests, current: requests.current + 1 };
    }
    return { ok: true };
  }

  async recordTokens(keyId: string, tokens: number, tpm: number | null, nowMs: number = Date.now()): Promise<void> {
    assertTokens(tokens);
    if (tpm === null || tokens === 0) return;
    const entry = this.#touch(keyId, nowMs);
    const counter = rolled(entry.tokens, positionAt(nowMs).window);
    entry.tokens = { ...counter, current: counter.current + tokens };
  }

  async close(): Promise<void> {
    this.#keys.clear();
  }

  health(): RateLimiterHealth {
    return { backend: 'memory', healthy: true, lastError: null, failOpen: this.#failOpen };
  }

  /** The key's counters, moved to the most recent end; makes room first. */
  #touch(keyId: string, nowMs: number): KeyCounters {
    const entry = this.#keys.get(keyId) ?? { requests: null, tokens: null, lastUsedMs: nowMs };
    this.#keys.delete(keyId);
    entry.lastUsedMs = Math.max(entry.lastUsedMs, nowMs);
    this.#evict(nowMs);
    this.#keys.set(keyId, entry);
    return entry;
  }

  /**
   * Drops keys idle long enough that their counters are all zero (no loss), then, if still full,
   * the least recently used ones. Forgetting a live key forgets its counts — the price of a bound
   * on memory; with the default bound that takes 100,000 keys active within two minutes.
   */
  #evict(nowMs: number): void {
    for (const [keyId, entry] of this.#keys) {
      const idle = nowMs - entry.lastUsedMs >= counterIdleMs;
      if (!idle && this.#keys.size < this.#maxKeys) break;
      this.#keys.delete(keyId);
    }
  }
}

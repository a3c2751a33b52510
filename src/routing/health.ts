// Health of each upstream credential: a circuit breaker. It opens after `consecutiveFailures`
// failures in a row, or when at least `minRequests` calls in the window failed at
// `failureRatio` or more; after `cooldownMs` it half-opens and lets one probe through; the probe's
// success closes it, its failure opens it again. State is per process (each instance judges the
// upstreams it talks to); the admin API shows it with the reason.

export interface BreakerOptions {
  consecutiveFailures: number;
  failureRatio: number;
  minRequests: number;
  windowMs: number;
  cooldownMs: number;
}

export const defaultBreakerOptions: BreakerOptions = {
  consecutiveFailures: 5,
  failureRatio: 0.5,
  minRequests: 10,
  windowMs: 60_000,
  cooldownMs: 30_000,
};

export type CircuitState = 'closed' | 'open' | 'half_open';

export interface CircuitView {
  credentialId: string;
  providerId: string;
  state: CircuitState;
  reason: string | null;
  openedAt: number | null;
  retryAt: number | null;
  recentFailures: number;
  recentRequests: number;
  lastError: string | null;
}

interface Circuit {
  providerId: string;
  state: CircuitState;
  reason: string | null;
  openedAt: number | null;
  consecutive: number;
  events: Array<{ at: number; ok: boolean }>;
  /** When the half-open circuit let its probe through (a probe never reported is retried after a cooldown). */
  probeAt: number | null;
  lastError: string | null;
}

const maxEventsPerCircuit = 1000;

export class CircuitBreakers {
  readonly #opts: BreakerOptions;
  readonly #now: () => number;
  readonly #circuits = new Map<string, Circuit>();

  constructor(opts: Partial<BreakerOptions> = {}, now: () => number = Date.now) {
    this.#opts = { ...defaultBreakerOptions, ...opts };
    this.#now = now;
  }

  /**
   * Would allow() admit a call now? Reads the circuit without taking a half-open circuit's probe:
   * planning a route is not trying it (the plan's later candidates are often never reached).
   */
  available(credentialId: string): boolean {
    const c = this.#circuits.get(credentialId);
    if (!c || c.state === 'closed') return true;
    const now = this.#now();
    if (c.state === 'open') return c.openedAt !== null && now - c.openedAt >= this.#opts.cooldownMs;
    return c.probeAt === null || now - c.probeAt >= this.#opts.cooldownMs;
  }

  /** May a call use this credential now? A half-open circuit admits one probe at a time (this call takes it). */
  allow(credentialId: string): boolean {
    const c = this.#circuits.get(credentialId);
    if (!c || c.state === 'closed') return true;
    const now = this.#now();
    if (c.state === 'open' && c.openedAt !== null && now - c.openedAt >= this.#opts.cooldownMs) {
      c.state = 'half_open';
      c.probeAt = null;
    }
    if (c.state === 'half_open' && (c.probeAt === null || now - c.probeAt >= this.#opts.cooldownMs)) {
      c.probeAt = now;
      return true;
    }
    return false;
  }

  onSuccess(credentialId: string, providerId: string): void {
    const c = this.#circuit(credentialId, providerId);
    this.#record(c, true);
    c.consecutive = 0;
    if (c.state !== 'closed') {
      // A fresh start: the failures that opened the circuit must not trip it again on the ratio.
      c.events = c.events.slice(-1);
      c.state = 'closed';
      c.reason = null;
      c.openedAt = null;
      c.probeAt = null;
    }
  }

  onFailure(credentialId: string, providerId: string, error: string): void {
    const c = this.#circuit(credentialId, providerId);
    this.#record(c, false);
    c.consecutive++;
    c.lastError = error;
    const now = this.#now();
    if (c.state === 'half_open') return this.#open(c, `probe failed after cooldown (${error})`, now);
    if (c.state === 'open') return;
    if (c.consecutive >= this.#opts.consecutiveFailures) return this.#open(c, `${c.consecutive} consecutive failures (last: ${error})`, now);
    const recent = c.events.filter((e) => now - e.at <= this.#opts.windowMs);
    const failed = recent.filter((e) => !e.ok).length;
    if (recent.length >= this.#opts.minRequests && failed / recent.length >= this.#opts.failureRatio) {
      this.#open(c, `${failed} of ${recent.length} calls failed within ${Math.round(this.#opts.windowMs / 1000)} s (last: ${error})`, now);
    }
  }

  snapshot(): CircuitView[] {
    const now = this.#now();
    return [...this.#circuits.entries()].map(([credentialId, c]) => {
      const recent = c.events.filter((e) => now - e.at <= this.#opts.windowMs);
      return {
        credentialId,
        providerId: c.providerId,
        state: c.state === 'open' && c.openedAt !== null && now - c.openedAt >= this.#opts.cooldownMs ? 'half_open' : c.state,
        reason: c.reason,
        openedAt: c.openedAt,
        retryAt: c.openedAt === null ? null : c.openedAt + this.#opts.cooldownMs,
        recentFailures: recent.filter((e) => !e.ok).length,
        recentRequests: recent.length,
        lastError: c.lastError,
      };
    });
  }

  #open(c: Circuit, reason: string, now: number): void {
    c.state = 'open';
    c.reason = reason;
    c.openedAt = now;
    c.probeAt = null;
  }

  #record(c: Circuit, ok: boolean): void {
    const now = this.#now();
    c.events.push({ at: now, ok });
    while (c.events.length > maxEventsPerCircuit || (c.events.length > 0 && now - c.events[0].at > this.#opts.windowMs)) c.events.shift();
  }

  #circuit(credentialId: string, providerId: string): Circuit {
    let c = this.#circuits.get(credentialId);
    if (!c) {
      c = { providerId, state: 'closed', reason: null, openedAt: null, consecutive: 0, events: [], probeAt: null, lastError: null };
      this.#circuits.set(credentialId, c);
    }
    return c;
  }
}

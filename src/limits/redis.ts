// Rate limits shared by every Tollgate process (REDIS_URL set): the counters live in Redis and each
// decision is one Lua script, so check-and-count is atomic across processes, and the clock is
// Redis's own (TIME), so pods with skewed clocks still agree on the minute.
//
// Redis is optional infrastructure, so an outage must neither take the gateway down nor leave a
// process uncoordinated after Redis returns (LiteLLM #42653): the client reconnects forever in the
// background, every call tries Redis again (after a short cool-down), and meanwhile calls fail
// open (admitted uncounted) or closed (refused with limit 'unavailable'), as the operator chose.
import { createHash } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { assertLimits, assertTokens, type Admission, type RateLimiter, type RateLimiterHealth, type RateLimits } from './rate-limiter.ts';
import { counterIdleMs, longestWait, rpmRefusal, tpmRefusal, windowMs, type Refusal, type WindowCounter } from './window.ts';

export const defaultKeyPrefix = 'tollgate:rl';

export interface RedisTiming {
  /** A command without a reply in this time fails (and is retried). */
  commandTimeoutMs: number;
  /** A connection with commands pending and no byte received in this time is torn down and reopened. */
  socketTimeoutMs: number;
  connectTimeoutMs: number;
  /** Tries per call (the first included) before the outage rule applies. */
  maxAttempts: number;
  /** Pause between tries; while disconnected, the longest wait for the connection to come back. */
  retryDelayMs: number;
  /** Longest pause between reconnection attempts (they back off up to it, and never stop). */
  maxReconnectDelayMs: number;
  /** After a call gave up on Redis, later calls apply the outage rule at once for this long. */
  outageCooldownMs: number;
  /** At most one warning per this interval while Redis is unreachable. */
  outageWarnIntervalMs: number;
  /** Retry-After of a call refused because Redis is unreachable (fail-closed). */
  unavailableRetryAfterSeconds: number;
}

export const defaultRedisTiming: RedisTiming = {
  commandTimeoutMs: 250,
  socketTimeoutMs: 2_000,
  connectTimeoutMs: 1_000,
  maxAttempts: 3,
  retryDelayMs: 25,
  maxReconnectDelayMs: 1_000,
  outageCooldownMs: 1_000,
  outageWarnIntervalMs: 30_000,
  unavailableRetryAfterSeconds: 5,
};

// Each key's counters are two hashes, {w: minute index, c: count in it, p: count in the minute
// before}, rolled forward by the script exactly as window.ts `rolled` does. The key id sits in a
// hash tag ({...}) so both hashes share a Redis Cluster slot, as a two-key script requires.
// ARGV[n] = '' means "read the Redis server's clock".
const luaPrelude = `
local windowMs = tonumber(ARGV[1])
local ttlMs = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = math.floor(now / windowMs)
local elapsedMs = now - window * windowMs

local function rolled(key)
  local s = redis.call('HMGET', key, 'w', 'c', 'p')
  local w = tonumber(s[1])
  if not w then return window, 0, 0 end
  local c = tonumber(s[2]) or 0
  local p = tonumber(s[3]) or 0
  if w >= window then return w, c, p end
  if w == window - 1 then return window, 0, c end
  return window, 0, 0
end

local function usage(c, p)
  return (p * (windowMs - elapsedMs)) / windowMs + c
end
`;

// KEYS: requests hash, tokens hash. ARGV: windowMs, ttlMs, nowMs|'', rpm (-1: none), tpm (-1: none).
// Returns {refused: 0 | 1 (rpm) + 2 (tpm), rpm c, rpm p, tpm c, tpm p, elapsedMs} as seen before counting.
const admitScript = `${luaPrelude}
local rpm = tonumber(ARGV[4])
local tpm = tonumber(ARGV[5])
local rw, rc, rp = window, 0, 0
local tc, tp = 0, 0
local refused = 0
if rpm >= 0 then
  rw, rc, rp = rolled(KEYS[1])
  if usage(rc, rp) + 1 > rpm then refused = refused + 1 end
end
if tpm >= 0 then
  local tw
  tw, tc, tp = rolled(KEYS[2])
  if usage(tc, tp) >= tpm then refused = refused + 2 end
end
if refused == 0 and rpm >= 0 then
  redis.call('HSET', KEYS[1], 'w', rw, 'c', rc + 1, 'p', rp)
  redis.call('PEXPIRE', KEYS[1], ttlMs)
end
return {refused, rc, rp, tc, tp, elapsedMs}
`;

// KEYS: tokens hash. ARGV: windowMs, ttlMs, nowMs|'', tokens.
const recordTokensScript = `${luaPrelude}
local w, c, p = rolled(KEYS[1])
redis.call('HSET', KEYS[1], 'w', w, 'c', c + tonumber(ARGV[4]), 'p', p)
redis.call('PEXPIRE', KEYS[1], ttlMs)
return c + tonumber(ARGV[4])
`;

/** A Lua script run by its SHA1, sent in full only when Redis does not have it (first use, after a restart or SCRIPT FLUSH). */
class Script {
  readonly #source: string;
  readonly #sha: string;
  constructor(source: string) {
    this.#source = source;
    this.#sha = createHash('sha1').update(source).digest('hex');
  }

  async run(client: Redis, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.#sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return await client.eval(this.#source, keys.length, ...keys, ...args);
    }
  }
}

const admitLua = new Script(admitScript);
const recordTokensLua = new Script(recordTokensScript);

/** What #call returns instead of a reply when Redis cannot be used now. */
const unavailable = Symbol('redis unavailable');

export interface RedisRateLimiterOptions {
  url: string;
  failOpen: boolean;
  log: Logger;
  /** Namespace of every key this limiter writes (tests use a unique one each). */
  prefix?: string;
  timing?: Partial<RedisTiming>;
}

export class RedisRateLimiter implements RateLimiter {
  readonly #client: Redis;
  readonly #failOpen: boolean;
  readonly #log: Logger;
  readonly #prefix: string;
  readonly #timing: RedisTiming;
  readonly #readyWaiters = new Set<() => void>();
  #healthy = false;
  #lastError: string | null = null;
  /** The last connection-level error, which explains a call failing with "stream isn't writeable". */
  #connectionError: string | null = null;
  #skipRedisUntilMs = 0;
  #lastWarnAtMs = Number.NEGATIVE_INFINITY;
  #suppressedWarnings = 0;
  #inOutage = false;
  #closing = false;
  #everReady = false;

  constructor(options: RedisRateLimiterOptions) {
    this.#failOpen = options.failOpen;
    this.#log = options.log;
    this.#prefix = options.prefix ?? defaultKeyPrefix;
    this.#timing = { ...defaultRedisTiming, ...options.timing };
    this.#client = new Redis(options.url, this.#clientOptions());
    this.#client.on('ready', () => this.#onReady());
    this.#client.on('error', (err: Error) => {
      this.#connectionError = err.message;
      this.#markUnhealthy(err.message);
    });
    this.#client.on('close', () => {
      if (this.#healthy) this.#markUnhealthy('connection to Redis closed');
      this.#wakeWaiters();
    });
  }

  async admit(keyId: string, limits: RateLimits, nowMs?: number): Promise<Admission> {
    assertLimits(limits);
    if (limits.rpm === null && limits.tpm === null) return { ok: true };
    const reply = await this.#call('admit', () =>
      admitLua.run(this.#client, [this.#key(keyId, 'rpm'), this.#key(keyId, 'tpm')], [...this.#clockArgs(nowMs), limits.rpm ?? -1, limits.tpm ?? -1]),
    );
    if (reply === unavailable) return this.#outageAdmission();
    return explainAdmitReply(reply, limits);
  }

  async recordTokens(keyId: string, tokens: number, tpm: number | null, nowMs?: number): Promise<void> {
    assertTokens(tokens);
    if (tpm === null || tokens === 0) return;
    // Tokens used while Redis is unreachable are not counted: the call already happened, and
    // neither failing open nor closed has anything better to do with them.
    await this.#call('recordTokens', () => recordTokensLua.run(this.#client, [this.#key(keyId, 'tpm')], [...this.#clockArgs(nowMs), tokens]));
  }

  async close(): Promise<void> {
    this.#closing = true;
    this.#wakeWaiters();
    if (this.#client.status === 'ready') {
      try {
        await this.#client.quit();
        return;
      } catch {
        // fall through: drop the connection instead
      }
    }
    this.#client.disconnect();
  }

  health(): RateLimiterHealth {
    return { backend: 'redis', healthy: this.#healthy, lastError: this.#lastError, failOpen: this.#failOpen };
  }

  #clientOptions(): RedisOptions {
    const t = this.#timing;
    return {
      connectionName: 'tollgate-rate-limits',
      // Calls fail fast while disconnected instead of queueing behind the outage; #call retries.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: t.commandTimeoutMs,
      socketTimeout: t.socketTimeoutMs,
      connectTimeout: t.connectTimeoutMs,
      keepAlive: 10_000,
      // Never give up reconnecting: a process that started during an outage must join in when Redis returns.
      retryStrategy: (attempt: number) => Math.min(attempt * 50, t.maxReconnectDelayMs),
    };
  }

  #key(keyId: string, metric: 'rpm' | 'tpm'): string {
    return `${this.#prefix}:{${keyId}}:${metric}`;
  }

  #clockArgs(nowMs: number | undefined): (string | number)[] {
    return [windowMs, counterIdleMs, nowMs === undefined ? '' : Math.floor(nowMs)];
  }

  /** Runs `op` against Redis with bounded retries; `unavailable` when Redis cannot be used now. */
  async #call<T>(what: string, op: () => Promise<T>): Promise<T | typeof unavailable> {
    if (this.#closing) return unavailable;
    if (Date.now() < this.#skipRedisUntilMs) return unavailable;
    let lastError: unknown = null;
    for (let attempt = 1; attempt <= this.#timing.maxAttempts; attempt++) {
      if (this.#client.status !== 'ready') await this.#untilReady(this.#firstConnectPending() ? this.#timing.connectTimeoutMs : this.#timing.retryDelayMs);
      else if (attempt > 1) await sleep(this.#timing.retryDelayMs);
      if (this.#closing) return unavailable;
      try {
        const result = await op();
        this.#onSuccess();
        return result;
      } catch (err) {
        if (isScriptBug(err)) throw err;
        lastError = err;
      }
    }
    this.#onOutage(what, lastError);
    return unavailable;
  }

  #outageAdmission(): Admission {
    if (this.#failOpen) return { ok: true };
    return { ok: false, limit: 'unavailable', retryAfterSeconds: this.#timing.unavailableRetryAfterSeconds };
  }

  /** At start the first calls wait for the first connection rather than meet a false outage. */
  #firstConnectPending(): boolean {
    const status = this.#client.status;
    return !this.#everReady && (status === 'wait' || status === 'connecting' || status === 'connect');
  }

  /** Resolves when the connection is ready, has just dropped (so a try fails fast), or after `timeoutMs`. */
  #untilReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#readyWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      this.#readyWaiters.add(wake);
    });
  }

  #wakeWaiters(): void {
    for (const wake of this.#readyWaiters) wake();
  }

  #onReady(): void {
    this.#everReady = true;
    this.#healthy = true;
    this.#lastError = null;
    this.#connectionError = null;
    this.#skipRedisUntilMs = 0;
    this.#wakeWaiters();
    this.#endOutage();
  }

  #onSuccess(): void {
    if (this.#healthy && !this.#inOutage) return;
    this.#healthy = true;
    this.#lastError = null;
    this.#endOutage();
  }

  #markUnhealthy(error: string): void {
    if (this.#closing) return;
    this.#healthy = false;
    this.#lastError = error;
  }

  #describe(err: unknown): string {
    const message = err instanceof Error ? err.message : String(err);
    if (this.#client.status === 'ready' || this.#connectionError === null) return message;
    return `not connected to Redis (${this.#client.status}): ${this.#connectionError}`;
  }

  #onOutage(what: string, err: unknown): void {
    this.#markUnhealthy(this.#describe(err));
    this.#skipRedisUntilMs = Date.now() + this.#timing.outageCooldownMs;
    this.#inOutage = true;
    const now = Date.now();
    if (now - this.#lastWarnAtMs < this.#timing.outageWarnIntervalMs) {
      this.#suppressedWarnings++;
      return;
    }
    this.#log.warn(
      { error: this.#lastError, call: what, failOpen: this.#failOpen, suppressedSinceLastWarning: this.#suppressedWarnings },
      this.#failOpen ? 'rate limiter: Redis unreachable, admitting calls without counting them' : 'rate limiter: Redis unreachable, refusing calls',
    );
    this.#lastWarnAtMs = now;
    this.#suppressedWarnings = 0;
  }

  #endOutage(): void {
    if (!this.#inOutage) return;
    this.#inOutage = false;
    this.#log.info('rate limiter: Redis reachable again, limits enforced');
  }
}

/** Turns the admit script's reply into an Admission (the refusal's Retry-After computed from the same counts). */
function explainAdmitReply(reply: unknown, limits: RateLimits): Admission {
  const [refused, rc, rp, tc, tp, elapsedMs] = reply as number[];
  if (refused === 0) return { ok: true };
  const counter = (current: number, previous: number): WindowCounter => ({ window: 0, current, previous });
  const refusals: Refusal[] = [];
  if (refused & 1) refusals.push(rpmRefusal(counter(rc, rp), elapsedMs, limits.rpm!));
  if (refused & 2) refusals.push(tpmRefusal(counter(tc, tp), elapsedMs, limits.tpm!));
  return longestWait(refusals)!;
}

/** An error Redis answered about the script itself: a bug to surface, not an outage to ride out. */
function isScriptBug(err: unknown): boolean {
  return err instanceof Error && /^ERR .*(script|Lua)/i.test(err.message);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Rate limits per API key (RPM, TPM): shared through Redis when REDIS_URL is set, else kept in this
// process's memory. The gateway calls `admit` after authentication and `recordTokens` after settlement.
import type { Logger } from 'pino';
import { MemoryRateLimiter } from './memory.ts';
import { RedisRateLimiter } from './redis.ts';
import type { RateLimiter } from './rate-limiter.ts';

export type { Admission, RateLimiter, RateLimiterHealth, RateLimits } from './rate-limiter.ts';
export { MemoryRateLimiter } from './memory.ts';
export { RedisRateLimiter } from './redis.ts';

export interface CreateRateLimiterOptions {
  redisUrl: string | null;
  /** On a Redis outage: admit calls uncounted (true) or refuse them with a 429 (false). */
  failOpen: boolean;
  log: Logger;
  /** Redis key namespace; `tollgate:rl` by default. */
  prefix?: string;
}

export function createRateLimiter(opts: CreateRateLimiterOptions): RateLimiter {
  if (opts.redisUrl === null) return new MemoryRateLimiter({ failOpen: opts.failOpen });
  return new RedisRateLimiter({ url: opts.redisUrl, failOpen: opts.failOpen, log: opts.log, prefix: opts.prefix });
}

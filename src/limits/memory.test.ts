import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { MemoryRateLimiter } from './memory.ts';
import { createRateLimiter } from './index.ts';
import { minuteStartMs, rateLimiterContract } from './testing/contract.ts';
import { loadConfig } from '../config.ts';

describe('MemoryRateLimiter', () => {
  rateLimiterContract(() => new MemoryRateLimiter());

  it('keeps at most maxKeys keys, forgetting the least recently used first', async () => {
    const limiter = new MemoryRateLimiter({ maxKeys: 3 });
    const limits = { rpm: 1, tpm: null };
    for (const key of ['a', 'b', 'c']) expect((await limiter.admit(key, limits, minuteStartMs)).ok).toBe(true);
    await limiter.recordTokens('a', 10, 100, minuteStartMs); // 'a' is now the most recently used
    expect((await limiter.admit('d', limits, minuteStartMs)).ok).toBe(true);
    expect(limiter.size).toBe(3);
    // 'b' was forgotten (so counts from zero again); 'a' and 'c' still count.
    expect((await limiter.admit('b', limits, minuteStartMs)).ok).toBe(true);
    expect((await limiter.admit('a', limits, minuteStartMs)).ok).toBe(false);
    expect(limiter.size).toBe(3);
    for (let i = 0; i < 1000; i++) await limiter.admit(`k${i}`, limits, minuteStartMs);
    expect(limiter.size).toBe(3);
  });

  it('drops keys idle for two minutes, whose counters can no longer count', async () => {
    const limiter = new MemoryRateLimiter({ maxKeys: 1000 });
    for (let i = 0; i < 100; i++) await limiter.admit(`old${i}`, { rpm: 5, tpm: null }, minuteStartMs);
    expect(limiter.size).toBe(100);
    await limiter.admit('recent', { rpm: 5, tpm: null }, minuteStartMs + 90_000);
    expect(limiter.size).toBe(101);
    await limiter.admit('new', { rpm: 5, tpm: null }, minuteStartMs + 120_000);
    expect(limiter.size).toBe(2);
  });

  it('keeps nothing for keys without limits', async () => {
    const limiter = new MemoryRateLimiter();
    for (let i = 0; i < 100; i++) {
      await limiter.admit(`k${i}`, { rpm: null, tpm: null });
      await limiter.admit(`t${i}`, { rpm: null, tpm: 10 });
      await limiter.recordTokens(`k${i}`, 5, null);
    }
    expect(limiter.size).toBe(0);
  });

  it('reports itself healthy, with the operator setting', () => {
    expect(new MemoryRateLimiter({ failOpen: false }).health()).toEqual({ backend: 'memory', healthy: true, lastError: null, failOpen: false });
  });
});

describe('createRateLimiter', () => {
  it('keeps counters in memory without REDIS_URL', async () => {
    const limiter = createRateLimiter({ redisUrl: null, failOpen: true, log: pino({ level: 'silent' }) });
    expect(limiter).toBeInstanceOf(MemoryRateLimiter);
    expect(limiter.health().backend).toBe('memory');
    await limiter.close();
  });
});

describe('RATE_LIMIT_FAIL_OPEN', () => {
  it('defaults to true, reads true|false, and refuses anything else', () => {
    expect(loadConfig({}).rateLimitFailOpen).toBe(true);
    expect(loadConfig({ RATE_LIMIT_FAIL_OPEN: 'false' }).rateLimitFailOpen).toBe(false);
    expect(loadConfig({ RATE_LIMIT_FAIL_OPEN: ' TRUE ' }).rateLimitFailOpen).toBe(true);
    expect(() => loadConfig({ RATE_LIMIT_FAIL_OPEN: 'no' })).toThrow(/RATE_LIMIT_FAIL_OPEN/);
  });
});

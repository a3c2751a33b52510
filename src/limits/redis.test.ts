// The Redis limiter: the same semantics as in memory, atomic across connections and OS processes,
// and an outage that neither takes the gateway down nor leaves a process uncoordinated afterwards.
// Runs when TEST_REDIS_URL is set. Every limiter writes under its own key prefix, and outages are
// staged through a TCP proxy, so test files sharing the Redis server never disturb each other.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pino, { type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisRateLimiter, type RedisTiming } from './redis.ts';
import { createRateLimiter } from './index.ts';
import type { RateLimiter } from './rate-limiter.ts';
import { minuteStartMs, rateLimiterContract } from './testing/contract.ts';
import { TcpProxy } from './testing/tcp-proxy.ts';
import type { WorkerArgs, WorkerReport } from './testing/worker.ts';

const redisUrl = process.env.TEST_REDIS_URL;
const workerFile = path.join(path.dirname(fileURLToPath(import.meta.url)), 'testing', 'worker.ts');
const silent = pino({ level: 'silent' });
const newPrefix = () => `test:rl:${randomUUID()}`;
const newKey = () => `key_${randomUUID()}`;

/** Outage tests want quick decisions and quick reconnects. */
const fastTiming: Partial<RedisTiming> = { commandTimeoutMs: 100, socketTimeoutMs: 400, retryDelayMs: 10, maxReconnectDelayMs: 100, outageCooldownMs: 0 };

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function logLines(): { log: Logger; lines: Array<{ level: number; msg: string }> } {
  const lines: Array<{ level: number; msg: string }> = [];
  return { lines, log: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) }) };
}

describe.skipIf(!redisUrl)('RedisRateLimiter', () => {
  let redis: Redis;
  const opened: RateLimiter[] = [];
  const prefixes: string[] = [];

  function limiter(options: { url?: string; failOpen?: boolean; log?: Logger; timing?: Partial<RedisTiming>; prefix?: string } = {}): RedisRateLimiter {
    const prefix = options.prefix ?? newPrefix();
    prefixes.push(prefix);
    const l = new RedisRateLimiter({ url: options.url ?? redisUrl!, failOpen: options.failOpen ?? true, log: options.log ?? silent, prefix, timing: options.timing });
    opened.push(l);
    return l;
  }

  beforeAll(() => {
    redis = new Redis(redisUrl!);
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((l) => l.close()));
  });
  afterAll(async () => {
    for (const prefix of prefixes) {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
    }
    await redis.quit();
  });

  describe('semantics (injected clock)', () => {
    const prefix = newPrefix();
    prefixes.push(prefix);
    rateLimiterContract(async () => {
      const l = new RedisRateLimiter({ url: redisUrl!, failOpen: false, log: silent, prefix });
      await until(() => l.health().healthy);
      return l;
    });
  });

  it('createRateLimiter picks Redis when REDIS_URL is set', async () => {
    const prefix = newPrefix();
    prefixes.push(prefix);
    const l = createRateLimiter({ redisUrl: redisUrl!, failOpen: false, log: silent, prefix });
    opened.push(l);
    expect(l).toBeInstanceOf(RedisRateLimiter);
    expect((await l.admit(newKey(), { rpm: 1, tpm: null })).ok).toBe(true);
    expect(l.health()).toEqual({ backend: 'redis', healthy: true, lastError: null, failOpen: false });
  });

  it('the first calls after start wait for the first connection instead of failing', async () => {
    const l = limiter({ failOpen: false });
    const key = newKey();
    const answers = await Promise.all([1, 2, 3].map(() => l.admit(key, { rpm: 2, tpm: null })));
    expect(answers.filter((x) => x.ok)).toHaveLength(2);
    expect(answers.filter((x) => !x.ok && x.limit === 'rpm')).toHaveLength(1);
  });

  it("uses Redis's clock when none is injected", async () => {
    const l = limiter();
    const key = newKey();
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push(await l.admit(key, { rpm: 5, tpm: null }));
    expect(answers.filter((a) => a.ok)).toHaveLength(5);
    const refused = answers.at(-1)!;
    expect(refused.ok === false && refused.limit).toBe('rpm');
    expect(refused.ok === false && refused.retryAfterSeconds).toBeGreaterThanOrEqual(1);
  });

  it('namespaces keys under the prefix with the key id as a hash tag, and every key expires', async () => {
    const prefix = newPrefix();
    const l = limiter({ prefix });
    const key = newKey();
    await l.admit(key, { rpm: 10, tpm: 100 });
    await l.recordTokens(key, 42, 100);
    const keys = (await redis.keys(`${prefix}:*`)).sort();
    expect(keys).toEqual([`${prefix}:{${key}}:rpm`, `${prefix}:{${key}}:tpm`]);
    for (const k of keys) {
      const ttlMs = await redis.pttl(k);
      expect(ttlMs).toBeGreaterThan(60_000);
      expect(ttlMs).toBeLessThanOrEqual(120_000);
    }
    expect(await redis.hget(`${prefix}:{${key}}:tpm`, 'c')).toBe('42');
    // Unlimited keys write nothing.
    const free = newKey();
    await l.admit(free, { rpm: null, tpm: null });
    await l.recordTokens(free, 42, null);
    expect(await redis.keys(`${prefix}:{${free}}*`)).toEqual([]);
  });

  it('sends the script again when Redis has forgotten it (restart, SCRIPT FLUSH)', async () => {
    const l = limiter({ failOpen: false });
    const key = newKey();
    expect(await l.admit(key, { rpm: 2, tpm: null }, minuteStartMs)).toEqual({ ok: true });
    await redis.script('FLUSH');
    expect(await l.admit(key, { rpm: 2, tpm: null }, minuteStartMs)).toEqual({ ok: true });
    await redis.script('FLUSH');
    await l.recordTokens(key, 7, 10, minuteStartMs);
    expect((await l.admit(key, { rpm: 2, tpm: null }, minuteStartMs)).ok).toBe(false);
    expect(l.health().healthy).toBe(true);
  });

  it('is atomic: 200 concurrent admits from two connections at rpm 50 admit exactly 50', async () => {
    const prefix = newPrefix();
    const a = limiter({ prefix, failOpen: false });
    const b = limiter({ prefix, failOpen: false });
    const key = newKey();
    const limits = { rpm: 50, tpm: null };
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).admit(key, limits, minuteStartMs + 30_000)));
    expect(answers.filter((x) => x.ok)).toHaveLength(50);
    expect(answers.filter((x) => !x.ok && x.limit === 'rpm')).toHaveLength(150);
    expect(await redis.hget(`${prefix}:{${key}}:rpm`, 'c')).toBe('50');
  });

  it('is atomic across OS processes: two processes hammering one key admit exactly rpm in total', async () => {
    const prefix = newPrefix();
    prefixes.push(prefix);
    const keyId = newKey();
    const rpm = 60;
    const args: WorkerArgs = { url: redisUrl!, prefix, keyId, rpm, attempts: 150, waveSize: 5, waveIntervalMs: 10 };
    const workers = Array.from({ length: 2 }, () => {
      const child = spawn(process.execPath, ['--import', 'tsx', workerFile, JSON.stringify(args)], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      const nextLine = async () => {
        const next = await lines.next();
        if (next.done) throw new Error(`worker exited early: ${stderr}`);
        return JSON.parse(next.value) as unknown;
      };
      return { child, nextLine, exited, stderr: () => stderr };
    });
    for (const w of workers) expect(await w.nextLine()).toEqual({ ready: true });
    for (const w of workers) w.child.stdin.end('go\n');
    const reports = (await Promise.all(workers.map((w) => w.nextLine()))) as WorkerReport[];
    for (const w of workers) expect(await w.exited, w.stderr()).toBe(0);
    const seen = JSON.stringify(reports);
    expect(reports.reduce((n, r) => n + r.unavailable, 0), seen).toBe(0);
    expect(reports.reduce((n, r) => n + r.admitted, 0), seen).toBe(rpm);
    expect(reports.reduce((n, r) => n + r.refused, 0), seen).toBe(2 * 150 - rpm);
    // Both processes won some: they really contended for the same counter.
    for (const r of reports) expect(r.admitted, seen).toBeGreaterThan(0);
    // The stored counts agree (this minute's plus the last one's, should the run straddle a minute).
    const [current, previous] = await redis.hmget(`${prefix}:{${keyId}}:rpm`, 'c', 'p');
    expect(Number(current) + Number(previous ?? 0), seen).toBe(rpm);
  }, 60_000);

  describe('outage', () => {
    let proxy: TcpProxy;
    beforeAll(async () => {
      proxy = await TcpProxy.start(redisUrl!);
    });
    afterEach(async () => {
      proxy.resume();
      await proxy.up();
    });
    afterAll(async () => {
      await proxy.down();
    });

    it('fail-open: admits uncounted, reports unhealthy, warns once, then enforces again when Redis is back', async () => {
      const { log, lines } = logLines();
      const l = limiter({ url: proxy.url, failOpen: true, log, timing: fastTiming });
      const key = newKey();
      const limits = { rpm: 2, tpm: null };
      await until(() => l.health().healthy);
      expect(await l.admit(key, limits, minuteStartMs)).toEqual({ ok: true });

      await proxy.down();
      for (let i = 0; i < 10; i++) expect(await l.admit(key, limits, minuteStartMs)).toEqual({ ok: true });
      await l.recordTokens(key, 100, 10, minuteStartMs); // dropped, not thrown
      const health = l.health();
      expect(health.healthy).toBe(false);
      expect(health.lastError).toBeTruthy();
      expect(health.failOpen).toBe(true);
      expect(lines.filter((x) => x.level === 40)).toHaveLength(1);

      await proxy.up();
      await until(() => l.health().healthy);
      // The count from before the outage is still there: one more fits, then rpm refuses.
      expect(await l.admit(key, limits, minuteStartMs)).toEqual({ ok: true });
      expect(await l.admit(key, limits, minuteStartMs)).toMatchObject({ ok: false, limit: 'rpm' });
      expect(l.health()).toEqual({ backend: 'redis', healthy: true, lastError: null, failOpen: true });
      expect(lines.some((x) => x.level === 30 && /reachable again/.test(x.msg))).toBe(true);
    });

    it("fail-closed: refuses with limit 'unavailable' and a short Retry-After, then recovers", async () => {
      const l = limiter({ url: proxy.url, failOpen: false, timing: fastTiming });
      const key = newKey();
      await until(() => l.health().healthy);
      await proxy.down();
      expect(await l.admit(key, { rpm: 100, tpm: null })).toEqual({ ok: false, limit: 'unavailable', retryAfterSeconds: 5 });
      expect(await l.admit(key, { rpm: null, tpm: 100 })).toEqual({ ok: false, limit: 'unavailable', retryAfterSeconds: 5 });
      // No limits, no Redis needed: still admitted.
      expect(await l.admit(key, { rpm: null, tpm: null })).toEqual({ ok: true });
      expect(l.health().healthy).toBe(false);
      await proxy.up();
      await until(async () => (await l.admit(key, { rpm: 100, tpm: null })).ok);
      expect(l.health().healthy).toBe(true);
    });

    it('a process started while Redis is down joins in once Redis comes up (LiteLLM #42653)', async () => {
      await proxy.down();
      const l = limiter({ url: proxy.url, failOpen: true, timing: fastTiming });
      const key = newKey();
      expect(await l.admit(key, { rpm: 1, tpm: null }, minuteStartMs)).toEqual({ ok: true });
      expect(await l.admit(key, { rpm: 1, tpm: null }, minuteStartMs)).toEqual({ ok: true });
      expect(l.health().healthy).toBe(false);
      expect(l.health().lastError).toMatch(/ECONNREFUSED|closed|writeable/);
      await proxy.up();
      await until(() => l.health().healthy);
      expect(await l.admit(key, { rpm: 1, tpm: null }, minuteStartMs)).toEqual({ ok: true });
      expect(await l.admit(key, { rpm: 1, tpm: null }, minuteStartMs)).toMatchObject({ ok: false, limit: 'rpm' });
    });

    it('a hung Redis costs a bounded wait per call, and the limiter recovers when it answers again', async () => {
      const l = limiter({ url: proxy.url, failOpen: false, timing: { ...fastTiming, outageCooldownMs: 300 } });
      const key = newKey();
      await until(() => l.health().healthy);
      proxy.hang();
      const startedMs = Date.now();
      expect(await l.admit(key, { rpm: 5, tpm: null }, minuteStartMs)).toMatchObject({ ok: false, limit: 'unavailable' });
      expect(Date.now() - startedMs).toBeLessThan(1_000);
      // Within the cool-down, calls do not wait on Redis at all: never as long as a command's timeout.
      const skippedMs = Date.now();
      expect(await l.admit(key, { rpm: 5, tpm: null }, minuteStartMs)).toMatchObject({ ok: false, limit: 'unavailable' });
      expect(Date.now() - skippedMs).toBeLessThan(fastTiming.commandTimeoutMs!);
      expect(l.health().lastError).toMatch(/timed out|timeout/i);
      proxy.resume();
      await until(async () => (await l.admit(key, { rpm: 5, tpm: null }, minuteStartMs)).ok);
      expect(l.health().healthy).toBe(true);
      // Admits sent while hung may have reached Redis late and counted (never more than were
      // sent); the limit still holds.
      let admitted = 0;
      for (let i = 0; i < 10; i++) if ((await l.admit(key, { rpm: 5, tpm: null }, minuteStartMs)).ok) admitted++;
      expect(admitted).toBeLessThan(5);
      expect((await l.admit(key, { rpm: 5, tpm: null }, minuteStartMs)).ok).toBe(false);
    });

    it('closes promptly while Redis is unreachable', async () => {
      await proxy.down();
      const l = limiter({ url: proxy.url, timing: fastTiming });
      const startedMs = Date.now();
      await l.close();
      expect(Date.now() - startedMs).toBeLessThan(500);
      expect(await l.admit(newKey(), { rpm: 1, tpm: null })).toEqual({ ok: true });
    });
  });
});

// The behaviour every RateLimiter must show, run by memory.test.ts and redis.test.ts against their
// backend with an injected clock, so both backends are held to the same answers.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Admission, RateLimiter } from '../rate-limiter.ts';

/** The start of a minute, far from now, so wall-clock minutes never matter. */
export const minuteStartMs = Date.UTC(2030, 0, 1, 0, 0, 0);
const s = (seconds: number) => minuteStartMs + seconds * 1000;

const ok: Admission = { ok: true };

/** A seeded generator (mulberry32), so a failing random history can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function rateLimiterContract(makeLimiter: () => Promise<RateLimiter> | RateLimiter): void {
  let limiter: RateLimiter;
  beforeAll(async () => {
    limiter = await makeLimiter();
  });
  afterAll(async () => {
    await limiter.close();
  });
  const newKey = () => `key_${randomUUID()}`;

  it('admits everything when both limits are null', async () => {
    const key = newKey();
    for (let i = 0; i < 50; i++) expect(await limiter.admit(key, { rpm: null, tpm: null }, s(1))).toEqual(ok);
    await limiter.recordTokens(key, 1_000_000, null, s(1));
    expect(await limiter.admit(key, { rpm: null, tpm: 1 }, s(2))).toEqual(ok);
  });

  it('RPM: admits up to the limit in a minute, refuses the next, with the exact Retry-After', async () => {
    const key = newKey();
    const limits = { rpm: 3, tpm: null };
    for (let i = 0; i < 3; i++) expect(await limiter.admit(key, limits, s(10))).toEqual(ok);
    // Next minute at 20 s: 3 requests weighted by 40/60 = 2, so one more fits at 80 s, not before.
    expect(await limiter.admit(key, limits, s(10))).toEqual({ ok: false, limit: 'rpm', retryAfterSeconds: 70 });
    expect(await limiter.admit(key, limits, s(79))).toEqual({ ok: false, limit: 'rpm', retryAfterSeconds: 1 });
    expect(await limiter.admit(key, limits, s(80))).toEqual(ok);
    expect((await limiter.admit(key, limits, s(80))).ok).toBe(false);
  });

  it('RPM: the previous minute counts in proportion to its part still inside the sliding window', async () => {
    const key = newKey();
    const limits = { rpm: 10, tpm: null };
    for (let i = 0; i < 10; i++) expect(await limiter.admit(key, limits, s(50))).toEqual(ok);
    // 30 s into the next minute half of the previous minute's 10 still count: 5 more fit.
    for (let i = 0; i < 5; i++) expect(await limiter.admit(key, limits, s(90))).toEqual(ok);
    // 5 + 10 × (60 − e)/60 ≤ 9 from e = 36 s: six seconds from now.
    expect(await limiter.admit(key, limits, s(90))).toEqual({ ok: false, limit: 'rpm', retryAfterSeconds: 6 });
    expect((await limiter.admit(key, limits, s(95))).ok).toBe(false);
    expect(await limiter.admit(key, limits, s(96))).toEqual(ok);
    // Two minutes on, nothing from the first minute is left.
    for (let i = 0; i < 10; i++) expect(await limiter.admit(key, { rpm: 10, tpm: null }, s(240))).toEqual(ok);
  });

  it('RPM: refused calls do not count', async () => {
    const key = newKey();
    const limits = { rpm: 1, tpm: null };
    expect(await limiter.admit(key, limits, s(0))).toEqual(ok);
    for (let i = 0; i < 20; i++) expect((await limiter.admit(key, limits, s(30))).ok).toBe(false);
    // rpm 1, one call at 0 s: the estimate drops under 1 only once that minute has fully slid out.
    expect(await limiter.admit(key, limits, s(30))).toEqual({ ok: false, limit: 'rpm', retryAfterSeconds: 90 });
    expect(await limiter.admit(key, limits, s(120))).toEqual(ok);
  });

  it('RPM of 0 refuses every call', async () => {
    expect(await limiter.admit(newKey(), { rpm: 0, tpm: null }, s(5))).toEqual({ ok: false, limit: 'rpm', retryAfterSeconds: 60 });
  });

  it('TPM: admits while recorded tokens are under the limit; the last call may overshoot by its own size', async () => {
    const key = newKey();
    const limits = { rpm: null, tpm: 1000 };
    expect(await limiter.admit(key, limits, s(10))).toEqual(ok);
    await limiter.recordTokens(key, 600, 1000, s(10));
    expect(await limiter.admit(key, limits, s(10))).toEqual(ok);
    await limiter.recordTokens(key, 600, 1000, s(10));
    // 1200 recorded: refused until 1200 × (60 − e)/60 < 1000 in the next minute, e > 10 s.
    expect(await limiter.admit(key, limits, s(10))).toEqual({ ok: false, limit: 'tpm', retryAfterSeconds: 61 });
    expect((await limiter.admit(key, limits, s(70))).ok).toBe(false);
    expect(await limiter.admit(key, limits, s(71))).toEqual(ok);
  });

  it('TPM: a call is refused once the recorded tokens reach the limit exactly', async () => {
    const key = newKey();
    await limiter.recordTokens(key, 500, 500, s(0));
    expect(await limiter.admit(key, { rpm: null, tpm: 500 }, s(0))).toEqual({ ok: false, limit: 'tpm', retryAfterSeconds: 61 });
    expect(await limiter.admit(key, { rpm: null, tpm: 501 }, s(0))).toEqual(ok);
  });

  it('TPM: admitting does not spend tokens, and tokens recorded without a TPM are not kept', async () => {
    const key = newKey();
    for (let i = 0; i < 30; i++) expect(await limiter.admit(key, { rpm: null, tpm: 10 }, s(1))).toEqual(ok);
    await limiter.recordTokens(key, 1000, null, s(1));
    await limiter.recordTokens(key, 0, 10, s(1));
    expect(await limiter.admit(key, { rpm: null, tpm: 10 }, s(2))).toEqual(ok);
  });

  it('when both limits refuse, the answer names the one with the longer wait', async () => {
    const key = newKey();
    const limits = { rpm: 2, tpm: 100 };
    expect(await limiter.admit(key, limits, s(0))).toEqual(ok);
    expect(await limiter.admit(key, limits, s(0))).toEqual(ok);
    await limiter.recordTokens(key, 50, 100, s(0));
    expect(await limiter.admit(key, limits, s(0))).toEqual({ ok: false, limit: 'rpm', retryAfterSeconds: 90 });
    await limiter.recordTokens(key, 450, 100, s(0));
    // TPM: 500 × (60 − e)/60 < 100 from e > 48 s of the next minute: 108 s > 90 s.
    expect(await limiter.admit(key, limits, s(0))).toEqual({ ok: false, limit: 'tpm', retryAfterSeconds: 109 });
    expect(await limiter.admit(key, limits, s(59))).toEqual({ ok: false, limit: 'tpm', retryAfterSeconds: 50 });
  });

  it('keys are counted apart', async () => {
    const a = newKey();
    const b = newKey();
    expect(await limiter.admit(a, { rpm: 1, tpm: null }, s(0))).toEqual(ok);
    expect((await limiter.admit(a, { rpm: 1, tpm: null }, s(0))).ok).toBe(false);
    expect(await limiter.admit(b, { rpm: 1, tpm: null }, s(0))).toEqual(ok);
  });

  it('rejects limits and token counts that are not non-negative integers', async () => {
    await expect(limiter.admit(newKey(), { rpm: -1, tpm: null })).rejects.toThrow(RangeError);
    await expect(limiter.admit(newKey(), { rpm: null, tpm: 1.5 })).rejects.toThrow(RangeError);
    await expect(limiter.recordTokens(newKey(), Number.NaN, 10)).rejects.toThrow(RangeError);
  });

  it('random histories: every Retry-After is exact (refused a second earlier, admitted then)', async () => {
    const random = seededRandom(20240611);
    for (let history = 0; history < 12; history++) {
      const key = newKey();
      const limits = { rpm: 1 + Math.floor(random() * 12), tpm: random() < 0.5 ? null : 50 + Math.floor(random() * 400) };
      let nowMs = minuteStartMs + Math.floor(random() * 60_000);
      let refusals = 0;
      for (let step = 0; step < 40; step++) {
        nowMs += Math.floor(random() * 8_000);
        const answer = await limiter.admit(key, limits, nowMs);
        if (answer.ok) {
          if (limits.tpm !== null) await limiter.recordTokens(key, Math.floor(random() * 120), limits.tpm, nowMs);
          continue;
        }
        refusals++;
        expect(answer.limit === 'rpm' || answer.limit === 'tpm').toBe(true);
        const waitMs = answer.retryAfterSeconds * 1000;
        if (answer.retryAfterSeconds > 1) expect((await limiter.admit(key, limits, nowMs + waitMs - 1000)).ok, `history ${history} step ${step}`).toBe(false);
        nowMs += waitMs;
        expect(await limiter.admit(key, limits, nowMs), `history ${history} step ${step}`).toEqual(ok);
      }
      expect(refusals).toBeGreaterThan(0);
    }
  });
}

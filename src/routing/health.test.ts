// The circuit breaker on an injected clock: when it opens (consecutive failures, failure ratio over
// a window with a minimum of calls), that it stays open through the cooldown, half-opens after it
// with exactly one probe, and what the probe's success, failure or silence do.
import { describe, expect, it } from 'vitest';
import { CircuitBreakers, type BreakerOptions } from './health.ts';

const opts: BreakerOptions = { consecutiveFailures: 3, failureRatio: 0.5, minRequests: 6, windowMs: 10_000, cooldownMs: 5_000 };

function clocked(overrides: Partial<BreakerOptions> = {}) {
  let now = 1_000_000;
  const breakers = new CircuitBreakers({ ...opts, ...overrides }, () => now);
  return {
    breakers,
    advance(ms: number) {
      now += ms;
    },
    get now() {
      return now;
    },
    view(id: string) {
      const v = breakers.snapshot().find((c) => c.credentialId === id);
      if (!v) throw new Error(`no circuit ${id}`);
      return v;
    },
  };
}

/** How many of `n` concurrent callers the circuit lets through right now. */
const admitted = (b: CircuitBreakers, id: string, n = 5) => Array.from({ length: n }, () => b.allow(id)).filter(Boolean).length;

describe('CircuitBreakers', () => {
  it('admits everything for a credential it has never heard of, and shows no circuit for it', () => {
    const { breakers } = clocked();
    expect(admitted(breakers, 'cred_new')).toBe(5);
    expect(breakers.snapshot()).toEqual([]);
  });

  it('opens after N consecutive failures, and a success in between resets the count', () => {
    const c = clocked();
    c.breakers.onFailure('k', 'p', 'HTTP 500 server_error');
    c.breakers.onFailure('k', 'p', 'HTTP 500 server_error');
    c.breakers.onSuccess('k', 'p');
    c.breakers.onFailure('k', 'p', 'HTTP 500 server_error');
    c.breakers.onFailure('k', 'p', 'timeout');
    // 2 in a row (the success reset the count), 4 of 5 failed but fewer than minRequests (6) calls.
    expect(c.view('k')).toMatchObject({ state: 'closed', reason: null, openedAt: null, recentFailures: 4, recentRequests: 5, lastError: 'timeout' });
    expect(admitted(c.breakers, 'k')).toBe(5);

    c.breakers.onFailure('k', 'p', 'connection_error');
    const opened = c.view('k');
    expect(opened).toMatchObject({ providerId: 'p', state: 'open', openedAt: c.now, retryAt: c.now + opts.cooldownMs, lastError: 'connection_error' });
    expect(opened.reason).toBe('3 consecutive failures (last: connection_error)');
    expect(admitted(c.breakers, 'k')).toBe(0);
  });

  it('opens on the failure ratio once the window holds minRequests calls, whatever the streak', () => {
    // Consecutive failures can never trip it here (limit 100): only the ratio can.
    const c = clocked({ consecutiveFailures: 100 });
    // ok, fail, ok, fail, ok: 2 of 5 failed.
    for (const ok of [true, false, true, false, true]) {
      if (ok) c.breakers.onSuccess('k', 'p');
      else c.breakers.onFailure('k', 'p', 'HTTP 503 server_error');
      c.advance(100);
    }
    // 6th call fails: 3 of 6 = 0.5 ≥ failureRatio with minRequests reached.
    c.breakers.onFailure('k', 'p', 'HTTP 503 server_error');
    expect(c.view('k')).toMatchObject({ state: 'open', reason: '3 of 6 calls failed within 10 s (last: HTTP 503 server_error)', recentFailures: 3, recentRequests: 6 });
    expect(c.breakers.allow('k')).toBe(false);
  });

  it('does not open on the ratio below minRequests, nor counts calls that left the window', () => {
    const c = clocked({ consecutiveFailures: 100 });
    // 5 failures of 5: ratio 1, but only 5 < minRequests (6) calls.
    for (let i = 0; i < 5; i++) c.breakers.onFailure('k', 'p', 'HTTP 500');
    expect(c.view('k').state).toBe('closed');
    // Those five age out of the window; 1 failure and 5 successes later, 1 of 6 failed.
    c.advance(opts.windowMs + 1);
    c.breakers.onFailure('k', 'p', 'HTTP 500');
    for (let i = 0; i < 5; i++) c.breakers.onSuccess('k', 'p');
    expect(c.view('k')).toMatchObject({ state: 'closed', recentFailures: 1, recentRequests: 6 });
    // Ratio exactly at the threshold with the minimum: 3 of 6 in a fresh window opens it.
    c.advance(opts.windowMs + 1);
    for (const ok of [true, true, true, false, false]) (ok ? c.breakers.onSuccess('k', 'p') : c.breakers.onFailure('k', 'p', 'HTTP 500'));
    expect(c.view('k').state).toBe('closed');
    c.breakers.onFailure('k', 'p', 'HTTP 500');
    expect(c.view('k').state).toBe('open');
  });

  it('keeps circuits apart per credential', () => {
    const c = clocked();
    for (let i = 0; i < 3; i++) c.breakers.onFailure('a', 'p', 'HTTP 500');
    expect(c.breakers.allow('a')).toBe(false);
    expect(c.breakers.allow('b')).toBe(true);
    c.breakers.onFailure('b', 'p', 'HTTP 500');
    expect(c.view('b').state).toBe('closed');
  });

  it('stays open through the cooldown; failures reported meanwhile do not move the retry time', () => {
    const c = clocked();
    for (let i = 0; i < 3; i++) c.breakers.onFailure('k', 'p', 'HTTP 500');
    const openedAt = c.now;
    c.advance(opts.cooldownMs - 1);
    // A straggler (a call admitted before the circuit opened) fails late.
    c.breakers.onFailure('k', 'p', 'HTTP 502');
    expect(c.view('k')).toMatchObject({ state: 'open', openedAt, retryAt: openedAt + opts.cooldownMs, lastError: 'HTTP 502' });
    expect(admitted(c.breakers, 'k')).toBe(0);
    expect(c.breakers.available('k')).toBe(false);
  });

  it('half-opens after the cooldown and lets exactly one probe through', () => {
    const c = clocked();
    for (let i = 0; i < 3; i++) c.breakers.onFailure('k', 'p', 'HTTP 500');
    c.advance(opts.cooldownMs);
    // The view already says half-open before anyone asks.
    expect(c.view('k').state).toBe('half_open');
    expect(c.breakers.available('k')).toBe(true);
    // Five callers at once: one probe.
    expect(admitted(c.breakers, 'k')).toBe(1);
    expect(c.view('k').state).toBe('half_open');
    expect(c.breakers.available('k')).toBe(false);
    c.advance(opts.cooldownMs - 1);
    expect(admitted(c.breakers, 'k')).toBe(0);
  });

  it('closes when the probe succeeds', () => {
    const c = clocked();
    for (let i = 0; i < 3; i++) c.breakers.onFailure('k', 'p', 'HTTP 500');
    c.advance(opts.cooldownMs);
    expect(c.breakers.allow('k')).toBe(true);
    c.breakers.onSuccess('k', 'p');
    // The window starts afresh with the probe's success: the failures before it are history.
    expect(c.view('k')).toMatchObject({ state: 'closed', reason: null, openedAt: null, retryAt: null, recentFailures: 0, recentRequests: 1 });
    expect(admitted(c.breakers, 'k')).toBe(5);
    // And it takes a full streak (or a new failure ratio) to open it again.
    c.breakers.onFailure('k', 'p', 'HTTP 500');
    c.breakers.onFailure('k', 'p', 'HTTP 500');
    expect(c.view('k').state).toBe('closed');
  });

  it('opens again for a whole cooldown when the probe fails', () => {
    const c = clocked();
    for (let i = 0; i < 3; i++) c.breakers.onFailure('k', 'p', 'HTTP 500');
    c.advance(opts.cooldownMs);
    expect(c.breakers.allow('k')).toBe(true);
    c.advance(250);
    c.breakers.onFailure('k', 'p', 'timeout');
    const reopened = c.now;
    expect(c.view('k')).toMatchObject({ state: 'open', reason: 'probe failed after cooldown (timeout)', openedAt: reopened, retryAt: reopened + opts.cooldownMs });
    c.advance(opts.cooldownMs - 1);
    expect(admitted(c.breakers, 'k')).toBe(0);
    c.advance(1);
    expect(admitted(c.breakers, 'k')).toBe(1);
  });

  it('lets another probe through when the first is never reported, one cooldown after it was let through', () => {
    const c = clocked();
    for (let i = 0; i < 3; i++) c.breakers.onFailure('k', 'p', 'HTTP 500');
    c.advance(opts.cooldownMs);
    expect(c.breakers.allow('k')).toBe(true); // the probe's caller vanishes (crash, aborted call)
    c.advance(opts.cooldownMs - 1);
    expect(admitted(c.breakers, 'k')).toBe(0);
    c.advance(1);
    expect(admitted(c.breakers, 'k')).toBe(1);
    c.breakers.onSuccess('k', 'p');
    expect(c.view('k').state).toBe('closed');
  });

  it('available() reads the circuit without taking the probe', () => {
    const c = clocked();
    for (let i = 0; i < 3; i++) c.breakers.onFailure('k', 'p', 'HTTP 500');
    c.advance(opts.cooldownMs);
    for (let i = 0; i < 10; i++) expect(c.breakers.available('k')).toBe(true);
    expect(admitted(c.breakers, 'k')).toBe(1);
  });
});

import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { conflict } from '../lib/errors.ts';
import { Settlements } from './settlements.ts';

const quiet = pino({ level: 'silent' });

/** Until every settlement started has committed or been given up (retries included). */
async function allDone(s: Settlements): Promise<void> {
  while (s.pending > 0) await new Promise((r) => setTimeout(r, 1));
}

/** A write that stays pending until released. */
function gate() {
  let release!: () => void;
  const done = new Promise<void>((resolve) => {
    release = resolve;
  });
  return { write: () => done, release };
}

describe('settlements after the answer', () => {
  it('tracks settlements per workspace until they commit, and settled() waits for exactly those', async () => {
    const s = new Settlements(quiet);
    const a = gate();
    const b = gate();
    await s.start('ws_a', 'req_1', a.write);
    await s.start('ws_b', 'req_2', b.write);
    expect(s.pending).toBe(2);
    expect([s.has('ws_a'), s.has('ws_b'), s.has('ws_c'), s.has()]).toEqual([true, true, false, true]);

    let aSettled = false;
    const waitA = s.settled('ws_a').then(() => {
      aSettled = true;
    });
    b.release();
    await new Promise((r) => setTimeout(r, 10));
    expect(aSettled).toBe(false);
    expect(s.has('ws_b')).toBe(false);
    a.release();
    await waitA;
    expect(s.pending).toBe(0);
    expect(s.has()).toBe(false);
  });

  it('gives up waiting after maxWaitMs, leaving the settlement tracked', async () => {
    const s = new Settlements(quiet);
    const a = gate();
    await s.start('ws_a', 'req_1', a.write);
    await s.settled('ws_a', 20);
    expect(s.has('ws_a')).toBe(true);
    a.release();
    await s.settled();
    expect(s.has('ws_a')).toBe(false);
  });

  it('retries a failed settlement until it commits, and gives up on a refusal at once', async () => {
    const s = new Settlements(quiet, { retryDelaysMs: [1, 1, 1] });
    let attempts = 0;
    await s.start('ws_a', 'req_1', async () => {
      attempts++;
      if (attempts < 3) throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    });
    await allDone(s);
    expect(attempts).toBe(3);
    expect(s.failed).toBe(0);

    let refusals = 0;
    await s.start('ws_a', 'req_2', async () => {
      refusals++;
      throw conflict('hold_not_pending', 'no longer pending');
    });
    await allDone(s);
    expect(refusals).toBe(1);
    expect(s.failed).toBe(1);

    let tries = 0;
    await s.start('ws_a', 'req_3', async () => {
      tries++;
      throw new Error('connection lost');
    });
    await allDone(s);
    expect(tries).toBe(4);
    expect(s.failed).toBe(2);
    expect(s.pending).toBe(0);
  });

  it('tells a finishing call whether it was the only one in flight', () => {
    const s = new Settlements(quiet);
    s.admitted();
    expect(s.finishing()).toBe(true);
    s.admitted();
    s.admitted();
    s.admitted();
    expect([s.finishing(), s.finishing(), s.finishing()]).toEqual([false, false, true]);
    // A finish without an admission (never expected) does not drive the count below zero.
    expect(s.finishing()).toBe(true);
    s.admitted();
    s.admitted();
    expect(s.finishing()).toBe(false);
  });

  it('takes a unique violation on a retry for an earlier attempt that did commit, and gives up at once on a constraint', async () => {
    const s = new Settlements(quiet, { retryDelaysMs: [1, 1, 1] });
    let tries = 0;
    await s.start('ws_a', 'req_1', async () => {
      tries++;
      if (tries === 1) throw Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
      throw Object.assign(new Error('duplicate key value violates unique constraint "transfers_hold_once"'), { code: '23505' });
    });
    await allDone(s);
    expect(tries).toBe(2);
    expect(s.failed).toBe(0);
    expect(s.pending).toBe(0);

    let once = 0;
    await s.start('ws_a', 'req_2', async () => {
      once++;
      throw Object.assign(new Error('FOREIGN KEY constraint failed'), { code: 'SQLITE_CONSTRAINT_FOREIGNKEY' });
    });
    await allDone(s);
    expect(once).toBe(1);
    expect(s.failed).toBe(1);
  });

  it('does not make reads wait for a settlement sleeping before its retry, and drain wakes it for a last attempt', async () => {
    const s = new Settlements(quiet, { retryDelaysMs: [60_000] });
    let tries = 0;
    await s.start('ws_a', 'req_1', async () => {
      tries++;
      throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(tries).toBe(1);
    // Waiting for it would take its whole minute of sleep (past the test's own timeout).
    await s.settled('ws_a', 60_000);
    expect(s.has('ws_a')).toBe(true);
    await s.drain(10_000);
    expect(tries).toBe(2);
    expect(s.failed).toBe(1);
    expect(s.has('ws_a')).toBe(false);
  });

  it('makes a call wait for its own settlement when too many are pending', async () => {
    const s = new Settlements(quiet, { maxPending: 2 });
    const gates = [gate(), gate(), gate()];
    await s.start('ws_a', 'req_1', gates[0].write);
    await s.start('ws_a', 'req_2', gates[1].write);
    let third = false;
    const started = s.start('ws_a', 'req_3', gates[2].write).then(() => {
      third = true;
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(third).toBe(false);
    gates[2].release();
    await started;
    expect(third).toBe(true);
    gates[0].release();
    gates[1].release();
    await s.settled();
    expect(s.pending).toBe(0);
  });
});

// The benchmark's arithmetic: rounds pooled into one measurement, and each ratio the median of the
// rounds' own ratios. The verdicts in the README come from here, so they are tested like product code.
import { describe, expect, it } from 'vitest';
import { measurementOf, type LoadResult } from './load.ts';
import { ratiosOf, type ModeResult, type TargetKey, type TargetResult } from './report.ts';

function run(ok: number, seconds: number, latenciesMs: number[], cpuMsPerRequest: number | null = null): LoadResult {
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  return {
    connections: 50,
    answered: ok,
    ok,
    statusCounts: { '200': ok },
    errors: 0,
    timeouts: 0,
    seconds,
    requestsPerSecond: ok / seconds,
    p50Ms: sorted[Math.ceil(sorted.length / 2) - 1],
    p99Ms: sorted[Math.ceil(sorted.length * 0.99) - 1],
    startedAtMs: 0,
    endedAtMs: seconds * 1000,
    latenciesMs: sorted,
    cpuMsPerRequest,
  };
}

/** A target whose rounds served `rps[i]` requests per second, each at latency `p50[i]`, at both connection counts. */
function target(key: TargetKey, rps: number[], p50: number[], cpu: number[]): TargetResult {
  const rounds = rps.map((r, i) => [run(r, 1, Array.from({ length: r }, () => p50[i]), cpu[i])]);
  return { key, label: key, loaded: measurementOf(rounds), single: measurementOf(rounds) };
}

describe('bench rounds', () => {
  it('pools rounds: requests over summed time, latencies together, CPU weighted by requests', () => {
    const m = measurementOf([[run(10, 2, [5, 1]), run(300, 3, [1, 2, 3], 0.2)], [run(100, 1, [4, 4, 4, 9], 0.5)]]);
    expect(m.rounds.map((r) => r.ok)).toEqual([300, 100]);
    expect(m.runs).toHaveLength(3);
    expect(m.main.ok).toBe(7);
    expect(m.main.seconds).toBe(4);
    expect(m.main.requestsPerSecond).toBe(7 / 4);
    expect(m.main.latenciesMs).toEqual([1, 2, 3, 4, 4, 4, 9]);
    expect(m.main.p50Ms).toBe(4);
    expect(m.main.p99Ms).toBe(9);
    // 300 answers at 0.2 ms and 100 at 0.5 ms, as stated by the rounds' own counts.
    expect(m.main.cpuMsPerRequest).toBeCloseTo((300 * 0.2 + 100 * 0.5) / 7);
  });

  it('leaves CPU unknown when any round could not read it', () => {
    expect(measurementOf([[run(1, 1, [1], 0.3)], [run(1, 1, [1], null)]]).main.cpuMsPerRequest).toBeNull();
  });

  it('takes each ratio as the median of the rounds, not of the pooled figures', () => {
    const mode: ModeResult = {
      title: 't',
      targets: [
        target('mock', [100, 100, 100], [1, 1, 1], [0.1, 0.1, 0.1]),
        target('proxy', [50, 40, 10], [2, 2, 2], [0.2, 0.2, 0.4]),
        target('tollgate', [20, 20, 9], [5, 3, 3], [0.5, 0.6, 0.4]),
      ],
    };
    const byWhat = new Map(ratiosOf(mode, 50).map((r) => [r.what, r]));
    const rps = byWhat.get('Tollgate ÷ undici proxy, req/s at 50 connections')!;
    expect(rps.rounds).toEqual([0.4, 0.5, 0.9]);
    expect(rps.value).toBe(0.5);
    expect(rps.holds).toBe(true);
    // Pooled, Tollgate served 49 to the proxy's 100: the verdict would differ, which is the point of rounds.
    const single = byWhat.get('Tollgate added p50 ÷ proxy added p50, 1 connection')!;
    expect(single.rounds).toEqual([4, 2, 2]);
    expect(single.value).toBe(2);
    expect(single.holds).toBe(true);
    const cpu = byWhat.get("Tollgate CPU per request ÷ proxy's, 50 connections")!;
    expect(cpu.rounds.map((v) => Number(v.toFixed(6)))).toEqual([2.5, 3, 1]);
    expect(cpu.value).toBeCloseTo(2.5);
    expect(cpu.holds).toBeNull();
  });
});

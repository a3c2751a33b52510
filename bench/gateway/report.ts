// The benchmark's Markdown: a table per mode (figures and what each target adds to the direct
// mock), the target ratios with their verdicts, and the billing check.
import type { LoadResult, Measurement } from './load.ts';
import type { BillingCheck } from './tollgate.ts';

export type TargetKey = 'mock' | 'proxy' | 'portkey' | 'tollgate';

export interface TargetResult {
  key: TargetKey;
  label: string;
  /** At the configured number of connections. */
  loaded: Measurement;
  /** At one connection: the time one request takes. */
  single: Measurement;
}

export interface ModeResult {
  title: string;
  targets: TargetResult[];
}

export interface Ratio {
  what: string;
  /** The median of the rounds' values. */
  value: number;
  /** The same ratio within each round, both targets measured minutes apart at most. */
  rounds: number[];
  goal: string;
  holds: boolean | null;
}

/** The share of non-2xx answers and connection errors above which a run's figures are worthless. */
export const maxFailedShare = 0.001;
export const minRpsRatio = 0.5;
export const maxAddedP50Ratio = 2;

export function failuresOf(t: TargetResult): { failed: number; total: number; statuses: Record<string, number> } {
  let failed = 0;
  let total = 0;
  const statuses: Record<string, number> = {};
  for (const run of [...t.loaded.runs, ...t.single.runs]) {
    failed += run.answered - run.ok + run.errors;
    total += run.answered + run.errors;
    for (const [status, n] of Object.entries(run.statusCounts)) if (!status.startsWith('2')) statuses[status] = (statuses[status] ?? 0) + n;
  }
  return { failed, total, statuses };
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
function ms(n: number): string {
  if (!Number.isFinite(n)) return '—';
  const abs = Math.abs(n);
  return n.toFixed(abs < 1 ? 3 : abs < 10 ? 2 : 1);
}
const plusMs = (n: number) => (Number.isFinite(n) ? `${n >= 0 ? '+' : ''}${ms(n)}` : '—');
const perRequestMs = (r: LoadResult) => (r.requestsPerSecond > 0 ? 1000 / r.requestsPerSecond : Number.NaN);

export function modeTable(mode: ModeResult, connections: number): string {
  const mock = mode.targets.find((t) => t.key === 'mock');
  const header = [
    `| target | ${connections} conn: req/s | p50 / p99 ms | added p50 / p99 ms | CPU ms per request | 1 conn: req/s | per request ms (added) | p50 ms (added) | failed |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const rows = mode.targets.map((t) => {
    const l = t.loaded.main;
    const s = t.single.main;
    const isMock = t === mock;
    const added = (f: (m: TargetResult) => number) => (mock && !isMock ? plusMs(f(t) - f(mock)) : '—');
    const failures = failuresOf(t);
    return [
      t.label,
      int(l.requestsPerSecond),
      `${ms(l.p50Ms)} / ${ms(l.p99Ms)}`,
      isMock ? '—' : `${added((x) => x.loaded.main.p50Ms)} / ${added((x) => x.loaded.main.p99Ms)}`,
      l.cpuMsPerRequest === null ? '—' : ms(l.cpuMsPerRequest),
      int(s.requestsPerSecond),
      `${ms(perRequestMs(s))} (${added((x) => perRequestMs(x.single.main))})`,
      `${ms(s.p50Ms)} (${added((x) => x.single.main.p50Ms)})`,
      `${int(failures.failed)} of ${int(failures.total)}`,
    ];
  });
  return [...header, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function runsLine(mode: ModeResult): string {
  const parts = mode.targets.map((t) => `${t.label} ${int(t.loaded.main.ok)} requests in ${t.loaded.main.seconds.toFixed(1)} s and ${int(t.single.main.ok)} in ${t.single.main.seconds.toFixed(1)} s`);
  return `Counted runs: ${parts.join('; ')}.`;
}

/**
 * Tollgate (and Portkey) against the undici proxy, per round: each round measured every target
 * once, so a ratio within a round compares figures taken close together on a noisy machine.
 */
export function ratiosOf(mode: ModeResult, connections: number): Ratio[] {
  const by = (k: TargetKey) => mode.targets.find((t) => t.key === k);
  const mock = by('mock');
  const proxy = by('proxy');
  const tollgate = by('tollgate');
  const portkey = by('portkey');
  const ratios: Ratio[] = [];
  if (!mock || !proxy) return ratios;
  const roundCount = Math.min(...mode.targets.map((t) => Math.min(t.loaded.rounds.length, t.single.rounds.length)));
  const perRound = (f: (round: number) => number) => Array.from({ length: roundCount }, (_, i) => f(i));
  const loadedRps = (t: TargetResult, i: number) => t.loaded.rounds[i].requestsPerSecond;
  const loadedCpu = (t: TargetResult, i: number) => t.loaded.rounds[i].cpuMsPerRequest ?? Number.NaN;
  const addedP50 = (t: TargetResult, m: (x: TargetResult) => LoadResult[], i: number) => m(t)[i].p50Ms - m(mock)[i].p50Ms;
  const addedPerRequest = (t: TargetResult, i: number) => perRequestMs(t.single.rounds[i]) - perRequestMs(mock.single.rounds[i]);
  const ratio = (what: string, rounds: number[], goal: string, holds: ((v: number) => boolean) | null): Ratio => {
    const value = median(rounds);
    return { what, value, rounds, goal, holds: holds ? holds(value) : null };
  };
  const loaded = (x: TargetResult) => x.loaded.rounds;
  const single = (x: TargetResult) => x.single.rounds;
  if (tollgate) {
    ratios.push(ratio(`Tollgate ÷ undici proxy, req/s at ${connections} connections`, perRound((i) => loadedRps(tollgate, i) / loadedRps(proxy, i)), `≥ ${minRpsRatio}`, (v) => v >= minRpsRatio));
    ratios.push(
      ratio(`Tollgate added p50 ÷ proxy added p50, ${connections} connections`, perRound((i) => addedP50(tollgate, loaded, i) / addedP50(proxy, loaded, i)), `≤ ${maxAddedP50Ratio}×`, (v) => v <= maxAddedP50Ratio),
    );
    ratios.push(ratio('Tollgate added p50 ÷ proxy added p50, 1 connection', perRound((i) => addedP50(tollgate, single, i) / addedP50(proxy, single, i)), `≤ ${maxAddedP50Ratio}×`, (v) => v <= maxAddedP50Ratio));
    ratios.push(
      ratio(`Tollgate CPU per request ÷ proxy's, ${connections} connections`, perRound((i) => loadedCpu(tollgate, i) / loadedCpu(proxy, i)), '(reference)', null),
    );
    ratios.push(ratio('Tollgate added per-request time ÷ proxy added per-request time, 1 connection', perRound((i) => addedPerRequest(tollgate, i) / addedPerRequest(proxy, i)), '(reference)', null));
  }
  if (portkey) {
    ratios.push(ratio(`Portkey ÷ undici proxy, req/s at ${connections} connections`, perRound((i) => loadedRps(portkey, i) / loadedRps(proxy, i)), '(reference: ~0.1 in baselines.md)', null));
    ratios.push(ratio('Portkey added p50 ÷ proxy added p50, 1 connection', perRound((i) => addedP50(portkey, single, i) / addedP50(proxy, single, i)), '(reference)', null));
  }
  return ratios;
}

function median(values: number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const fixed2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '—');

export function ratiosTable(ratios: Ratio[]): string {
  const verdict = (r: Ratio) => (r.holds === null ? '' : r.holds ? 'holds' : '**missed**');
  return [
    '| ratio (same run) | median of rounds | each round | target | verdict |',
    '| --- | ---: | ---: | --- | --- |',
    ...ratios.map((r) => `| ${r.what} | ${fixed2(r.value)} | ${r.rounds.map(fixed2).join(', ')} | ${r.goal} | ${verdict(r)} |`),
  ].join('\n');
}

export function billingMarkdown(check: BillingCheck, answered200: number, upstreamCalls: number): string {
  const list = (o: Record<string, number>) =>
    Object.entries(o)
      .map(([k, v]) => `${k} ${int(v)}`)
      .join(', ') || 'none';
  return [
    `- Tollgate answered ${int(answered200)} requests with 200; the ledger holds ${int(check.usageTransfers)} usage transfers for the bench workspace (${check.usageTransfers === answered200 ? 'they match' : '**they differ**'}); the mock upstream saw ${int(upstreamCalls)} calls from Tollgate.`,
    `- Usage records by status: ${list(check.usageRecordsByStatus)}; holds by kind and status: ${list(check.holdsByStatus)}.`,
    `- Credits consumed (admin balance): ${check.consumedCredits}.`,
    `- \`tollgate ledger verify\`: ${check.ledgerVerify.ok ? 'passed' : '**failed**'} (${check.ledgerVerify.output.split('\n').slice(-1)[0]}).`,
  ].join('\n');
}

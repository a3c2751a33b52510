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
  value: number;
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

export function okCountOf(t: TargetResult): number {
  return [...t.loaded.runs, ...t.single.runs].reduce((sum, run) => sum + run.ok, 0);
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
    `| target | ${connections} conn: req/s | p50 / p99 ms | added p50 / p99 ms | 1 conn: req/s | per request ms (added) | p50 ms (added) | failed |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
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

/** Tollgate against the undici proxy, both measured against the same mock in the same run. */
export function ratiosOf(mode: ModeResult, connections: number): Ratio[] {
  const by = (k: TargetKey) => mode.targets.find((t) => t.key === k);
  const mock = by('mock');
  const proxy = by('proxy');
  const tollgate = by('tollgate');
  const portkey = by('portkey');
  const ratios: Ratio[] = [];
  if (!mock || !proxy) return ratios;
  const addedP50 = (t: TargetResult, m: (x: TargetResult) => LoadResult) => m(t).p50Ms - m(mock).p50Ms;
  const addedPerRequest = (t: TargetResult) => perRequestMs(t.single.main) - perRequestMs(mock.single.main);
  if (tollgate) {
    const rps = tollgate.loaded.main.requestsPerSecond / proxy.loaded.main.requestsPerSecond;
    ratios.push({ what: `Tollgate ÷ undici proxy, req/s at ${connections} connections`, value: rps, goal: `≥ ${minRpsRatio}`, holds: rps >= minRpsRatio });
    const loadedP50 = addedP50(tollgate, (x) => x.loaded.main) / addedP50(proxy, (x) => x.loaded.main);
    ratios.push({ what: `Tollgate added p50 ÷ proxy added p50, ${connections} connections`, value: loadedP50, goal: `≤ ${maxAddedP50Ratio}×`, holds: loadedP50 <= maxAddedP50Ratio });
    const singleP50 = addedP50(tollgate, (x) => x.single.main) / addedP50(proxy, (x) => x.single.main);
    ratios.push({ what: 'Tollgate added p50 ÷ proxy added p50, 1 connection', value: singleP50, goal: `≤ ${maxAddedP50Ratio}×`, holds: singleP50 <= maxAddedP50Ratio });
    const perRequest = addedPerRequest(tollgate) / addedPerRequest(proxy);
    ratios.push({ what: 'Tollgate added per-request time ÷ proxy added per-request time, 1 connection', value: perRequest, goal: '(reference)', holds: null });
  }
  if (portkey) {
    ratios.push({
      what: `Portkey ÷ undici proxy, req/s at ${connections} connections`,
      value: portkey.loaded.main.requestsPerSecond / proxy.loaded.main.requestsPerSecond,
      goal: '(reference: ~0.1 in baselines.md)',
      holds: null,
    });
    ratios.push({ what: 'Portkey added p50 ÷ proxy added p50, 1 connection', value: addedP50(portkey, (x) => x.single.main) / addedP50(proxy, (x) => x.single.main), goal: '(reference)', holds: null });
  }
  return ratios;
}

export function ratiosTable(ratios: Ratio[]): string {
  const verdict = (r: Ratio) => (r.holds === null ? '' : r.holds ? 'holds' : '**missed**');
  return [
    '| ratio (same run) | value | target | verdict |',
    '| --- | ---: | --- | --- |',
    ...ratios.map((r) => `| ${r.what} | ${Number.isFinite(r.value) ? r.value.toFixed(2) : '—'} | ${r.goal} | ${verdict(r)} |`),
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

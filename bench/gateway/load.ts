// Load runs with autocannon, in the bench process. A run lasts a given time and then drains: each
// connection stops sending and ends once its request in flight is answered. Nothing is cut off
// mid-flight, so a gateway's billed count can be compared exactly with the answers counted here.
// Latencies are kept at full precision (autocannon's own histogram rounds to whole milliseconds).
import autocannon, { type Client } from 'autocannon';

export interface LoadRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
}

export interface LoadResult {
  connections: number;
  /** Responses received, whatever their status. */
  answered: number;
  /** 2xx responses: the requests that count. */
  ok: number;
  statusCounts: Record<string, number>;
  errors: number;
  timeouts: number;
  seconds: number;
  /** 2xx responses per second. */
  requestsPerSecond: number;
  /** Latency of the 2xx responses. */
  p50Ms: number;
  p99Ms: number;
  /** Wall-clock bounds of the run (Date.now()). */
  startedAtMs: number;
  endedAtMs: number;
  /** Latency of each 2xx response, ascending. */
  latenciesMs: number[];
  /** CPU the server's process used per 2xx response during the run, when known. */
  cpuMsPerRequest: number | null;
}

export interface Measurement {
  /** The counted runs of every round pooled: their requests over their summed time, their latencies together. */
  main: LoadResult;
  /** The counted run of each round, in order. */
  rounds: LoadResult[];
  /** Every run against the target (warm-ups and counted), for the totals. */
  runs: LoadResult[];
}

const requestTimeoutSeconds = 30;
/** Autocannon notices the end of a run only at its next sample: sample often, so runs end promptly. */
const sampleIntervalMs = 100;
/**
 * Autocannon's own deadline, long after the drain should have ended: reached only if the drain
 * failed, and then requests are cut mid-flight (the billing check would say so).
 */
const drainSafetySeconds = 60;

export function runLoad(request: LoadRequest, connections: number, seconds: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const latenciesMs: number[] = [];
    const statusCounts: Record<string, number> = {};
    const clients: Client[] = [];
    let answered = 0;
    const startedAtMs = Date.now();
    const startedMs = performance.now();
    let lastAnswerMs = startedMs;
    // The drain: a client whose quota is what it has already sent closes after that answer.
    const drain = setTimeout(() => {
      for (const client of clients) client.responseMax = Math.max(client.reqsMade, 1);
    }, seconds * 1000);
    const instance = autocannon(
      {
        url: request.url,
        method: 'POST',
        headers: request.headers,
        body: request.body,
        connections,
        duration: seconds + drainSafetySeconds,
        timeout: requestTimeoutSeconds,
        sampleInt: sampleIntervalMs,
        setupClient: (client) => clients.push(client),
      },
      (err, result) => {
        clearTimeout(drain);
        if (err) {
          reject(err);
          return;
        }
        latenciesMs.sort((a, b) => a - b);
        const elapsedSeconds = (lastAnswerMs - startedMs) / 1000;
        resolve({
          connections,
          answered,
          ok: latenciesMs.length,
          statusCounts,
          errors: result.errors,
          timeouts: result.timeouts,
          seconds: elapsedSeconds,
          requestsPerSecond: elapsedSeconds > 0 ? latenciesMs.length / elapsedSeconds : 0,
          p50Ms: percentile(latenciesMs, 50),
          p99Ms: percentile(latenciesMs, 99),
          startedAtMs,
          endedAtMs: startedAtMs + (lastAnswerMs - startedMs),
          latenciesMs,
          cpuMsPerRequest: null,
        });
      },
    );
    instance.on('response', (_client, statusCode, _bytes, responseTimeMs) => {
      answered += 1;
      lastAnswerMs = performance.now();
      statusCounts[statusCode] = (statusCounts[statusCode] ?? 0) + 1;
      if (statusCode >= 200 && statusCode < 300) latenciesMs.push(responseTimeMs);
    });
  });
}

/**
 * An optional warm-up of `warmupSeconds`, then the run that counts; all the runs, the counted one
 * last. `cpuSeconds` reads the server's CPU time, around the counted run.
 */
export async function measure(request: LoadRequest, connections: number, seconds: number, warmupSeconds: number, cpuSeconds: () => number | null): Promise<LoadResult[]> {
  const runs: LoadResult[] = [];
  if (warmupSeconds > 0) runs.push(await runLoad(request, connections, warmupSeconds));
  const cpuBefore = cpuSeconds();
  const counted = await runLoad(request, connections, seconds);
  const cpuAfter = cpuSeconds();
  if (cpuBefore !== null && cpuAfter !== null && counted.ok > 0) counted.cpuMsPerRequest = ((cpuAfter - cpuBefore) * 1000) / counted.ok;
  runs.push(counted);
  return runs;
}

/** A target's rounds as one measurement: each round's runs, its counted run last. */
export function measurementOf(roundsRuns: LoadResult[][]): Measurement {
  const rounds = roundsRuns.map((runs) => runs[runs.length - 1]);
  return { main: pooled(rounds), rounds, runs: roundsRuns.flat() };
}

function pooled(results: LoadResult[]): LoadResult {
  const latenciesMs = results.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
  const seconds = results.reduce((sum, r) => sum + r.seconds, 0);
  const statusCounts: Record<string, number> = {};
  for (const r of results) for (const [status, n] of Object.entries(r.statusCounts)) statusCounts[status] = (statusCounts[status] ?? 0) + n;
  return {
    connections: results[0].connections,
    answered: results.reduce((sum, r) => sum + r.answered, 0),
    ok: latenciesMs.length,
    statusCounts,
    errors: results.reduce((sum, r) => sum + r.errors, 0),
    timeouts: results.reduce((sum, r) => sum + r.timeouts, 0),
    seconds,
    requestsPerSecond: seconds > 0 ? latenciesMs.length / seconds : 0,
    p50Ms: percentile(latenciesMs, 50),
    p99Ms: percentile(latenciesMs, 99),
    startedAtMs: results[0].startedAtMs,
    endedAtMs: results[results.length - 1].endedAtMs,
    latenciesMs,
    cpuMsPerRequest: results.every((r) => r.cpuMsPerRequest !== null)
      ? results.reduce((sum, r) => sum + r.cpuMsPerRequest! * r.ok, 0) / Math.max(latenciesMs.length, 1)
      : null,
  };
}

/** Nearest-rank percentile of an ascending array. */
function percentile(sortedAscending: number[], p: number): number {
  if (sortedAscending.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sortedAscending.length);
  return sortedAscending[Math.min(sortedAscending.length, Math.max(rank, 1)) - 1];
}

/** A positive number from the environment (a BENCH_* setting), or `fallback` when unset. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number (got '${raw}')`);
  return value;
}

/** The chat completion every run sends: a short prompt, 16 output tokens; streamed with usage when asked. */
export function chatBody(model: string, streamed: boolean): string {
  const body: Record<string, unknown> = { model, messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 16 };
  if (streamed) Object.assign(body, { stream: true, stream_options: { include_usage: true } });
  return JSON.stringify(body);
}

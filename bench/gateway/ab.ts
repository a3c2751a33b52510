// A/B runs: two Tollgate processes side by side, each with its own environment, loaded in turn
// (A then B, then B then A, ...) against one mock upstream, so a drift in the shared machine's
// load falls on both alike. Prints each round and the medians of the rounds' B ÷ A ratios: CPU per
// request and req/s at BENCH_CONNECTIONS, and the p50 at one connection. This is how the tuning
// in src/ledger/committer.ts (gatherTurns) and the V8 flag in package.json were chosen.
//
//   AB_A='{"TOLLGATE_X":"1"}' AB_B='{"NODE_OPTIONS":"--max-semi-space-size=64"}' node --import tsx bench/gateway/ab.ts
//
// AB_A / AB_B: JSON objects of environment variables for each process (default: none).
// AB_A_DIR / AB_B_DIR: the checkout each side runs (default: this one), to compare two commits:
//   git worktree add /tmp/tollgate-base HEAD~1 && ln -s "$PWD/node_modules" /tmp/tollgate-base/
//   AB_A_DIR=/tmp/tollgate-base node --import tsx bench/gateway/ab.ts
// BENCH_ROUNDS (6), BENCH_SECONDS (4), BENCH_CONNECTIONS (50), BENCH_STREAM=1 for streamed calls,
// AB_PROFILE_B=DIR to run B under `node --cpu-prof` (profile written to DIR when it stops).
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chatBody, envNumber, measure, type LoadRequest } from './load.ts';
import { cpuSecondsOf, freePorts, startChild, stopAll, waitForHttp } from './processes.ts';
import { benchModel, configureTollgate, startTollgate, type TollgateRun } from './tollgate.ts';

const benchDir = import.meta.dirname;
const repoRoot = path.resolve(benchDir, '../..');
const rounds = envNumber('BENCH_ROUNDS', 6);
const seconds = envNumber('BENCH_SECONDS', 4);
const connections = envNumber('BENCH_CONNECTIONS', 50);
const streamed = process.env.BENCH_STREAM === '1';


function envOf(name: string): Record<string, string> {
  const raw = process.env[name];
  if (!raw) return {};
  const parsed = JSON.parse(raw) as unknown;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || Object.values(parsed).some((v) => typeof v !== 'string')) {
    throw new Error(`${name} must be a JSON object of strings, e.g. '{"NODE_OPTIONS":"--max-semi-space-size=64"}'`);
  }
  return parsed as Record<string, string>;
}

interface Side {
  name: 'A' | 'B';
  run: TollgateRun;
  dataDir: string;
  request: LoadRequest;
  cpu: number[];
  rps: number[];
  singleP50: number[];
}

async function startSide(name: Side['name'], extraEnv: Record<string, string>, port: number, mockUrl: string, profileDir: string | null): Promise<Side> {
  const checkout = path.resolve(process.env[`AB_${name}_DIR`] || repoRoot);
  const saved = { ...process.env };
  // startTollgate builds the child's environment from this process's.
  Object.assign(process.env, extraEnv);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `tollgate-ab-${name}-`));
  let run: TollgateRun;
  try {
    run = await startTollgate(checkout, dataDir, port, profileDir);
  } finally {
    process.env = saved;
  }
  const setup = await configureTollgate(run.url, mockUrl);
  const request = { url: `${run.url}/v1/chat/completions`, headers: { 'content-type': 'application/json', authorization: `Bearer ${setup.apiKey}` }, body: chatBody(benchModel, streamed) };
  if (checkout !== repoRoot) console.log(`${name} runs ${checkout}`);
  return { name, run, dataDir, request, cpu: [], rps: [], singleP50: [] };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const [mockPort, portA, portB] = await freePorts(3);
  const mockUrl = `http://127.0.0.1:${mockPort}`;
  const mock = startChild('mock upstream', process.execPath, ['--import', 'tsx', path.join(benchDir, 'mock-upstream.ts')], { ...process.env, HOST: '127.0.0.1', PORT: String(mockPort) }, repoRoot);
  await waitForHttp(mock, `${mockUrl}/_stats`, 60_000);
  const a = await startSide('A', envOf('AB_A'), portA, mockUrl, null);
  const b = await startSide('B', envOf('AB_B'), portB, mockUrl, process.env.AB_PROFILE_B || null);
  try {
    for (let round = 0; round < rounds; round++) {
      for (const side of round % 2 === 0 ? [a, b] : [b, a]) {
        const runs = await measure(side.request, connections, seconds, round === 0 ? 1.5 : 0.3, () => cpuSecondsOf(side.run.child));
        const counted = runs[runs.length - 1];
        const [single] = await measure(side.request, 1, 1.5, 0, () => null);
        const failed = [...runs, single].reduce((n, r) => n + (r.answered - r.ok) + r.errors, 0);
        if (failed > 0) throw new Error(`${side.name}: ${failed} requests failed`);
        side.cpu.push(counted.cpuMsPerRequest ?? Number.NaN);
        side.rps.push(counted.requestsPerSecond);
        side.singleP50.push(single.p50Ms);
        console.log(`round ${round + 1} ${side.name}: ${counted.requestsPerSecond.toFixed(0)} req/s, ${side.cpu.at(-1)!.toFixed(3)} ms CPU per request, p50 at 1 connection ${single.p50Ms.toFixed(3)} ms`);
      }
    }
    for (const side of [a, b]) {
      console.log(`${side.name}: median ${median(side.rps).toFixed(0)} req/s, ${median(side.cpu).toFixed(3)} ms CPU per request, p50 at 1 connection ${median(side.singleP50).toFixed(3)} ms`);
    }
    for (const [label, of] of [
      ['CPU per request', (s: Side) => s.cpu],
      ['req/s', (s: Side) => s.rps],
      ['p50 at 1 connection', (s: Side) => s.singleP50],
    ] as const) {
      const ratios = of(a).map((x, i) => of(b)[i] / x);
      console.log(`B ÷ A, ${label}: median ${median(ratios).toFixed(3)} (rounds ${ratios.map((r) => r.toFixed(3)).join(', ')})`);
    }
  } finally {
    await stopAll();
    await Promise.all([a, b].map((s) => rm(s.dataDir, { recursive: true, force: true })));
  }
}

main().catch(async (err) => {
  console.error(err);
  await stopAll();
  process.exit(1);
});

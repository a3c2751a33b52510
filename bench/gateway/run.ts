// The gateway benchmark (`npm run bench:gateway`): Tollgate with billing on, beside the direct mock
// upstream, a minimal undici reverse proxy (the Node ceiling) and Portkey's open-source gateway,
// all routed to the same mock in one run. Each server is its own process; autocannon runs here.
// Prints a Markdown report, writes it to bench/gateway/results/latest.md, and exits 1 when a
// figure cannot be trusted (failed requests, billing that does not match, a ledger that fails).
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chatBody, envNumber, measure, measurementOf, type LoadRequest, type LoadResult } from './load.ts';
import { cpuSecondsOf, freePorts, startChild, stopAll, stopChild, waitForHttp, type Child } from './processes.ts';
import { benchModel, checkBilling, configureTollgate, consumedCredits, startTollgate, type BillingCheck } from './tollgate.ts';
import { profileMarkdown, summarizeProfile, type ProfileWindow } from './cpu-profile.ts';
import {
  billingMarkdown,
  failuresOf,
  maxFailedShare,
  modeTable,
  ratiosOf,
  ratiosTable,
  runsLine,
  type ModeResult,
  type TargetKey,
  type TargetResult,
} from './report.ts';

const benchDir = import.meta.dirname;
const repoRoot = path.resolve(benchDir, '../..');
const resultsDir = path.join(benchDir, 'results');

const rounds = Math.max(1, Math.round(envNumber('BENCH_ROUNDS', 5)));
const benchSeconds = envNumber('BENCH_SECONDS', 4);
const connections = envNumber('BENCH_CONNECTIONS', 50);
const singleSeconds = envNumber('BENCH_SINGLE_SECONDS', 2);
const warmupSeconds = envNumber('BENCH_WARMUP_SECONDS', 1.5);
const streamedToo = process.env.BENCH_STREAM !== '0';
const cpuProfiling = process.env.BENCH_CPU_PROF === '1';
const wantedTargets = new Set((process.env.BENCH_TARGETS ?? 'mock,proxy,portkey,tollgate').split(',').map((t) => t.trim()));
wantedTargets.add('mock');
const readyTimeoutMs = 60_000;
const expectedReply = 'Hello! How can I help you today?';

interface Target {
  key: TargetKey;
  label: string;
  url: string;
  headers: Record<string, string>;
  model: string;
  /** Portkey 1.15.2 answers 500 to every streamed call on Node 20 (see README). */
  streams: boolean;
  /** The server's process, whose last lines explain a wrong answer. */
  child: Child | null;
}


function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}


/** One call before the load: the target must answer the mock's reply, or nothing it does counts. */
async function checkAnswer(target: Target, request: LoadRequest, streamed: boolean): Promise<void> {
  const res = await fetch(request.url, { method: 'POST', headers: request.headers, body: request.body });
  const text = await res.text();
  const fail = (why: string) =>
    new Error(`${target.label} gave a wrong answer (${why}): ${res.status} ${text.slice(0, 500)}${target.child ? `\nits last output:\n${target.child.tail.join('\n')}` : ''}`);
  if (res.status !== 200) throw fail('status');
  if (streamed) {
    if (!text.includes('"content":"Hello"') || !text.trimEnd().endsWith('data: [DONE]') || !text.includes('"completion_tokens":9')) throw fail('stream');
    return;
  }
  const body = JSON.parse(text) as { choices?: { message?: { content?: string } }[] };
  if (body.choices?.[0]?.message?.content !== expectedReply) throw fail('body');
}

async function mockCalls(mockUrl: string): Promise<number> {
  const res = await fetch(`${mockUrl}/_stats`);
  return ((await res.json()) as { chatCompletions: number }).chatCompletions;
}

async function latestProfile(dir: string): Promise<string | null> {
  const files = (await readdir(dir).catch(() => [])).filter((f) => f.endsWith('.cpuprofile'));
  const sized = await Promise.all(files.map(async (f) => ({ file: path.join(dir, f), size: (await stat(path.join(dir, f))).size })));
  // The main thread's profile is the big one; tsx's loader thread writes a small one beside it.
  return sized.sort((a, b) => b.size - a.size)[0]?.file ?? null;
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const loadAtStart = os.loadavg();
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'tollgate-bench-'));
  await mkdir(resultsDir, { recursive: true });
  const cpuProfileDir = cpuProfiling ? path.join(resultsDir, `cpu-${startedAt.toISOString().replace(/[:.]/g, '-')}`) : null;
  try {
    const [mockPort, proxyPort, portkeyPort, tollgatePort] = await freePorts(4);
    const mockUrl = `http://127.0.0.1:${mockPort}`;
    const nodeTs = (file: string) => ['--import', 'tsx', path.join(benchDir, file)];
    const childEnv = (extra: Record<string, string>) => ({ ...process.env, HOST: '127.0.0.1', ...extra });

    log(`starting ${[...wantedTargets].join(', ')}`);
    const mock = startChild('mock upstream', process.execPath, nodeTs('mock-upstream.ts'), childEnv({ PORT: String(mockPort) }), repoRoot);
    const starting: Promise<unknown>[] = [waitForHttp(mock, `${mockUrl}/_stats`, readyTimeoutMs)];
    let proxy: Child | null = null;
    let portkey: Child | null = null;
    if (wantedTargets.has('proxy')) {
      proxy = startChild('undici proxy', process.execPath, nodeTs('undici-proxy.ts'), childEnv({ PORT: String(proxyPort), UPSTREAM_URL: mockUrl }), repoRoot);
      starting.push(waitForHttp(proxy, `http://127.0.0.1:${proxyPort}/_stats`, readyTimeoutMs));
    }
    if (wantedTargets.has('portkey')) {
      const portkeyStart = path.join(repoRoot, 'node_modules/@portkey-ai/gateway/build/start-server.js');
      portkey = startChild('portkey', process.execPath, [portkeyStart, `--port=${portkeyPort}`, '--headless'], { ...process.env }, repoRoot);
      starting.push(waitForHttp(portkey, `http://127.0.0.1:${portkeyPort}/`, readyTimeoutMs));
    }
    const tollgateStarting = wantedTargets.has('tollgate') ? startTollgate(repoRoot, workDir, tollgatePort, cpuProfileDir) : Promise.resolve(null);
    const [tollgate] = await Promise.all([tollgateStarting, ...starting]);
    const setup = tollgate ? await configureTollgate(tollgate.url, mockUrl) : null;

    const targets: Target[] = [
      { key: 'mock', label: 'mock upstream directly', url: `${mockUrl}/v1/chat/completions`, headers: {}, model: 'gpt-4o-mini', streams: true, child: mock },
      { key: 'proxy', label: 'minimal undici proxy (Node ceiling)', url: `http://127.0.0.1:${proxyPort}/v1/chat/completions`, headers: {}, model: 'gpt-4o-mini', streams: true, child: proxy },
      {
        key: 'portkey',
        label: 'Portkey gateway 1.15.2',
        url: `http://127.0.0.1:${portkeyPort}/v1/chat/completions`,
        headers: { authorization: 'Bearer sk-bench-0000', 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${mockUrl}/v1` },
        model: 'gpt-4o-mini',
        streams: false,
        child: portkey,
      },
      {
        key: 'tollgate',
        label: 'Tollgate, billing on',
        url: `http://127.0.0.1:${tollgatePort}/v1/chat/completions`,
        headers: { authorization: `Bearer ${setup?.apiKey ?? ''}` },
        model: benchModel,
        streams: true,
        child: tollgate?.child ?? null,
      },
    ].filter((t) => wantedTargets.has(t.key)) as Target[];

    const modes: { title: string; streamed: boolean }[] = [{ title: 'Non-streamed chat completion', streamed: false }];
    if (streamedToo) modes.push({ title: 'Streamed chat completion (`stream: true`, `include_usage`)', streamed: true });
    const results: ModeResult[] = [];
    let tollgateOk = 0;
    let tollgateUpstreamCalls = 0;
    /** The profile summarised is of Tollgate's first counted run under load, warm-up and start-up left out. */
    let profileWindow: ProfileWindow | null = null;
    for (const mode of modes) {
      const modeTargets = targets.filter((t) => t.streams || !mode.streamed);
      const runsOf = new Map(modeTargets.map((t) => [t.key, { loaded: [] as LoadResult[][], single: [] as LoadResult[][] }]));
      for (let round = 0; round < rounds; round++) {
        // Each round measures every target once, starting one further along, so a drift in the
        // machine's load falls on all of them alike instead of on whichever ran last.
        const order = modeTargets.map((_, i) => modeTargets[(i + round) % modeTargets.length]);
        for (const target of order) {
          const request: LoadRequest = { url: target.url, headers: { 'content-type': 'application/json', ...target.headers }, body: chatBody(target.model, mode.streamed) };
          const upstreamBefore = target.key === 'tollgate' ? await mockCalls(mockUrl) : 0;
          if (round === 0) await checkAnswer(target, request, mode.streamed);
          const roundName = `round ${round + 1}/${rounds}`;
          log(`${mode.streamed ? 'streamed' : 'non-streamed'}, ${roundName}: ${target.label}: ${connections} connections, ~${benchSeconds} s`);
          const cpu = () => (target.child ? cpuSecondsOf(target.child) : null);
          const loaded = await measure(request, connections, benchSeconds, round === 0 ? warmupSeconds : 0, cpu);
          const counted = loaded[loaded.length - 1];
          log(`  ${Math.round(counted.requestsPerSecond)} req/s, p50 ${counted.p50Ms.toFixed(2)} ms; now 1 connection, ~${singleSeconds} s`);
          const single = await measure(request, 1, singleSeconds, 0, cpu);
          log(`  ${Math.round(single[0].requestsPerSecond)} req/s, p50 ${single[0].p50Ms.toFixed(3)} ms`);
          runsOf.get(target.key)!.loaded.push(loaded);
          runsOf.get(target.key)!.single.push(single);
          if (target.key === 'tollgate' && tollgate) {
            profileWindow ??= { fromMs: counted.startedAtMs - tollgate.child.startedAtMs, toMs: counted.endedAtMs - tollgate.child.startedAtMs };
            tollgateOk += [...loaded, ...single].reduce((sum, run) => sum + run.ok, 0) + (round === 0 ? 1 : 0);
            tollgateUpstreamCalls += (await mockCalls(mockUrl)) - upstreamBefore;
          }
        }
      }
      const measured: TargetResult[] = modeTargets.map((t) => ({
        key: t.key,
        label: t.label,
        loaded: measurementOf(runsOf.get(t.key)!.loaded),
        single: measurementOf(runsOf.get(t.key)!.single),
      }));
      results.push({ title: mode.title, targets: measured });
    }

    let billing: BillingCheck | null = null;
    let tollgateExit: number | null = 0;
    if (tollgate && setup) {
      const consumed = await consumedCredits(tollgate.url, setup.workspaceId);
      log('stopping Tollgate and checking its ledger');
      tollgateExit = await stopChild(tollgate.child);
      billing = await checkBilling(repoRoot, tollgate, setup.workspaceId, consumed);
    }
    const profile = cpuProfileDir ? await latestProfile(cpuProfileDir) : null;
    await stopAll();

    const problems: string[] = [];
    for (const mode of results) {
      for (const t of mode.targets) {
        const f = failuresOf(t);
        if (f.failed > maxFailedShare * f.total) {
          problems.push(`${mode.title}: ${t.label} failed ${f.failed} of ${f.total} requests (statuses ${JSON.stringify(f.statuses)}); more than ${maxFailedShare * 100}% makes its figures worthless`);
        }
      }
    }
    if (billing) {
      if (billing.usageTransfers !== tollgateOk) problems.push(`Tollgate answered ${tollgateOk} requests with 200 but billed ${billing.usageTransfers}`);
      if (tollgateUpstreamCalls !== tollgateOk) problems.push(`Tollgate answered ${tollgateOk} requests with 200 but called the upstream ${tollgateUpstreamCalls} times`);
      if (!(Number(billing.consumedCredits) > 0)) problems.push(`Tollgate's workspace shows ${billing.consumedCredits} credits consumed`);
      if (!billing.ledgerVerify.ok) problems.push(`tollgate ledger verify failed:\n${billing.ledgerVerify.output}`);
      if (tollgateExit !== 0) problems.push(`Tollgate exited with code ${tollgateExit} on SIGTERM`);
    }

    const cpus = os.cpus();
    const sections = [
      `# Gateway benchmark, ${startedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC`,
      '',
      `${cpus.length} × ${cpus[0]?.model.trim() ?? 'CPU'}, Node.js ${process.version}, load average ${loadAtStart.map((l) => l.toFixed(2)).join(' / ')} at the start and ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' / ')} at the end. Autocannon runs in the bench process; the mock, the proxy, Portkey and Tollgate each run in their own process, all on the same cores. ${rounds} rounds; in each, every target in turn (each round starting one target further along) gets ${connections} connections for ~${benchSeconds} s (after a ${warmupSeconds} s warm-up in the first round), then 1 connection for ~${singleSeconds} s. The tables pool the rounds; each ratio is the median of the rounds' own ratios, every round's value beside it. "Added" is the difference to the direct mock; latencies are of 2xx answers.`,
    ];
    for (const mode of results) {
      sections.push('', `## ${mode.title}`, '', modeTable(mode, connections), '', runsLine(mode));
      const ratios = ratiosOf(mode, connections);
      if (ratios.length > 0) sections.push('', ratiosTable(ratios));
    }
    if (billing) sections.push('', '## Billing check (Tollgate)', '', billingMarkdown(billing, tollgateOk, tollgateUpstreamCalls));
    if (cpuProfiling) {
      sections.push('', '## Where Tollgate spends its CPU', '');
      sections.push(profile ? profileMarkdown(summarizeProfile(profile, repoRoot, profileWindow), path.relative(repoRoot, profile)) : 'No .cpuprofile was written.');
      sections.push('', 'Profiled run: the V8 profiler slows Tollgate, so its figures above are lower than in a run without it.');
    }
    if (problems.length > 0) sections.push('', '## Problems: these figures cannot be trusted', '', ...problems.map((p) => `- ${p}`));
    const report = `${sections.join('\n')}\n`;
    await writeFile(path.join(resultsDir, 'latest.md'), report);
    process.stdout.write(report);
    log(`report written to ${path.relative(repoRoot, path.join(resultsDir, 'latest.md'))} after ${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s`);
    for (const p of problems) log(`PROBLEM: ${p}`);
    return problems.length > 0 ? 1 : 0;
  } finally {
    await stopAll();
    await rm(workDir, { recursive: true, force: true });
  }
}

process.once('SIGINT', () => {
  void stopAll().finally(() => process.exit(130));
});

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    await stopAll();
    process.stderr.write(`bench:gateway failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);

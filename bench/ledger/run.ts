// `npm run bench:ledger`: hold+settle pairs per second through the real Ledger on SQLite (a temp
// file) and on PostgreSQL (a fresh database on the local server, dropped afterwards), one caller at
// a time and with many concurrent callers (group commit), over many workspaces and over one hot
// workspace; and, in the same run, the local PostgreSQL's own `pgbench -b tpcb-like` as the ceiling
// for one durable debit per commit. Prints a Markdown table and writes it to results/latest.md.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import { openStore, type Engine, type Store } from '../../src/store/db.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { ensureOperatorAccounts } from '../../src/ledger/accounts.ts';
import { Ledger, type LedgerApi } from '../../src/ledger/ledger.ts';
import { LeasedLedger } from '../../src/ledger/leases.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import { createWorkspace } from '../../src/workspaces/workspaces.ts';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const serverUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

const measureMs = 6_000;
const warmUpMs = 1_000;
const manyWorkspaces = 100;
const concurrentCallers = 64;
const pgbenchScale = 10;
const pgbenchSeconds = 15;
const pgbenchClients = 8;
const pgbenchThreads = 2;
const commandTimeoutMs = 120_000;
const credit = 1_000_000n;
const holdMicros = credit;
const actualMicros = 400_000n;
/** Enough that no hold of the run is ever refused. */
const grantMicros = 10n ** 15n;

interface Scenario {
  name: string;
  callers: number;
  workspaces: number;
  /** The committer's batches in flight (its default when absent); PostgreSQL only. */
  lanes?: number;
  /** Admit against balance leases (src/ledger/leases.ts), as the gateway does, instead of one ledger hold per pair. */
  leases?: boolean;
}

const scenarios: Scenario[] = [
  { name: 'sequential: one pair at a time', callers: 1, workspaces: 1 },
  { name: `${concurrentCallers} callers, ${manyWorkspaces} workspaces`, callers: concurrentCallers, workspaces: manyWorkspaces },
  { name: `${concurrentCallers} callers, ${manyWorkspaces} workspaces, one batch in flight`, callers: concurrentCallers, workspaces: manyWorkspaces, lanes: 1 },
  { name: `${concurrentCallers} callers, 1 hot workspace`, callers: concurrentCallers, workspaces: 1 },
  { name: `${concurrentCallers} callers, ${manyWorkspaces} workspaces, balance leases`, callers: concurrentCallers, workspaces: manyWorkspaces, leases: true },
  { name: `${concurrentCallers} callers, 1 hot workspace, balance leases`, callers: concurrentCallers, workspaces: 1, leases: true },
];

interface Measured {
  engine: Engine;
  scenario: Scenario;
  pairsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  writesPerCommit: number;
  statementsPerPair: number;
}

/** Counts the statements Kysely ran (each result passes here; BEGIN and COMMIT do not). */
class StatementCounter implements KyselyPlugin {
  count = 0;
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    return args.node;
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    this.count++;
    return args.result;
  }
}

async function benchEngine(engine: Engine, url: string): Promise<Measured[]> {
  const store = await openStore(url);
  try {
    await migrateToLatest(store);
    await ensureOperatorAccounts(store.db, Date.now());
    const out: Measured[] = [];
    for (const scenario of scenarios) {
      if (scenario.lanes !== undefined && engine === 'sqlite') continue;
      const counter = new StatementCounter();
      const counted: Store = { ...store, db: store.db.withPlugin(counter) };
      const direct = new Ledger(counted, { maxConcurrentBatches: scenario.lanes });
      const ledger: LedgerApi = scenario.leases ? new LeasedLedger(direct) : direct;
      const workspaces: string[] = [];
      for (let i = 0; i < scenario.workspaces; i++) {
        const id = (await createWorkspace(store.db, { name: `bench ${i}` })).id;
        await ledger.grant({ workspaceId: id, amountMicros: grantMicros, source: 'purchase', idempotencyKey: `grant-${id}` });
        workspaces.push(id);
      }
      await pairsFor(ledger, workspaces, scenario.callers, warmUpMs);
      const before = { ...direct.writer.stats, statements: counter.count };
      const r = await pairsFor(ledger, workspaces, scenario.callers, measureMs);
      const s = direct.writer.stats;
      // Leases are handed back, so the ledger verifies with nothing left reserved.
      await ledger.close();
      const commits = s.batches - before.batches + (s.isolatedRuns - before.isolatedRuns);
      out.push({
        engine,
        scenario,
        pairsPerSec: r.pairs / (r.elapsedMs / 1000),
        p50Ms: r.p50Ms,
        p99Ms: r.p99Ms,
        writesPerCommit: (s.ops - before.ops) / Math.max(commits, 1),
        statementsPerPair: (counter.count - before.statements) / r.pairs,
      });
      console.error(`  ${engine} · ${scenario.name}: ${Math.round(out.at(-1)!.pairsPerSec)} pairs/s`);
    }
    const violations = await verifyLedger(store.db);
    if (violations.length > 0) throw new Error(`the ledger is inconsistent after the bench: ${JSON.stringify(violations.slice(0, 5))}`);
    return out;
  } finally {
    await store.close();
  }
}

/** `callers` loops of hold → settle on their workspaces until `durationMs` has passed. */
async function pairsFor(ledger: LedgerApi, workspaces: string[], callers: number, durationMs: number) {
  const latencies: number[] = [];
  const runId = randomBytes(4).toString('hex');
  const started = performance.now();
  const deadline = started + durationMs;
  let seq = 0;
  const caller = async (c: number) => {
    while (performance.now() < deadline) {
      const workspaceId = workspaces[(c + seq) % workspaces.length];
      const key = `${runId}-${seq++}`;
      const t0 = performance.now();
      const h = await ledger.hold({ workspaceId, amountMicros: holdMicros, timeoutMs: 60_000, idempotencyKey: key });
      if (!h.ok) throw new Error(`hold refused on ${workspaceId}`);
      await ledger.settle({ workspaceId, holdId: h.holdId, actualMicros, model: 'bench' });
      latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: callers }, (_, c) => caller(c)));
  const elapsedMs = performance.now() - started;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  return { pairs: latencies.length, elapsedMs, p50Ms: at(0.5), p99Ms: at(0.99) };
}

interface PgbenchResult {
  clients: number;
  tps: number;
  latencyMs: number;
}

async function pgbench(url: string): Promise<PgbenchResult[]> {
  const u = new URL(url);
  const env = { ...process.env, PGHOST: u.hostname, PGPORT: u.port || '5432', PGUSER: decodeURIComponent(u.username || 'postgres'), PGPASSWORD: decodeURIComponent(u.password) };
  return withScratchDatabase(url, 'tollgate_pgbench', async (db) => {
    await run('pgbench', ['-i', '-q', '-s', String(pgbenchScale), db], { env, timeout: commandTimeoutMs });
    const out: PgbenchResult[] = [];
    for (const clients of [pgbenchClients, 1]) {
      const threads = Math.min(clients, pgbenchThreads);
      const { stdout } = await run('pgbench', ['-b', 'tpcb-like', '-c', String(clients), '-j', String(threads), '-T', String(pgbenchSeconds), db], {
        env,
        timeout: commandTimeoutMs,
      });
      const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
      const latency = /latency average = ([\d.]+) ms/.exec(stdout);
      if (!tps || !latency) throw new Error(`unexpected pgbench output:\n${stdout}`);
      out.push({ clients, tps: Number(tps[1]), latencyMs: Number(latency[1]) });
      console.error(`  pgbench tpcb-like, ${clients} clients: ${Math.round(Number(tps[1]))} tps`);
    }
    return out;
  });
}

/** Creates a database with a unique name on the server, runs `body`, and drops it (also on failure). */
async function withScratchDatabase<T>(url: string, prefix: string, body: (name: string, url: string) => Promise<T>): Promise<T> {
  const name = `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const dbUrl = new URL(url);
  dbUrl.pathname = `/${name}`;
  try {
    return await body(name, dbUrl.toString());
  } finally {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      // Closed pools' connections may still be ending: let them go before forcing the rest out.
      for (let i = 0; i < 200; i++) {
        const r = await c.query('select count(*)::int as n from pg_stat_activity where datname = $1', [name]);
        if (r.rows[0].n === 0) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await c.query(`drop database if exists ${name} with (force)`);
    } finally {
      await c.end();
    }
  }
}

async function postgresReachable(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    await c.end();
    return true;
  } catch {
    return false;
  }
}

function table(results: Measured[], bench: PgbenchResult[]): string {
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const ceiling = bench.find((b) => b.clients === pgbenchClients);
  const sequential = new Map(results.filter((r) => r.scenario.callers === 1).map((r) => [r.engine, r.pairsPerSec]));
  const lines = [
    `| engine | scenario | hold+settle pairs/s | pair p50 / p99 ms | writes per commit | statements per pair | × sequential | × pgbench ${pgbenchClients} clients |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of results) {
    const vsPgbench = r.engine === 'postgres' && ceiling ? `${(r.pairsPerSec / ceiling.tps).toFixed(2)}` : '—';
    lines.push(
      `| ${r.engine} | ${r.scenario.name} | ${fmt(r.pairsPerSec)} | ${r.p50Ms.toFixed(2)} / ${r.p99Ms.toFixed(2)} | ${r.writesPerCommit.toFixed(1)} | ${r.statementsPerPair.toFixed(1)} | ${(r.pairsPerSec / sequential.get(r.engine)!).toFixed(1)} | ${vsPgbench} |`,
    );
  }
  for (const b of bench) {
    lines.push(`| postgres | pgbench -b tpcb-like -s ${pgbenchScale}, ${b.clients} client${b.clients > 1 ? `s (-j ${pgbenchThreads})` : ''}, ${pgbenchSeconds} s | ${fmt(b.tps)} tps | ${b.latencyMs.toFixed(2)} avg | 1 | 5 | — | ${ceiling ? (b.tps / ceiling.tps).toFixed(2) : '—'} |`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const started = Date.now();
  const results: Measured[] = [];
  let bench: PgbenchResult[] = [];
  const notes: string[] = [];

  console.error('SQLite (temp file, WAL, synchronous=NORMAL)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-bench-'));
  try {
    results.push(...(await benchEngine('sqlite', `sqlite:${path.join(dir, 'ledger.db')}`)));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  if (await postgresReachable(serverUrl)) {
    console.error(`PostgreSQL (${new URL(serverUrl).host}, a fresh database)`);
    results.push(...(await withScratchDatabase(serverUrl, 'tollgate_bench', (_name, url) => benchEngine('postgres', url))));
    bench = await pgbench(serverUrl);
  } else {
    notes.push(`PostgreSQL at ${new URL(serverUrl).host} was not reachable: its rows are missing.`);
  }

  const when = new Date().toISOString();
  const report = [
    `# Ledger bench, ${when}`,
    '',
    `${os.cpus().length} cores, Node.js ${process.version}. Each Tollgate row: ${measureMs / 1000} s after ${warmUpMs / 1000} s of warm-up; a pair is`,
    `hold (1 credit) then settle (0.4 credit), awaited in turn by each caller. One pair is two ledger writes; with balance`,
    `leases (as the gateway runs) the hold is admitted in memory against the instance's lease and only the settlement is`,
    `written, set-based with the other settlements of its account in the same batch.`,
    `"writes per commit" is what the group committer put in each transaction; pgbench's tpcb-like`,
    `transaction is one debit per commit (3 UPDATEs, 1 SELECT, 1 INSERT).`,
    '',
    table(results, bench),
    '',
    ...notes,
    `Run took ${Math.round((Date.now() - started) / 1000)} s.`,
    '',
  ].join('\n');
  fs.mkdirSync(path.join(here, 'results'), { recursive: true });
  fs.writeFileSync(path.join(here, 'results', 'latest.md'), report);
  console.log(report);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});

// Tollgate as a user runs it: `npm start`'s command (`node --max-semi-space-size=32 bin/tollgate.mjs start`) on a fresh SQLite file, configured
// through its admin API to sell one model routed to the mock upstream; afterwards, the proof that
// billing really happened: usage transfers counted in the database, the ledger verified.
import path from 'node:path';
import Database from 'better-sqlite3';
import { runToEnd, startChild, waitForHttp, type Child } from './processes.ts';

export const benchMasterKey = 'tg-bench-master-key-0000000000';
export const benchModel = 'bench-model';
const readyTimeoutMs = 60_000;
/** Tollgate settings that would change what is measured when inherited from the caller's shell. */
const inheritedSettingsDropped = ['DATABASE_URL', 'REDIS_URL', 'TOLLGATE_SECRET_KEY', 'TOLLGATE_PREVIOUS_SECRET_KEYS', 'TOLLGATE_MASTER_KEY', 'DB_POOL_SIZE', 'PORT', 'HOST'];

export interface TollgateRun {
  child: Child;
  url: string;
  env: NodeJS.ProcessEnv;
  databaseFile: string;
}

export interface TollgateSetup {
  workspaceId: string;
  apiKey: string;
}

export interface BillingCheck {
  usageTransfers: number;
  usageMicros: bigint;
  usageRecordsByStatus: Record<string, number>;
  holdsByStatus: Record<string, number>;
  consumedCredits: string;
  ledgerVerify: { ok: boolean; output: string };
}

export function tollgateEnv(dataDir: string, port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of inheritedSettingsDropped) delete env[name];
  return {
    ...env,
    DATABASE_URL: `sqlite:${path.join(dataDir, 'bench.db')}`,
    PORT: String(port),
    HOST: '127.0.0.1',
    TOLLGATE_MASTER_KEY: benchMasterKey,
    TOLLGATE_DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
  };
}

/** The node flags `npm start` runs Tollgate with (package.json), so the bench measures what a user runs. */
export const startNodeFlags = ['--max-semi-space-size=32'];

export async function startTollgate(repoRoot: string, dataDir: string, port: number, cpuProfileDir: string | null): Promise<TollgateRun> {
  const env = tollgateEnv(dataDir, port);
  const profiling = cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfileDir}`] : [];
  const child = startChild('tollgate', process.execPath, [...startNodeFlags, ...profiling, 'bin/tollgate.mjs', 'start'], env, repoRoot);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(child, `${url}/healthz`, readyTimeoutMs);
  return { child, url, env, databaseFile: path.join(dataDir, 'bench.db') };
}

async function admin<T>(baseUrl: string, method: 'GET' | 'POST', route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${baseUrl}${route}`, {
    method,
    headers: { authorization: `Bearer ${benchMasterKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`Tollgate admin ${method} ${route} answered ${res.status}: ${text}`);
  return JSON.parse(text) as T;
}

/** Provider → model with a rate → workspace with credits → customer key, as an operator would. */
export async function configureTollgate(baseUrl: string, mockUrl: string): Promise<TollgateSetup> {
  const provider = await admin<{ id: string }>(baseUrl, 'POST', '/api/admin/providers', {
    name: 'mock',
    type: 'openai-compatible',
    baseUrl: `${mockUrl}/v1`,
    apiKey: 'sk-bench-0000',
  });
  await admin(baseUrl, 'POST', '/api/admin/models', {
    name: benchModel,
    workload: 'text',
    routes: [{ providerId: provider.id, upstreamModel: 'gpt-4o-mini' }],
    rates: { inputPer1M: '1', outputPer1M: '2' },
  });
  const workspace = await admin<{ id: string }>(baseUrl, 'POST', '/api/admin/workspaces', { name: 'bench' });
  await admin(baseUrl, 'POST', `/api/admin/workspaces/${workspace.id}/grants`, { credits: '100000000' });
  const key = await admin<{ key: string }>(baseUrl, 'POST', `/api/admin/workspaces/${workspace.id}/keys`, { name: 'bench' });
  return { workspaceId: workspace.id, apiKey: key.key };
}

export async function consumedCredits(baseUrl: string, workspaceId: string): Promise<string> {
  const balance = await admin<{ consumed: string }>(baseUrl, 'GET', `/api/admin/workspaces/${workspaceId}/balance`);
  return balance.consumed;
}

/** Run after the server has stopped: counts straight from the SQLite file, then `tollgate ledger verify`. */
export async function checkBilling(repoRoot: string, run: TollgateRun, workspaceId: string, consumed: string): Promise<BillingCheck> {
  const db = new Database(run.databaseFile, { readonly: true });
  try {
    db.defaultSafeIntegers(true);
    const usage = db
      .prepare<[string], { n: bigint; micros: bigint }>("select count(*) as n, coalesce(sum(amount_micros), 0) as micros from transfers where kind = 'usage' and workspace_id = ?")
      .get(workspaceId);
    const byStatus = (table: 'usage_records' | 'holds', label: string) =>
      Object.fromEntries(
        db
          .prepare<[string], { label: string; n: bigint }>(`select ${label} as label, count(*) as n from ${table} where workspace_id = ? group by label order by label`)
          .all(workspaceId)
          .map((r) => [r.label, Number(r.n)]),
      );
    const usageRecordsByStatus = byStatus('usage_records', 'status');
    // Calls admitted against a balance lease have no hold row of their own: the lease has one.
    const holdsByStatus = byStatus('holds', "kind || ' ' || status");
    const verify = await runToEnd(process.execPath, ['bin/tollgate.mjs', 'ledger', 'verify'], run.env, repoRoot);
    return {
      usageTransfers: Number(usage?.n ?? 0n),
      usageMicros: usage?.micros ?? 0n,
      usageRecordsByStatus,
      holdsByStatus,
      consumedCredits: consumed,
      ledgerVerify: { ok: verify.code === 0, output: verify.output.trim() },
    };
  } finally {
    db.close();
  }
}

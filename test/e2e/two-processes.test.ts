// Two real `tollgate start` processes on one database (PostgreSQL when TEST_DATABASE_URL is set,
// else one SQLite file) and one Redis, calls alternating between them:
// - RPM and TPM limits admit exactly what a single process would, where counters kept per process
//   would let each admit the full limit;
// - concurrent calls racing through both never spend more than the balance or a key's budget, and
//   the ledger stays exact.
// Runs when TEST_REDIS_URL is set; the processes write under a key prefix of their own
// (RATE_LIMIT_PREFIX), deleted afterwards.
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, pgUrl, type TestDatabase } from '../helpers/store.ts';
import { adminCall, testMasterKey } from '../helpers/server.ts';
import { openStore, type Store } from '../../src/store/db.ts';
import * as g from '../helpers/gateway.ts';
import { balanceOf } from '../../src/ledger/reads.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';

const redisUrl = process.env.TEST_REDIS_URL;
const binFile = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/tollgate.mjs');
const startTimeoutMs = 60_000;
const stopTimeoutMs = 15_000;

interface TollgateProcess {
  url: string;
  output(): string;
  /** SIGTERM, then the exit code of the clean shutdown. */
  stop(): Promise<number | null>;
}

/** Starts `tollgate start` as its own OS process and waits until it listens. */
async function startTollgate(env: Record<string, string>): Promise<TollgateProcess> {
  const child = spawn(process.execPath, [binFile, 'start'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tollgate did not start in ${startTimeoutMs} ms:\n${output}`)), startTimeoutMs);
    const listening = () => {
      const m = /Tollgate is running on (http:\/\/\S+)/.exec(output);
      if (!m) return;
      clearTimeout(timer);
      child.stdout.off('data', listening);
      resolve(m[1]);
    };
    child.stdout.on('data', listening);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`tollgate exited with ${code} before listening:\n${output}`));
    });
  });
  return {
    url,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

interface Outcome {
  via: 'a' | 'b';
  status: number;
  code: string | null;
  retryAfter: string | null;
  totalTokens: number | null;
}

describe.skipIf(!redisUrl)('rate limits shared through Redis by two Tollgate processes', () => {
  const prefix = `test:rl:${randomUUID()}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-processes-'));
  let database: TestDatabase;
  let store: Store;
  let redis: Redis;
  let a: TollgateProcess;
  let b: TollgateProcess;
  let model: string;
  const admin = () => ({ admin: adminCall(a.url) });

  beforeAll(async () => {
    database = await createTestDatabase(pgUrl ? 'postgres' : 'sqlite');
    const env = {
      PORT: '0',
      HOST: '127.0.0.1',
      DATABASE_URL: database.url,
      DB_POOL_SIZE: '4',
      REDIS_URL: redisUrl!,
      RATE_LIMIT_PREFIX: prefix,
      // Closed: a process that could not reach Redis would refuse with rate_limiter_unavailable, never admit uncounted.
      RATE_LIMIT_FAIL_OPEN: 'false',
      TOLLGATE_MASTER_KEY: testMasterKey,
      TOLLGATE_SECRET_KEY: randomBytes(32).toString('hex'),
      TOLLGATE_DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
    };
    // One after the other: the first migrates the database, and the second starts once the
    // catalog exists (each process reloads another's catalog changes only every 30 s).
    a = await startTollgate(env);
    const provider = await g.addProvider(admin(), { type: 'sandbox' });
    model = (await g.addModel(admin(), { providerId: provider.id, upstreamModel: 'sandbox-chat' })).name;
    b = await startTollgate(env);
    store = await openStore(database.url, { poolSize: 2 });
    redis = new Redis(redisUrl!);
  }, 2 * startTimeoutMs);

  afterAll(async () => {
    const codes = await Promise.all([a?.stop(), b?.stop()]);
    expect(codes, `${a?.output()}\n${b?.output()}`).toEqual([0, 0]);
    await store?.close();
    if (redis) {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      await redis.quit();
    }
    await database?.drop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }, 2 * stopTimeoutMs);

  /** A workspace with credits and one key with these limits, and an OpenAI client on each process. */
  const tenant = async (limits: Pick<g.KeySpec, 'rpm' | 'tpm'>) => {
    const workspaceId = await g.addWorkspace(admin(), '100');
    const key = await g.addKey(admin(), workspaceId, limits);
    const client = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: key.key, maxRetries: 0 });
    return { workspaceId, keyId: key.id, clients: { a: client(a.url), b: client(b.url) } };
  };

  const call = async (t: Awaited<ReturnType<typeof tenant>>, via: 'a' | 'b', n: number): Promise<Outcome> => {
    try {
      const r = await t.clients[via].chat.completions.create({ model, messages: [{ role: 'user', content: `Shared limit question ${n}.` }] });
      return { via, status: 200, code: null, retryAfter: null, totalTokens: r.usage!.total_tokens };
    } catch (err) {
      if (!(err instanceof APIError)) throw err;
      return { via, status: err.status ?? 0, code: err.code ?? null, retryAfter: err.headers?.get('retry-after') ?? null, totalTokens: null };
    }
  };
  const alternate = (i: number): 'a' | 'b' => (i % 2 === 0 ? 'a' : 'b');

  /**
   * Read straight from the database, after each process's answered calls have settled: a call is
   * answered before its settlement commits, and an admin read on a process waits for its settlements.
   */
  const settledDb = async () => {
    for (const p of [a, b]) expect((await adminCall(p.url)('GET', '/api/admin/settings')).status).toBe(200);
    return store.db;
  };
  const usageRecordsOf = async (keyId: string) => (await settledDb()).selectFrom('usage_records').select(['id', 'status', 'hold_id']).where('key_id', '=', keyId).execute();

  const expectRefusedByLimit = (refused: Outcome[]) => {
    for (const r of refused) {
      expect(r).toMatchObject({ status: 429, code: 'rate_limit_exceeded' });
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
    }
  };

  it('admits exactly rpm calls in sequence alternating between the processes, each of which alone would admit them all', async () => {
    const rpm = 4;
    const t = await tenant({ rpm });
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 2 * rpm; i++) outcomes.push(await call(t, alternate(i), i));

    expect(outcomes.map((o) => o.status)).toEqual([...Array(rpm).fill(200), ...Array(rpm).fill(429)]);
    // Each process admitted only rpm / 2, so its own count never reached the limit: the refusals
    // came from the count the other process added in Redis.
    expect(outcomes.filter((o) => o.status === 200 && o.via === 'a')).toHaveLength(rpm / 2);
    expect(outcomes.filter((o) => o.status === 200 && o.via === 'b')).toHaveLength(rpm / 2);
    expectRefusedByLimit(outcomes.slice(rpm));
    expect(await usageRecordsOf(t.keyId)).toHaveLength(rpm);
  });

  it('admits exactly rpm of many concurrent calls spread over both processes', async () => {
    const rpm = 10;
    const t = await tenant({ rpm });
    const outcomes = await Promise.all(Array.from({ length: 3 * rpm }, (_, i) => call(t, alternate(i), i)));

    const admitted = outcomes.filter((o) => o.status === 200);
    expect(admitted).toHaveLength(rpm);
    expectRefusedByLimit(outcomes.filter((o) => o.status !== 200));
    const records = await usageRecordsOf(t.keyId);
    expect(records).toHaveLength(rpm);
    expect(records.every((r) => r.status === 'ok')).toBe(true);
    // Each admitted call was held and settled once: one usage transfer per hold, one per record.
    const settled = await (await settledDb()).selectFrom('transfers').select('hold_id').where('workspace_id', '=', t.workspaceId).where('kind', '=', 'usage').execute();
    expect(new Set(settled.map((r) => r.hold_id))).toEqual(new Set((await usageRecordsOf(t.keyId)).map((r) => r.hold_id)));
    expect(settled).toHaveLength(rpm);
  });

  it("refuses once the tokens both processes recorded reach the key's tokens per minute", async () => {
    const probe = await tenant({});
    const perCall = (await call(probe, 'a', 0)).totalTokens!;
    expect(perCall).toBeGreaterThan(0);

    // Three calls fit under 2 × perCall + 1; a process counting only its own calls would admit the
    // fourth (b has recorded one call) and the fifth (a has recorded two).
    const t = await tenant({ tpm: 2 * perCall + 1 });
    /** The key's tokens in Redis (this minute's and, if the minute turned meanwhile, the last one's). */
    const recorded = async () => {
      const [c, p] = await redis.hmget(`${prefix}:{${t.keyId}}:tpm`, 'c', 'p');
      return Number(c ?? 0) + Number(p ?? 0);
    };
    const outcomes: Outcome[] = [];
    let expected = 0;
    for (let i = 0; i < 5; i++) {
      const o = await call(t, alternate(i), 0);
      outcomes.push(o);
      if (o.status !== 200) continue;
      expected += o.totalTokens!;
      // Recording follows the answer (never delays it): wait until it has reached Redis.
      await g.eventually(async () => (await recorded()) === expected, `${expected} tokens recorded`);
    }

    expect(outcomes.map((o) => o.status)).toEqual([200, 200, 200, 429, 429]);
    expect(outcomes.slice(0, 3).map((o) => o.totalTokens)).toEqual([perCall, perCall, perCall]);
    expectRefusedByLimit(outcomes.slice(3));
    // Input and output of every admitted call, recorded once, whichever process served it.
    expect(await recorded()).toBe(3 * perCall);
    expect(await usageRecordsOf(t.keyId)).toHaveLength(3);
  });
  describe('money across both processes', () => {
    /** Fires `n` calls at once, alternating processes; the charge of each 200 (from its header) and the error code of each refusal. */
    const burst = async (clients: Record<'a' | 'b', OpenAI>, n: number) =>
      Promise.all(
        Array.from({ length: n }, async (_, i) => {
          try {
            const r = await clients[alternate(i)].chat.completions.create({ model, messages: [{ role: 'user', content: 'Shared balance question.' }] }).withResponse();
            return { status: 200, code: null as string | null, charged: g.micros(r.response.headers.get('x-tollgate-credits-charged')!) };
          } catch (err) {
            if (!(err instanceof APIError)) throw err;
            return { status: err.status ?? 0, code: (err.code as string | null) ?? null, charged: 0n };
          }
        }),
      );
    const clientsFor = (key: string) => ({
      a: new OpenAI({ baseURL: `${a.url}/v1`, apiKey: key, maxRetries: 0 }),
      b: new OpenAI({ baseURL: `${b.url}/v1`, apiKey: key, maxRetries: 0 }),
    });
    const chargeOfOneCall = async () => {
      const probe = await tenant({});
      const [first] = await burst(probe.clients, 1);
      expect(first.status).toBe(200);
      return first.charged;
    };

    it('never spends more than the balance when concurrent calls race through both processes', async () => {
      const perCall = await chargeOfOneCall();
      // Enough for about five calls; each hold asks for the worst case, far more than a call costs.
      const granted = perCall * 5n + perCall / 2n;
      const workspaceId = await g.addWorkspace(admin(), g.credits(granted));
      const key = await g.addKey(admin(), workspaceId, {});
      const outcomes = await burst(clientsFor(key.key), 40);

      const served = outcomes.filter((o) => o.status === 200);
      const refused = outcomes.filter((o) => o.status !== 200);
      expect(served.length).toBeGreaterThan(0);
      expect(refused.length).toBeGreaterThan(0);
      for (const r of refused) expect(r).toMatchObject({ status: 402, code: 'insufficient_credits' });
      const charged = served.reduce((sum, o) => sum + o.charged, 0n);
      expect(charged).toBeLessThanOrEqual(granted);
      const balance = await balanceOf(await settledDb(), workspaceId);
      expect(balance).toMatchObject({ balanceMicros: granted - charged, consumedMicros: charged, pendingMicros: 0n });
      expect(balance.balanceMicros).toBeGreaterThanOrEqual(0n);
      const records = await (await settledDb()).selectFrom('usage_records').select(['charge_micros', 'status']).where('workspace_id', '=', workspaceId).execute();
      expect(records.filter((r) => r.status === 'ok')).toHaveLength(served.length);
      expect(records.reduce((sum, r) => sum + BigInt(r.charge_micros), 0n)).toBe(charged);
      expect(await verifyLedger(await settledDb())).toEqual([]);
    });

    it("never lets concurrent calls through both processes spend more than a key's budget", async () => {
      const perCall = await chargeOfOneCall();
      const workspaceId = await g.addWorkspace(admin(), '100');
      const budget = perCall * 3n + perCall / 2n;
      const created = await admin().admin('POST', `/api/admin/workspaces/${workspaceId}/keys`, {
        name: 'capped',
        budget: { period: 'lifetime', credits: g.credits(budget) },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const outcomes = await burst(clientsFor(created.body.key), 30);

      const served = outcomes.filter((o) => o.status === 200);
      expect(served.length).toBeGreaterThan(0);
      for (const r of outcomes.filter((o) => o.status !== 200)) expect(r).toMatchObject({ status: 402, code: 'key_budget_exceeded' });
      const spent = served.reduce((sum, o) => sum + o.charged, 0n);
      expect(spent).toBeLessThanOrEqual(budget);
      const view = await admin().admin('GET', `/api/admin/workspaces/${workspaceId}/keys/${created.body.id}`);
      expect(view.body).toMatchObject({ spend: g.credits(spent), requests: served.length, budgetUsage: { spent: g.credits(spent), pending: '0' } });
      expect((await balanceOf(await settledDb(), workspaceId)).consumedMicros).toBe(spent);
      expect(await verifyLedger(await settledDb())).toEqual([]);
    });
  });
});

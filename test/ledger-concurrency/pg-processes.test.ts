// Several OS processes, each with its own pool and group committer, write to one PostgreSQL
// ledger at once (the multi-instance deployment). Each worker (worker.ts) reports what the ledger
// answered it; this test then proves from the database that the answers and the books agree
// exactly, that settlements were serialized (no lost update), that no hold was admitted beyond
// what the account could cover, and that a grant sent by every process under one key landed once.
// PostgreSQL only: it runs when TEST_DATABASE_URL is set, like every PostgreSQL test.
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, pgUrl, type TestDatabase } from '../helpers/store.ts';
import { openStore, type Store } from '../../src/store/db.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { ensureOperatorAccounts, workspaceAccountId } from '../../src/ledger/accounts.ts';
import { Ledger } from '../../src/ledger/ledger.ts';
import { balanceOf } from '../../src/ledger/reads.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import { toBigInt } from '../../src/ledger/money.ts';
import { createWorkspace } from '../../src/workspaces/workspaces.ts';
import { contestedGrant, sameGrant, type WorkerArgs, type WorkerReport } from './plan.ts';

const workerFile = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker.ts');
const processCount = 4;
const startingCredits = 100n;
const credit = 1_000_000n;
const suiteTimeoutMs = 120_000;

/** Starts every worker, waits until all are connected, releases them together, collects reports. */
async function runWorkers(argsFor: (worker: number) => WorkerArgs): Promise<WorkerReport[]> {
  const children = Array.from({ length: processCount }, (_, i) => {
    const child = spawn(process.execPath, ['--import', 'tsx', workerFile, JSON.stringify(argsFor(i))], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = readline.createInterface({ input: child.stdout });
    const received: string[] = [];
    let onLine: (() => void) | null = null;
    lines.on('line', (l) => {
      received.push(l);
      onLine?.();
    });
    const nextLine = () =>
      new Promise<string>((resolve, reject) => {
        const take = () => {
          if (received.length > 0) return resolve(received.shift()!);
          onLine = take;
        };
        child.once('exit', (code) => received.length === 0 && reject(new Error(`worker ${i} exited with ${code}: ${stderr}`)));
        take();
      });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    return { child, nextLine, exited, stderr: () => stderr };
  });
  for (const c of children) expect(JSON.parse(await c.nextLine())).toEqual({ ready: true });
  for (const c of children) c.child.stdin.end('go\n');
  const reports = await Promise.all(children.map(async (c) => JSON.parse(await c.nextLine()) as WorkerReport));
  for (const c of children) expect(await c.exited, c.stderr()).toBe(0);
  return reports;
}

function groupBy<T>(xs: T[], keyOf: (x: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const x of xs) out.set(keyOf(x), [...(out.get(keyOf(x)) ?? []), x]);
  return out;
}

const sum = (xs: bigint[]) => xs.reduce((a, b) => a + b, 0n);
const maxOf = (a: bigint, b: bigint) => (a > b ? a : b);
const minOf = (a: bigint, b: bigint) => (a < b ? a : b);

describe.skipIf(!pgUrl)('ledger written by several processes at once (PostgreSQL)', () => {
  let database: TestDatabase;
  let store: Store;
  let workspaceId: string;
  beforeEach(async () => {
    database = await createTestDatabase('postgres');
    store = await openStore(database.url, { poolSize: 4 });
    await migrateToLatest(store);
    await ensureOperatorAccounts(store.db, Date.now());
    workspaceId = (await createWorkspace(store.db, { name: 'contended' })).id;
  });
  afterEach(async () => {
    await store?.close();
    await database?.drop();
  });

  it(`${processCount} processes holding, settling and voiding on one small balance keep it exact`, async () => {
    const granted = startingCredits * credit;
    await new Ledger(store).grant({ workspaceId, amountMicros: granted, source: 'purchase', idempotencyKey: 'start' });
    const reports = await runWorkers((worker) => ({
      url: database.url,
      mode: 'holds',
      workspaceId,
      worker,
      seed: 7,
      lanes: 4,
      opsPerLane: 40,
      sharedHoldKeys: 6,
      grantKeys: 0,
      contestedGrantKeys: 0,
    }));
    for (const r of reports) expect(r.mismatches, `worker ${r.worker} replays`).toEqual([]);
    // Every write takes the account's row lock first: no batch ever deadlocked and had to be re-run.
    expect(reports.map((r) => r.committer.retries), 'deadlock retries per process').toEqual(reports.map(() => 0));
    const holds = reports.flatMap((r) => r.holds);
    const settles = reports.flatMap((r) => r.settles);
    const voids = reports.flatMap((r) => r.voids);

    // Every answer under one key names the same hold with the same outcome, and exactly one was
    // not a replay: a key shared by all processes still made one hold.
    const byKey = groupBy(holds, (h) => h.key);
    for (const [key, answers] of byKey) {
      expect(new Set(answers.map((a) => `${a.holdId}:${a.ok}`)).size, key).toBe(1);
      expect(answers.filter((a) => !a.replayed).length, key).toBe(1);
    }
    const freshSettles = settles.filter((s) => !s.replayed);
    for (const [key, answers] of groupBy(settles, (s) => s.key)) {
      expect(answers.filter((a) => !a.replayed).length, `${key} settled once`).toBe(1);
      expect(new Set(answers.map((a) => a.transferId)).size, `${key} one transfer`).toBe(1);
    }
    // An admitted hold leaves available ≥ 0 when it is made (a replay reports available now, which
    // an overrun since may have taken below zero).
    for (const h of holds.filter((x) => x.ok && !x.replayed)) expect(toBigInt(h.available), `${h.key} left available`).toBeGreaterThanOrEqual(0n);

    // The stored holds are exactly the reported ones, in the reported states.
    const stored = await store.db.selectFrom('holds').select(['id', 'idempotency_key', 'status', 'amount_micros', 'settled_micros']).execute();
    expect(stored.length).toBe(byKey.size);
    const admittedKeys = [...byKey].filter(([, a]) => a[0].ok).map(([k]) => k);
    expect(stored.filter((h) => h.status !== 'rejected').length).toBe(admittedKeys.length);
    expect(admittedKeys.length).toBeGreaterThan(0);
    const expectedState = new Map<string, string>();
    for (const [, answers] of byKey) expectedState.set(answers[0].holdId, answers[0].ok ? 'unresolved' : 'rejected');
    for (const s of freshSettles) expectedState.set(s.holdId, `settled ${s.actual}`);
    for (const v of voids) expectedState.set(v.holdId, 'voided');
    expect(Object.fromEntries(stored.map((h) => [h.id, h.status === 'settled' ? `settled ${toBigInt(h.settled_micros)}` : h.status]))).toEqual(
      Object.fromEntries(expectedState),
    );

    // The balance is the grant less every actual the workers were told was charged, to the micro.
    const charged = sum(freshSettles.map((s) => BigInt(s.actual)));
    const b = await balanceOf(store.db, workspaceId);
    expect(b.balanceMicros).toBe(granted - charged);
    expect(b.consumedMicros).toBe(charged);
    expect(b.pendingMicros).toBe(0n);
    expect(await verifyLedger(store.db)).toEqual([]);

    // Settlements were serialized: balance only went down, by each usage transfer in turn, so
    // sorting them by balance after rebuilds the commit order, and each step must be exact.
    const amountOfHold = new Map(stored.map((h) => [h.id, toBigInt(h.amount_micros)]));
    const usage = (
      await store.db
        .selectFrom('transfers')
        .select(['id', 'hold_id', 'amount_micros', 'balance_after_micros', 'overdrawn_micros'])
        .where('kind', '=', 'usage')
        .where('debit_account_id', '=', workspaceAccountId(workspaceId))
        .execute()
    )
      .map((t) => ({ holdId: t.hold_id!, amount: toBigInt(t.amount_micros), after: toBigInt(t.balance_after_micros), overdrawn: toBigInt(t.overdrawn_micros) }))
      .sort((x, y) => (x.after > y.after ? -1 : x.after < y.after ? 1 : 0));
    expect(usage.length).toBe(freshSettles.filter((s) => BigInt(s.actual) > 0n).length);
    let balance = granted;
    let overruns = 0n;
    for (const t of usage) {
      expect(t.after, `settlement of ${t.holdId} follows the one before`).toBe(balance - t.amount);
      // What lots could not cover: the part of the charge beyond what was left above zero.
      expect(t.overdrawn, `overdrawn of ${t.holdId}`).toBe(t.amount - minOf(t.amount, maxOf(balance, 0n)));
      balance = t.after;
      overruns += maxOf(t.amount - amountOfHold.get(t.holdId)!, 0n);
      // Holds are admitted only against balance − pending ≥ 0; settling within a hold keeps that,
      // only an overrun lowers it. Had any hold been admitted without cover, settling holds
      // within their amounts would take the balance below minus the overruns so far.
      expect(t.after, `balance after ${t.holdId} against overruns so far`).toBeGreaterThanOrEqual(-overruns);
    }
    expect(balance).toBe(b.balanceMicros);
  }, suiteTimeoutMs);

  it(`${processCount} processes granting under the same idempotency keys apply each grant once`, async () => {
    const grantKeys = 40;
    const contestedKeys = 8;
    const reports = await runWorkers((worker) => ({
      url: database.url,
      mode: 'grants',
      workspaceId,
      worker,
      seed: 11,
      lanes: 4,
      opsPerLane: 0,
      sharedHoldKeys: 0,
      grantKeys,
      contestedGrantKeys: contestedKeys,
    }));
    const answers = groupBy(
      reports.flatMap((r) => r.grants.map((g) => ({ ...g, worker: r.worker }))),
      (g) => g.key,
    );
    expect(answers.size).toBe(grantKeys + contestedKeys);
    expect(reports.map((r) => r.committer.retries), 'deadlock retries per process').toEqual(reports.map(() => 0));
    let expectedBalance = 0n;
    const lots = await store.db.selectFrom('lots').select(['id', 'transfer_id', 'amount_micros']).execute();
    const lotById = new Map(lots.map((l) => [l.id, l]));
    for (let k = 0; k < grantKeys; k++) {
      const got = answers.get(`grant-${k}`)!;
      expect(got.length).toBe(processCount);
      expect(got.filter((g) => g.error !== null), `grant-${k}`).toEqual([]);
      expect(got.filter((g) => !g.replayed).length, `grant-${k} applied once`).toBe(1);
      expect(new Set(got.map((g) => `${g.lotId}/${g.transferId}`)).size, `grant-${k} one answer`).toBe(1);
      const lot = lotById.get(got[0].lotId!)!;
      expect(lot.transfer_id).toBe(got[0].transferId);
      expect(toBigInt(lot.amount_micros)).toBe(sameGrant(k));
      expectedBalance += sameGrant(k);
    }
    for (let k = 0; k < contestedKeys; k++) {
      const got = answers.get(`contested-${k}`)!;
      // Each process sent its own amount: the first to commit wins, every other one is refused.
      const winners = got.filter((g) => g.error === null);
      expect(winners.length, `contested-${k}`).toBe(1);
      expect(winners[0].replayed).toBe(false);
      expect(got.filter((g) => g.error === 'idempotency_key_reused').length).toBe(processCount - 1);
      expect(toBigInt(lotById.get(winners[0].lotId!)!.amount_micros)).toBe(contestedGrant(k, winners[0].worker));
      expectedBalance += contestedGrant(k, winners[0].worker);
    }
    expect(lots.length).toBe(grantKeys + contestedKeys);
    const keys = await store.db.selectFrom('idempotency_keys').select(['key', 'status']).where('scope', '=', 'grant').execute();
    expect(keys.length).toBe(grantKeys + contestedKeys);
    expect(keys.every((k) => k.status === 'ok')).toBe(true);
    const b = await balanceOf(store.db, workspaceId);
    expect(b.balanceMicros).toBe(expectedBalance);
    expect(b.purchasedMicros).toBe(expectedBalance);
    expect(await verifyLedger(store.db)).toEqual([]);
  }, suiteTimeoutMs);
});

// One OS process of the multi-process ledger test (pg-processes.test.ts): opens its own store and
// Ledger against the shared PostgreSQL database, says `{"ready":true}`, waits for "go" on stdin so
// every process starts together, hammers one workspace from several concurrent lanes (so its own
// group committer batches too), and prints one JSON report of everything the ledger answered.
import readline from 'node:readline';
import { openStore } from '../../src/store/db.ts';
import { AppError, Ledger } from '../../src/ledger/ledger.ts';
import { contestedGrant, sameGrant, sharedHold, type WorkerArgs, type WorkerReport } from './plan.ts';
import { prng } from '../helpers/prng.ts';

const holdTimeoutMs = 10 * 60 * 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function runHolds(ledger: Ledger, args: WorkerArgs, report: WorkerReport): Promise<void> {
  const ws = args.workspaceId;
  const lane = async (laneNo: number) => {
    const rng = prng(args.seed * 1000 + args.worker * 10 + laneNo);
    for (let i = 0; i < args.opsPerLane; i++) {
      const sharedNo = rng.chance(0.1) ? rng.int(0, args.sharedHoldKeys - 1) : -1;
      const key = sharedNo >= 0 ? `shared-${sharedNo}` : `w${args.worker}-l${laneNo}-${i}`;
      const amount = sharedNo >= 0 ? sharedHold(sharedNo).amount : rng.micros(2, 40);
      const h = await ledger.hold({ workspaceId: ws, amountMicros: amount, timeoutMs: holdTimeoutMs, idempotencyKey: key });
      report.holds.push({
        key,
        holdId: h.holdId,
        ok: h.ok,
        replayed: h.replayed,
        amount: amount.toString(),
        available: (h.ok ? h.availableAfterMicros : h.availableMicros).toString(),
      });
      if (!h.ok) continue;
      if (rng.chance(0.1)) {
        const again = await ledger.hold({ workspaceId: ws, amountMicros: amount, timeoutMs: holdTimeoutMs, idempotencyKey: key });
        if (!again.ok || again.holdId !== h.holdId || !again.replayed) report.mismatches.push(`hold replay of ${key}: ${JSON.stringify({ ok: again.ok, id: again.holdId })}`);
      }
      // Keep the reservation open a moment while the other lanes and processes compete for credits.
      await sleep(rng.int(0, 3));
      if (sharedNo < 0 && rng.chance(0.15)) {
        const v = await ledger.void(ws, h.holdId);
        report.voids.push({ key, holdId: h.holdId, released: v.releasedMicros.toString(), replayed: v.replayed });
        continue;
      }
      let actual: bigint;
      if (sharedNo >= 0) actual = sharedHold(sharedNo).actual;
      else if (rng.chance(0.04)) actual = amount + rng.micros(0, 2); // an overrun: usage above the hold
      else actual = BigInt(Math.floor(rng.next() * Number(amount / 10n)));
      const s = await ledger.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: actual, model: 'bench' });
      report.settles.push({
        key,
        holdId: h.holdId,
        actual: actual.toString(),
        transferId: s.transferId,
        overdrawn: s.overdrawnMicros.toString(),
        replayed: s.replayed,
      });
      if (rng.chance(0.1)) {
        const again = await ledger.settle({ workspaceId: ws, holdId: h.holdId, actualMicros: actual });
        if (!again.replayed || again.transferId !== s.transferId || again.chargedMicros !== actual) {
          report.mismatches.push(`settle replay of ${key}: ${JSON.stringify({ replayed: again.replayed, t: again.transferId })}`);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: args.lanes }, (_, i) => lane(i)));
}

async function runGrants(ledger: Ledger, args: WorkerArgs, report: WorkerReport): Promise<void> {
  const rng = prng(args.seed * 1000 + args.worker);
  const jobs: { key: string; amount: bigint }[] = [];
  for (let k = 0; k < args.grantKeys; k++) jobs.push({ key: `grant-${k}`, amount: sameGrant(k) });
  for (let k = 0; k < args.contestedGrantKeys; k++) jobs.push({ key: `contested-${k}`, amount: contestedGrant(k, args.worker) });
  // Each process sends the keys in an order of its own.
  for (let i = jobs.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [jobs[i], jobs[j]] = [jobs[j], jobs[i]];
  }
  let next = 0;
  const lane = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      try {
        const g = await ledger.grant({ workspaceId: args.workspaceId, amountMicros: job.amount, source: 'purchase', idempotencyKey: job.key });
        report.grants.push({ key: job.key, amount: job.amount.toString(), lotId: g.lotId, transferId: g.transferId, replayed: g.replayed, error: null });
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        report.grants.push({ key: job.key, amount: job.amount.toString(), lotId: null, transferId: null, replayed: false, error: err.code });
      }
    }
  };
  await Promise.all(Array.from({ length: args.lanes }, () => lane()));
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]) as WorkerArgs;
  const store = await openStore(args.url, { poolSize: 4 });
  const ledger = new Ledger(store);
  const report: WorkerReport = { worker: args.worker, holds: [], settles: [], voids: [], grants: [], mismatches: [], committer: ledger.writer.stats };
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  const lines = readline.createInterface({ input: process.stdin });
  await new Promise<void>((resolve) => lines.once('line', () => resolve()));
  lines.close();
  try {
    if (args.mode === 'holds') await runHolds(ledger, args, report);
    else await runGrants(ledger, args, report);
  } finally {
    await store.close();
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});

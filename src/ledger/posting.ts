// The posting half of settlements, shared by held and leased calls and done for many at once: the
// actual amounts leave the account (and its lots, in burn order) for usage revenue, reservations
// are released, and each call's transfer, usage record and key counters are written in the same
// transaction. Settlements of one account that a batch runs together cost one account update, one
// update per lot touched and a few multi-row inserts, instead of six statements each; each still
// gets the balance after it and the lots it burnt exactly as if it had been posted on its own.
import type { Batch, Tx } from './committer.ts';
import { operatorAccounts } from './accounts.ts';
import { burnLots, max } from './lots.ts';
import { toBigInt } from './money.ts';
import { insertRecordsMany } from './records.ts';
import { insertRows, prepare, queryRows } from '../store/prepared.ts';
import type { SettleInput, SettleResult } from './ledger.ts';
import { assert } from './invariants.ts';
import { newId } from '../lib/ids.ts';

export interface UsagePosting extends SettleInput {
  /** What leaves the account's pending reservations (0 for a late settlement). */
  releasedMicros: bigint;
  /** Null for a zero charge, which posts no transfer. */
  transferId: string | null;
  late: boolean;
  nowMs: number;
}

/** Posts settlements of one account in order; the caller holds the account's lock. */
export async function postUsages(tx: Tx, batch: Batch, accountId: string, postings: UsagePosting[]): Promise<SettleResult[]> {
  const engine = batch.engine;
  let released = 0n;
  let charged = 0n;
  for (const p of postings) {
    released += p.releasedMicros;
    charged += p.actualMicros;
  }
  const [acct] = await queryRows<AccountAfterSettle>(tx, engine, sqlPostSettle, [released, charged, charged, accountId]);
  const holds = postings.map((p) => p.holdId).join(', ');
  assert(acct !== undefined, `account ${accountId} is missing while settling ${holds}`);
  assert(toBigInt(acct.debits_pending) >= 0n, `account ${accountId} has negative pending after settling ${holds}`);
  const debits = postings.flatMap((p) => (p.transferId ? [{ transferId: p.transferId, amountMicros: p.actualMicros }] : []));
  const uncovered = debits.length > 0 ? await burnLots(tx, engine, accountId, debits) : [];

  // The balance before the first of them, then after each in turn.
  let balance = toBigInt(acct.credits_posted) - toBigInt(acct.debits_posted) + charged;
  let debit = 0;
  const transfers: unknown[][] = [];
  const results: SettleResult[] = [];
  for (const p of postings) {
    const before = balance;
    balance -= p.actualMicros;
    let overdrawn = 0n;
    if (p.transferId) {
      overdrawn = uncovered[debit++];
      transfers.push([p.transferId, 'usage', accountId, operatorAccounts.usageRevenue, p.actualMicros, p.workspaceId, p.holdId, null, p.model ?? null, p.tag ?? null, p.ref ?? null, p.note ?? null, balance, overdrawn, p.nowMs]);
      batch.creditOperator(operatorAccounts.usageRevenue, p.actualMicros);
      await warnIfCrossed(tx, p.workspaceId, acct.warning_limit_micros, before, balance, p.nowMs);
    }
    results.push({
      holdId: p.holdId,
      transferId: p.transferId,
      chargedMicros: p.actualMicros,
      releasedMicros: p.late ? 0n : max(p.releasedMicros - p.actualMicros, 0n),
      balanceAfterMicros: balance,
      overdrawnMicros: overdrawn,
      late: p.late,
      replayed: false,
    });
    if (p.keyUsage) batch.addKeyUsage(p.keyUsage.keyId, p.actualMicros, p.keyUsage.usedAtMs);
  }
  await insertRows(tx, engine, usageTransfers, transfers);
  await insertRecordsMany(
    tx,
    engine,
    postings.map((p, i) => ({ records: p.records, result: results[i] })),
  );
  return results;
}

interface AccountAfterSettle {
  credits_posted: unknown;
  debits_posted: unknown;
  debits_pending: unknown;
  warning_limit_micros: unknown;
}

const sqlPostSettle = prepare(`
  update accounts set debits_pending = debits_pending - ?, debits_posted = debits_posted + ?, consumed_micros = consumed_micros + ?
  where id = ?
  returning credits_posted, debits_posted, debits_pending, warning_limit_micros`);
const usageTransfers = {
  table: 'transfers',
  columns: ['id', 'kind', 'debit_account_id', 'credit_account_id', 'amount_micros', 'workspace_id', 'hold_id', 'lot_id', 'model', 'tag', 'ref', 'note', 'balance_after_micros', 'overdrawn_micros', 'created_at'],
} as const;

/** Writes a `balance.warning` event to the outbox when a debit takes the balance below the warning limit. */
export async function warnIfCrossed(tx: Tx, workspaceId: string, warningLimit: unknown, before: bigint, after: bigint, nowMs: number): Promise<void> {
  if (warningLimit === null || warningLimit === undefined) return;
  const limit = toBigInt(warningLimit);
  if (!(before >= limit && after < limit)) return;
  await tx
    .insertInto('outbox')
    .values({
      id: newId('evt', nowMs),
      topic: 'balance.warning',
      workspace_id: workspaceId,
      payload: JSON.stringify({ workspaceId, balanceMicros: after.toString(), warningLimitMicros: limit.toString() }),
      created_at: nowMs,
      delivered_at: null,
    })
    .execute();
}

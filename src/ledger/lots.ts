// Burning lots: a debit consumes a workspace's lots in order (priority, then soonest expiry, then
// oldest) and records how much of each it took. The caller holds the workspace account's row lock.
import type { Tx, Batch } from './committer.ts';
import type { Engine } from '../store/db.ts';
import { execute, prepare, queryRows } from '../store/prepared.ts';
import { toBigInt } from './money.ts';

const burnPageSize = 32;

/** Burns up to `amountMicros` from the account's lots; returns the part no lot covered. */
export async function burnLots(tx: Tx, engine: Engine, accountId: string, transferId: string, amountMicros: bigint): Promise<bigint> {
  let left = amountMicros;
  while (left > 0n) {
    const lots = await queryRows<{ id: string; remaining_micros: unknown }>(tx, engine, sqlBurnOrder, [accountId, burnPageSize]);
    for (const lot of lots) {
      const take = min(left, toBigInt(lot.remaining_micros));
      await execute(tx, engine, sqlTakeFromLot, [take, lot.id]);
      await execute(tx, engine, sqlRecordConsumption, [transferId, lot.id, take]);
      left -= take;
      if (left === 0n) break;
    }
    if (lots.length < burnPageSize) break;
  }
  return left;
}

const sqlBurnOrder = prepare(`
  select id, remaining_micros from lots
  where account_id = ? and remaining_micros > 0
  order by priority, expires_at is null, expires_at, created_at, id
  limit ?`);
const sqlTakeFromLot = prepare('update lots set remaining_micros = remaining_micros - ? where id = ?');
const sqlRecordConsumption = prepare('insert into lot_consumptions (transfer_id, lot_id, amount_micros) values (?, ?, ?)');

const sqlAccountExists = prepare('select id from accounts where id = ?');

/** Takes the workspace account's row lock (Batch.lockAccount) and tells whether the account exists. */
export async function lockExistingAccount(tx: Tx, batch: Batch, accountId: string): Promise<boolean> {
  await batch.lockAccount(tx, accountId);
  const [row] = await queryRows<{ id: string }>(tx, batch.engine, sqlAccountExists, [accountId]);
  return row !== undefined;
}

export const min = (a: bigint, b: bigint) => (a < b ? a : b);
export const max = (a: bigint, b: bigint) => (a > b ? a : b);

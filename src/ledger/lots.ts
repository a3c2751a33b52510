// Burning lots: a debit consumes a workspace's lots in order (priority, then soonest expiry, then
// oldest) and records how much of each it took. The caller holds the workspace account's row lock.
import { sql } from 'kysely';
import type { Tx, Batch } from './committer.ts';
import { toBigInt } from './money.ts';

const burnPageSize = 32;

/** Burns up to `amountMicros` from the account's lots; returns the part no lot covered. */
export async function burnLots(tx: Tx, accountId: string, transferId: string, amountMicros: bigint): Promise<bigint> {
  let left = amountMicros;
  while (left > 0n) {
    const lots = await tx
      .selectFrom('lots')
      .select(['id', 'remaining_micros'])
      .where('account_id', '=', accountId)
      .where('remaining_micros', '>', 0n)
      .orderBy('priority')
      .orderBy(sql`expires_at is null`)
      .orderBy('expires_at')
      .orderBy('created_at')
      .orderBy('id')
      .limit(burnPageSize)
      .execute();
    for (const lot of lots) {
      const take = min(left, toBigInt(lot.remaining_micros));
      await tx
        .updateTable('lots')
        .set((eb) => ({ remaining_micros: eb('remaining_micros', '-', take) }))
        .where('id', '=', lot.id)
        .execute();
      await tx.insertInto('lot_consumptions').values({ transfer_id: transferId, lot_id: lot.id, amount_micros: take }).execute();
      left -= take;
      if (left === 0n) break;
    }
    if (lots.length < burnPageSize) break;
  }
  return left;
}

/**
 * Takes the workspace account's row lock before anything reads its lots. PostgreSQL needs it
 * explicitly; a SQLite transaction already holds the database's write lock (BEGIN IMMEDIATE).
 */
export async function lockAccount(tx: Tx, batch: Batch, accountId: string): Promise<boolean> {
  if (batch.engine === 'postgres') {
    const row = await tx.selectFrom('accounts').select('id').where('id', '=', accountId).forUpdate().executeTakeFirst();
    return row !== undefined;
  }
  const row = await tx.selectFrom('accounts').select('id').where('id', '=', accountId).executeTakeFirst();
  return row !== undefined;
}

export const min = (a: bigint, b: bigint) => (a < b ? a : b);
export const max = (a: bigint, b: bigint) => (a > b ? a : b);

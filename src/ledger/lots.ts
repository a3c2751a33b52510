// Burning lots: a debit consumes a workspace's lots in order (priority, then soonest expiry, then
// oldest) and records how much of each it took. The caller holds the workspace account's row lock.
import type { Tx, Batch } from './committer.ts';
import type { Engine } from '../store/db.ts';
import { execute, insertRows, prepare, queryRows } from '../store/prepared.ts';
import { toBigInt } from './money.ts';

const burnPageSize = 32;

export interface LotDebit {
  transferId: string;
  amountMicros: bigint;
}

/**
 * Burns debits of one account in the order given, each from the lots left by the ones before it,
 * as the same debits one at a time would; returns the part of each that no lot covered. Each lot
 * touched is updated once and the consumptions are inserted together.
 */
export async function burnLots(tx: Tx, engine: Engine, accountId: string, debits: LotDebit[]): Promise<bigint[]> {
  const uncovered: bigint[] = [];
  const consumptions: unknown[][] = [];
  const taken = new Map<string, bigint>();
  let page: { id: string; remaining: bigint }[] = [];
  let next = 0;
  let lastPage = false;
  const applyTaken = async () => {
    for (const [id, take] of taken) await execute(tx, engine, sqlTakeFromLot, [take, id]);
    taken.clear();
  };
  // Lots burnt to zero leave the burn order, so after applying what was taken the next page starts where this one ended.
  const readPage = async () => {
    await applyTaken();
    const rows = await queryRows<{ id: string; remaining_micros: unknown }>(tx, engine, sqlBurnOrder, [accountId, burnPageSize]);
    page = rows.map((r) => ({ id: r.id, remaining: toBigInt(r.remaining_micros) }));
    next = 0;
    lastPage = rows.length < burnPageSize;
  };
  let read = false;
  for (const debit of debits) {
    let left = debit.amountMicros;
    while (left > 0n) {
      if (next >= page.length) {
        if (read && lastPage) break;
        await readPage();
        read = true;
        if (page.length === 0) break;
      }
      const lot = page[next];
      const take = min(left, lot.remaining);
      lot.remaining -= take;
      left -= take;
      taken.set(lot.id, (taken.get(lot.id) ?? 0n) + take);
      consumptions.push([debit.transferId, lot.id, take]);
      if (lot.remaining === 0n) next++;
    }
    uncovered.push(left);
  }
  await applyTaken();
  await insertRows(tx, engine, lotConsumptions, consumptions);
  return uncovered;
}

const lotConsumptions = { table: 'lot_consumptions', columns: ['transfer_id', 'lot_id', 'amount_micros'] } as const;
const sqlBurnOrder = prepare(`
  select id, remaining_micros from lots
  where account_id = ? and remaining_micros > 0
  order by priority, expires_at is null, expires_at, created_at, id
  limit ?`);
const sqlTakeFromLot = prepare('update lots set remaining_micros = remaining_micros - ? where id = ?');

const sqlAccountExists = prepare('select id from accounts where id = ?');

/** Takes the workspace account's row lock (Batch.lockAccount) and tells whether the account exists. */
export async function lockExistingAccount(tx: Tx, batch: Batch, accountId: string): Promise<boolean> {
  await batch.lockAccount(tx, accountId);
  const [row] = await queryRows<{ id: string }>(tx, batch.engine, sqlAccountExists, [accountId]);
  return row !== undefined;
}

export const min = (a: bigint, b: bigint) => (a < b ? a : b);
export const max = (a: bigint, b: bigint) => (a > b ? a : b);

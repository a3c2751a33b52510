// Rows that belong to a ledger write: the gateway's usage record commits if and only if the
// settlement (or void) it explains does. They travel as data, not callbacks, so the ledger's
// writes can move (another thread, balance leases) with their records still in the same
// transaction; a column listed in `fill` takes its value from the write's result.
import type { Tx } from './committer.ts';
import type { Engine } from '../store/db.ts';
import { insertRows } from '../store/prepared.ts';

/** Tables a ledger write may carry rows for. */
export type RecordTable = 'usage_records';
const recordTables: readonly RecordTable[] = ['usage_records'];

export interface LedgerRecord {
  table: RecordTable;
  values: Record<string, unknown>;
  /** Columns to fill from the write's result: the balance after it, the transfer it posted. */
  fill?: { balanceAfterMicros?: string; transferId?: string };
}

export interface RecordResult {
  balanceAfterMicros: bigint | null;
  transferId: string | null;
}

const identifier = /^[a-z_][a-z0-9_]*$/;

/** Inserts each record in `tx`, its `fill` columns taken from `result`. */
export async function insertRecords(tx: Tx, engine: Engine, records: LedgerRecord[] | undefined, result: RecordResult): Promise<void> {
  if (records && records.length > 0) await insertRecordsMany(tx, engine, [{ records, result }]);
}

/**
 * The records of many writes of one batch, each filled from its own write's result: rows of the
 * same table and columns go in multi-row statements.
 */
export async function insertRecordsMany(tx: Tx, engine: Engine, items: { records?: LedgerRecord[]; result: RecordResult }[]): Promise<void> {
  const shapes = new Map<string, { table: RecordTable; columns: string[]; rows: unknown[][] }>();
  for (const { records, result } of items) {
    for (const r of records ?? []) {
      const columns = Object.keys(r.values);
      const row = Object.values(r.values);
      if (r.fill?.balanceAfterMicros) {
        columns.push(r.fill.balanceAfterMicros);
        row.push(result.balanceAfterMicros);
      }
      if (r.fill?.transferId) {
        columns.push(r.fill.transferId);
        row.push(result.transferId);
      }
      const key = `${r.table}(${columns.join(',')})`;
      let shape = shapes.get(key);
      if (!shape) {
        if (!recordTables.includes(r.table) || !columns.every((c) => identifier.test(c))) throw new Error(`not a ledger record: ${key}`);
        shape = { table: r.table, columns, rows: [] };
        shapes.set(key, shape);
      }
      shape.rows.push(row);
    }
  }
  for (const shape of shapes.values()) await insertRows(tx, engine, shape, shape.rows);
}

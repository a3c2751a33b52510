// Rows that belong to a ledger write: the gateway's usage record commits if and only if the
// settlement (or void) it explains does. They travel as data, not callbacks, so the ledger's
// writes can move (another thread, balance leases) with their records still in the same
// transaction; a column listed in `fill` takes its value from the write's result.
import type { Tx } from './committer.ts';
import type { Engine } from '../store/db.ts';
import { execute, prepare, type Prepared } from '../store/prepared.ts';

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
const statements = new Map<string, Prepared>();

/** Inserts each record in `tx`, its `fill` columns taken from `result`. */
export async function insertRecords(tx: Tx, engine: Engine, records: LedgerRecord[] | undefined, result: RecordResult): Promise<void> {
  if (!records) return;
  for (const r of records) {
    const columns = Object.keys(r.values);
    const params = Object.values(r.values);
    if (r.fill?.balanceAfterMicros) {
      columns.push(r.fill.balanceAfterMicros);
      params.push(result.balanceAfterMicros);
    }
    if (r.fill?.transferId) {
      columns.push(r.fill.transferId);
      params.push(result.transferId);
    }
    await execute(tx, engine, statementFor(r.table, columns), params);
  }
}

function statementFor(table: RecordTable, columns: string[]): Prepared {
  const key = `${table}(${columns.join(',')})`;
  let stmt = statements.get(key);
  if (!stmt) {
    if (!recordTables.includes(table) || !columns.every((c) => identifier.test(c))) throw new Error(`not a ledger record: ${key}`);
    stmt = prepare(`insert into ${table} (${columns.join(', ')}) values (${columns.map(() => '?').join(', ')})`);
    statements.set(key, stmt);
  }
  return stmt;
}

// Hand-written SQL for the statements every gateway call runs (hold, settle, burn, usage record).
// Kysely builds, freezes and compiles a query tree per statement, which cost more CPU than SQLite
// took to run them; these are written once, in the dialect both engines share, with `?`
// placeholders turned into `$n` for PostgreSQL once at load. They still run through the
// transaction's connection, so they commit and roll back with everything around them.
import { CompiledQuery, type Transaction } from 'kysely';
import type { Engine } from './db.ts';
import type { Database } from './schema.ts';

export interface Prepared {
  readonly sqlite: string;
  readonly postgres: string;
}

/**
 * PostgreSQL texts of the prepared statements, with the name each is prepared under on a
 * connection (see `openStore`): the server parses and plans each once per connection, not per call.
 */
export const postgresStatementNames = new Map<string, string>();

/** A statement for both engines from one text with `?` placeholders (none may sit inside a string literal). */
export function prepare(text: string): Prepared {
  const sqlite = text.replace(/\s+/g, ' ').trim();
  let n = 0;
  const postgres = sqlite.replace(/\?/g, () => `$${++n}`);
  if (!postgresStatementNames.has(postgres)) postgresStatementNames.set(postgres, `tg_${postgresStatementNames.size + 1}`);
  return { sqlite, postgres };
}

/** Runs a prepared statement in `tx`; the rows it returned (RETURNING or SELECT). */
export async function queryRows<Row>(tx: Transaction<Database>, engine: Engine, stmt: Prepared, params: unknown[]): Promise<Row[]> {
  const result = await tx.executeQuery<Row>(CompiledQuery.raw(engine === 'sqlite' ? stmt.sqlite : stmt.postgres, params));
  return result.rows;
}

/** Runs a prepared statement in `tx`; how many rows it changed. */
export async function execute(tx: Transaction<Database>, engine: Engine, stmt: Prepared, params: unknown[]): Promise<bigint> {
  const result = await tx.executeQuery(CompiledQuery.raw(engine === 'sqlite' ? stmt.sqlite : stmt.postgres, params));
  return result.numAffectedRows ?? 0n;
}

/** Row counts multi-row inserts are cut into, largest first: a handful of statement texts per table, not one per batch size. */
const insertChunks = [64, 16, 4, 1];
const multiRowStatements = new Map<string, Prepared>();

/**
 * Inserts many rows with as few statements as it takes (`insert into … values (…), (…)`), each
 * row an array of values in `columns` order. `into` is a trusted table and column list, never input.
 */
export async function insertRows(tx: Transaction<Database>, engine: Engine, into: { table: string; columns: readonly string[] }, rows: unknown[][]): Promise<void> {
  let at = 0;
  while (at < rows.length) {
    const size = insertChunks.find((n) => n <= rows.length - at)!;
    const key = `${into.table}(${into.columns.join(',')})x${size}`;
    let stmt = multiRowStatements.get(key);
    if (!stmt) {
      const row = `(${into.columns.map(() => '?').join(', ')})`;
      stmt = prepare(`insert into ${into.table} (${into.columns.join(', ')}) values ${Array.from({ length: size }, () => row).join(', ')}`);
      multiRowStatements.set(key, stmt);
    }
    const params: unknown[] = [];
    for (let i = at; i < at + size; i++) {
      if (rows[i].length !== into.columns.length) throw new Error(`a row for ${into.table} has ${rows[i].length} values for ${into.columns.length} columns`);
      params.push(...rows[i]);
    }
    await execute(tx, engine, stmt, params);
    at += size;
  }
}

// Price books: named customer groups with their own credit rates. A book's rates are rate versions
// of each model (model_rates.price_book_id, appended by addRates), override the model's default
// rates for the workspaces assigned to the book, and are versioned by effective time like them.
import type { Kysely, Updateable } from 'kysely';
import type { Database, PriceBooksTable } from '../store/schema.ts';
import { AppError, conflict, invalid, notFound } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import { isUniqueViolation } from '../store/errors.ts';

export interface PriceBook {
  id: string;
  name: string;
  description: string | null;
  /** Workspaces priced by this book. */
  workspaceCount: number;
  /** Models with at least one rate version in this book. */
  modelCount: number;
  createdAt: number;
}

const maxNameChars = 100;
const maxDescriptionChars = 1000;

export async function createPriceBook(db: Kysely<Database>, input: { name: string; description?: string | null }, nowMs = Date.now()): Promise<PriceBook> {
  const row = { id: newId('pb', nowMs), name: checkName(input.name), description: checkDescription(input.description ?? null), created_at: nowMs };
  try {
    await db.insertInto('price_books').values(row).execute();
  } catch (err) {
    throw isUniqueViolation(err) ? nameTaken(row.name) : err;
  }
  return getPriceBook(db, row.id);
}

export async function getPriceBook(db: Kysely<Database>, id: string): Promise<PriceBook> {
  const row = await db.selectFrom('price_books').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('price_book', id);
  return (await withCounts(db, [row]))[0];
}

/** Newest first; `nextCursor` is the id to pass as `cursor` for the next page. */
export async function listPriceBooks(db: Kysely<Database>, page: { cursor?: string; limit: number }): Promise<{ data: PriceBook[]; nextCursor: string | null }> {
  let q = db.selectFrom('price_books').selectAll();
  if (page.cursor) q = q.where('id', '<', page.cursor);
  const rows = await q.orderBy('id', 'desc').limit(page.limit + 1).execute();
  const data = await withCounts(db, rows.slice(0, page.limit));
  return { data, nextCursor: rows.length > page.limit ? data[data.length - 1].id : null };
}

export async function updatePriceBook(db: Kysely<Database>, id: string, patch: { name?: string; description?: string | null }): Promise<PriceBook> {
  const set: Updateable<PriceBooksTable> = {};
  if (patch.name !== undefined) set.name = checkName(patch.name);
  if (patch.description !== undefined) set.description = checkDescription(patch.description);
  if (Object.keys(set).length > 0) {
    try {
      const res = await db.updateTable('price_books').set(set).where('id', '=', id).executeTakeFirst();
      if (res.numUpdatedRows !== 1n) throw notFound('price_book', id);
    } catch (err) {
      throw isUniqueViolation(err) ? nameTaken(String(set.name)) : err;
    }
  }
  return getPriceBook(db, id);
}

/**
 * Deletes the book with its rate versions (usage records keep the amounts they were charged).
 * Refused while any workspace is assigned to it: those would silently fall back to default rates.
 */
export async function deletePriceBook(db: Kysely<Database>, id: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    if (!(await lockPriceBook(tx, id))) throw notFound('price_book', id);
    const assigned = await tx.selectFrom('workspaces').select('id').where('price_book_id', '=', id).executeTakeFirst();
    if (assigned) throw conflict('price_book_in_use', `Workspace '${assigned.id}' is assigned to this price book: assign it another (or none) first.`);
    await tx.deleteFrom('model_rates').where('price_book_id', '=', id).execute();
    await tx.deleteFrom('price_books').where('id', '=', id).execute();
  });
}

/**
 * Takes a row lock on the book (PostgreSQL; SQLite transactions are serial anyway) and says
 * whether it exists. Whoever assigns a book or adds rates to it takes this lock, and so does
 * deletePriceBook: the later of two such transactions waits, then sees the earlier's result.
 */
export async function lockPriceBook(tx: Kysely<Database>, id: string): Promise<boolean> {
  const res = await tx
    .updateTable('price_books')
    .set((eb) => ({ name: eb.ref('name') }))
    .where('id', '=', id)
    .executeTakeFirst();
  return res.numUpdatedRows === 1n;
}

/** lockPriceBook for a book named in a request: an unknown id is the caller's mistake. */
export async function lockPriceBookParam(tx: Kysely<Database>, id: string, param = 'priceBookId'): Promise<void> {
  if (!(await lockPriceBook(tx, id))) throw invalid('unknown_price_book', `No price book with id '${id}'.`, param);
}

async function withCounts(db: Kysely<Database>, rows: Array<{ [K in keyof PriceBooksTable]: unknown }>): Promise<PriceBook[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((r) => r.id as string);
  const workspaces = await db
    .selectFrom('workspaces')
    .select(['price_book_id', (eb) => eb.fn.countAll<number | bigint | string>().as('n')])
    .where('price_book_id', 'in', ids)
    .groupBy('price_book_id')
    .execute();
  const models = await db
    .selectFrom('model_rates')
    .select(['price_book_id', (eb) => eb.fn.count<number | bigint | string>('model_id').distinct().as('n')])
    .where('price_book_id', 'in', ids)
    .groupBy('price_book_id')
    .execute();
  const countOf = (list: Array<{ price_book_id: string | null; n: number | bigint | string }>, id: string) => Number(list.find((c) => c.price_book_id === id)?.n ?? 0);
  return rows.map((r) => ({
    id: r.id as string,
    name: r.name as string,
    description: r.description as string | null,
    workspaceCount: countOf(workspaces, r.id as string),
    modelCount: countOf(models, r.id as string),
    createdAt: Number(r.created_at),
  }));
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.trim().length === 0 || name.length > maxNameChars) {
    throw invalid('invalid_name', `'name' must be a non-empty string of at most ${maxNameChars} characters.`, 'name');
  }
  return name.trim();
}

function checkDescription(value: unknown): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || value.length > maxDescriptionChars) {
    throw invalid('invalid_parameter', `'description' must be a string of at most ${maxDescriptionChars} characters, or null.`, 'description');
  }
  return value.trim() === '' ? null : value.trim();
}

const nameTaken = (name: string) => new AppError('conflict_error', 'price_book_name_taken', `A price book named '${name}' already exists.`, { param: 'name' });

// Operator settings: a small key-value table (JSON values), read through a cache that a write
// refreshes. No business rule lives here; callers own the meaning of each key.
import type { Kysely } from 'kysely';
import type { Database } from './schema.ts';

export async function getSetting<T>(db: Kysely<Database>, key: string): Promise<T | undefined> {
  const row = await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
  return row ? (JSON.parse(row.value) as T) : undefined;
}

export async function getAllSettings(db: Kysely<Database>): Promise<Record<string, unknown>> {
  const rows = await db.selectFrom('settings').select(['key', 'value']).execute();
  return Object.fromEntries(rows.map((r) => [r.key, JSON.parse(r.value)]));
}

export async function putSetting(db: Kysely<Database>, key: string, value: unknown, nowMs = Date.now()): Promise<void> {
  await db
    .insertInto('settings')
    .values({ key, value: JSON.stringify(value), updated_at: nowMs })
    .onConflict((oc) => oc.column('key').doUpdateSet({ value: JSON.stringify(value), updated_at: nowMs }))
    .execute();
}

/** Stores the value only if the key is absent; returns whether this call stored it. */
export async function putSettingIfAbsent(db: Kysely<Database>, key: string, value: unknown, nowMs = Date.now()): Promise<boolean> {
  const res = await db
    .insertInto('settings')
    .values({ key, value: JSON.stringify(value), updated_at: nowMs })
    .onConflict((oc) => oc.column('key').doNothing())
    .executeTakeFirst();
  return Number(res.numInsertedOrUpdatedRows ?? 0n) === 1;
}

// A hold remembers how it ended, so a replay answers as the first call did: whether its settlement
// came after the sweeper had expired it (late), and why a refused hold was refused.
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('holds').addColumn('settled_late', 'integer', (c) => c.notNull().defaultTo(0)).execute();
  // JSON: { reason: 'budget_exceeded', budget: { keyId, period, limitMicros } }; null for any other hold.
  await db.schema.alterTable('holds').addColumn('rejection', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('holds').dropColumn('rejection').execute();
  await db.schema.alterTable('holds').dropColumn('settled_late').execute();
}

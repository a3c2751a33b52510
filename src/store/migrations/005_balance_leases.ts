// Balance leases (src/ledger/leases.ts): a hold is either one call's reservation or an instance's
// lease that many calls are admitted against in memory. A leased call's usage transfer names the
// call's own hold id, which no holds row has, so the database itself now makes sure that any hold
// id is settled by at most one transfer. The lot burn order gets an index that returns lots
// already sorted, and a lot's index entry no longer moves each time a debit takes from it.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('holds').addColumn('kind', 'text', (c) => c.notNull().defaultTo('call')).execute();
  await db.schema.dropIndex('transfers_hold').execute();
  await sql`create unique index transfers_hold_once on transfers (hold_id) where hold_id is not null`.execute(db);
  await db.schema.dropIndex('lots_account_burn').execute();
  await sql`create index lots_burn_order on lots (account_id, priority, (expires_at is null), expires_at, created_at, id) where remaining_micros > 0`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('lots_burn_order').execute();
  await db.schema.createIndex('lots_account_burn').on('lots').columns(['account_id', 'remaining_micros']).execute();
  await db.schema.dropIndex('transfers_hold_once').execute();
  await db.schema.createIndex('transfers_hold').on('transfers').column('hold_id').execute();
  await db.schema.alterTable('holds').dropColumn('kind').execute();
}

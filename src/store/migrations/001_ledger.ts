// The foundation: settings, workspaces and the double-entry credit ledger.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('settings')
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('workspaces')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('active'))
    .addColumn('metadata', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('accounts')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('workspace_id', 'text', (c) => c.references('workspaces.id'))
    .addColumn('code', 'text', (c) => c.notNull())
    .addColumn('credits_posted', 'bigint', (c) => c.notNull().defaultTo(0).check(sql`credits_posted >= 0`))
    .addColumn('debits_posted', 'bigint', (c) => c.notNull().defaultTo(0).check(sql`debits_posted >= 0`))
    .addColumn('debits_pending', 'bigint', (c) => c.notNull().defaultTo(0).check(sql`debits_pending >= 0`))
    .addColumn('overdraft_limit_micros', 'bigint', (c) => c.notNull().defaultTo(0).check(sql`overdraft_limit_micros >= 0`))
    .addColumn('warning_limit_micros', 'bigint')
    .addColumn('purchased_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('consumed_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('expired_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('accounts_workspace').on('accounts').columns(['workspace_id', 'code']).unique().execute();

  await db.schema
    .createTable('transfers')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('debit_account_id', 'text', (c) => c.notNull().references('accounts.id'))
    .addColumn('credit_account_id', 'text', (c) => c.notNull().references('accounts.id'))
    .addColumn('amount_micros', 'bigint', (c) => c.notNull().check(sql`amount_micros > 0`))
    .addColumn('workspace_id', 'text')
    .addColumn('hold_id', 'text')
    .addColumn('lot_id', 'text')
    .addColumn('model', 'text')
    .addColumn('tag', 'text')
    .addColumn('ref', 'text')
    .addColumn('note', 'text')
    .addColumn('balance_after_micros', 'bigint')
    .addColumn('overdrawn_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addCheckConstraint('transfers_two_accounts', sql`debit_account_id <> credit_account_id`)
    .execute();
  await db.schema.createIndex('transfers_workspace_time').on('transfers').columns(['workspace_id', 'created_at']).execute();
  await db.schema.createIndex('transfers_workspace_id').on('transfers').columns(['workspace_id', 'id']).execute();
  await db.schema.createIndex('transfers_hold').on('transfers').column('hold_id').execute();

  await db.schema
    .createTable('lots')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id'))
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id'))
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('amount_micros', 'bigint', (c) => c.notNull().check(sql`amount_micros > 0`))
    .addColumn('remaining_micros', 'bigint', (c) => c.notNull().check(sql`remaining_micros >= 0`))
    .addColumn('repaid_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('priority', 'integer', (c) => c.notNull())
    .addColumn('effective_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint')
    .addColumn('expired_at', 'bigint')
    .addColumn('transfer_id', 'text', (c) => c.notNull())
    .addColumn('note', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addCheckConstraint('lots_remaining_le_amount', sql`remaining_micros <= amount_micros`)
    .execute();
  await db.schema.createIndex('lots_account_burn').on('lots').columns(['account_id', 'remaining_micros']).execute();
  await db.schema.createIndex('lots_expiry').on('lots').columns(['expires_at']).where(sql.ref('expired_at'), 'is', null).execute();

  await db.schema
    .createTable('lot_consumptions')
    .addColumn('transfer_id', 'text', (c) => c.notNull())
    .addColumn('lot_id', 'text', (c) => c.notNull())
    .addColumn('amount_micros', 'bigint', (c) => c.notNull().check(sql`amount_micros > 0`))
    .addPrimaryKeyConstraint('lot_consumptions_pk', ['transfer_id', 'lot_id'])
    .execute();
  await db.schema.createIndex('lot_consumptions_lot').on('lot_consumptions').column('lot_id').execute();

  await db.schema
    .createTable('holds')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id'))
    .addColumn('workspace_id', 'text', (c) => c.notNull())
    .addColumn('amount_micros', 'bigint', (c) => c.notNull().check(sql`amount_micros >= 0`))
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('idempotency_key', 'text', (c) => c.notNull().unique())
    .addColumn('ref', 'text')
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('settled_micros', 'bigint')
    .addColumn('transfer_id', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('resolved_at', 'bigint')
    .execute();
  await db.schema.createIndex('holds_pending_expiry').on('holds').columns(['status', 'expires_at']).execute();
  await db.schema.createIndex('holds_account').on('holds').columns(['account_id', 'status']).execute();

  await db.schema
    .createTable('idempotency_keys')
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('request_hash', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('response', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('idempotency_keys_pk', ['scope', 'key'])
    .execute();

  await db.schema
    .createTable('outbox')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('topic', 'text', (c) => c.notNull())
    .addColumn('workspace_id', 'text')
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('delivered_at', 'bigint')
    .execute();
  await db.schema.createIndex('outbox_undelivered').on('outbox').columns(['delivered_at', 'created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['outbox', 'idempotency_keys', 'holds', 'lot_consumptions', 'lots', 'transfers', 'accounts', 'workspaces', 'settings']) {
    await db.schema.dropTable(t).execute();
  }
}

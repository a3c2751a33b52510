// Routing, policy and limits: model aliases and routing strategy, workspace policies and price
// books, per-key budgets and rate limits with their spend counters, and opt-in prompt logs.
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('models').addColumn('alias_of', 'text').execute();
  await db.schema.alterTable('models').addColumn('routing_strategy', 'text', (c) => c.notNull().defaultTo('weighted')).execute();

  await db.schema.alterTable('workspaces').addColumn('price_book_id', 'text').execute();
  await db.schema.alterTable('workspaces').addColumn('policy', 'text', (c) => c.notNull().defaultTo('{}')).execute();
  await db.schema.alterTable('workspaces').addColumn('key_defaults', 'text', (c) => c.notNull().defaultTo('{}')).execute();

  await db.schema.alterTable('api_keys').addColumn('budget_period', 'text').execute();
  await db.schema.alterTable('api_keys').addColumn('budget_micros', 'bigint').execute();
  await db.schema.alterTable('api_keys').addColumn('rpm', 'integer').execute();
  await db.schema.alterTable('api_keys').addColumn('tpm', 'integer').execute();
  await db.schema.alterTable('api_keys').addColumn('spend_micros', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
  await db.schema.alterTable('api_keys').addColumn('requests', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
  await db.schema.alterTable('api_keys').addColumn('last_used_at', 'bigint').execute();

  await db.schema.alterTable('holds').addColumn('budget_ids', 'text').execute();

  // Spend of one key in one budget period; a hold reserves against it like against the balance.
  await db.schema
    .createTable('budget_counters')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('period', 'text', (c) => c.notNull())
    .addColumn('period_start', 'bigint', (c) => c.notNull())
    .addColumn('posted_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('pending_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('budget_counters_key').on('budget_counters').columns(['key_id', 'period', 'period_start']).execute();

  await db.schema
    .createTable('price_books')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('description', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('request_logs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('workspace_id', 'text', (c) => c.notNull())
    .addColumn('request_body', 'text', (c) => c.notNull())
    .addColumn('response_body', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('request_logs_expiry').on('request_logs').column('expires_at').execute();
  await db.schema.createIndex('request_logs_workspace').on('request_logs').columns(['workspace_id', 'created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['request_logs', 'price_books', 'budget_counters']) await db.schema.dropTable(t).execute();
}

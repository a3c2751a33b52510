// The gateway's configuration and records: providers and their encrypted credentials, models with
// routes and versioned rates, customer API keys (stored hashed), and one usage record per request.
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('providers')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('base_url', 'text')
    .addColumn('api_version', 'text')
    .addColumn('regions', 'text', (c) => c.notNull().defaultTo('["global"]'))
    .addColumn('retention', 'text', (c) => c.notNull().defaultTo('standard'))
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('active'))
    .addColumn('resale', 'text', (c) => c.notNull().defaultTo('approved'))
    .addColumn('sla', 'text')
    .addColumn('support_owner', 'text')
    .addColumn('notes', 'text')
    .addColumn('timeout_ms', 'integer', (c) => c.notNull().defaultTo(60_000))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('provider_credentials')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('provider_id', 'text', (c) => c.notNull().references('providers.id').onDelete('cascade'))
    .addColumn('label', 'text', (c) => c.notNull())
    .addColumn('secret_enc', 'text', (c) => c.notNull())
    .addColumn('key_hint', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('active'))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('provider_credentials_provider').on('provider_credentials').column('provider_id').execute();

  await db.schema
    .createTable('models')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('workload', 'text', (c) => c.notNull())
    .addColumn('description', 'text')
    .addColumn('max_output_tokens', 'integer')
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('active'))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('model_routes')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('model_id', 'text', (c) => c.notNull().references('models.id').onDelete('cascade'))
    .addColumn('provider_id', 'text', (c) => c.notNull().references('providers.id'))
    .addColumn('upstream_model', 'text', (c) => c.notNull())
    .addColumn('priority', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('weight', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('region', 'text')
    .addColumn('cost', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('model_routes_model').on('model_routes').column('model_id').execute();

  await db.schema
    .createTable('model_rates')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('model_id', 'text', (c) => c.notNull().references('models.id').onDelete('cascade'))
    .addColumn('price_book_id', 'text')
    .addColumn('effective_at', 'bigint', (c) => c.notNull())
    .addColumn('rates', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('model_rates_model').on('model_rates').columns(['model_id', 'effective_at']).execute();

  await db.schema
    .createTable('api_keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('prefix', 'text', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull().unique())
    .addColumn('scopes', 'text', (c) => c.notNull())
    .addColumn('models', 'text')
    .addColumn('metadata', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('active'))
    .addColumn('expires_at', 'bigint')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('revoked_at', 'bigint')
    .execute();
  await db.schema.createIndex('api_keys_workspace').on('api_keys').columns(['workspace_id', 'id']).execute();

  await db.schema
    .createTable('usage_records')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('workspace_id', 'text', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('endpoint', 'text', (c) => c.notNull())
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('provider_id', 'text')
    .addColumn('upstream_model', 'text')
    .addColumn('route_id', 'text')
    .addColumn('rate_id', 'text')
    .addColumn('input_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('cached_input_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('output_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('reasoning_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('images', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('estimated', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('cost_nanos', 'bigint')
    .addColumn('cost_currency', 'text')
    .addColumn('charge_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('margin_nanos', 'bigint')
    .addColumn('balance_after_micros', 'bigint')
    .addColumn('hold_id', 'text')
    .addColumn('transfer_id', 'text')
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('error_code', 'text')
    .addColumn('stream', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('latency_ms', 'integer')
    .addColumn('ttfb_ms', 'integer')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('route_summary', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('usage_workspace_time').on('usage_records').columns(['workspace_id', 'created_at']).execute();
  await db.schema.createIndex('usage_key_time').on('usage_records').columns(['key_id', 'created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['usage_records', 'api_keys', 'model_rates', 'model_routes', 'models', 'provider_credentials', 'providers']) {
    await db.schema.dropTable(t).execute();
  }
}

// Row types of every table, shared by both engines. 64-bit columns come back as BigInt from both
// (SQLite safe integers, a pg int8 parser); small integer columns may be number or BigInt, so code
// reads every integer through toBigInt or Number and never trusts the runtime type.
import type { ColumnType, Generated } from 'kysely';

export type Int = ColumnType<bigint, bigint | number, bigint | number>;
export type NullableInt = ColumnType<bigint | null, bigint | number | null, bigint | number | null>;
export type SmallInt = ColumnType<number | bigint, number, number>;

export interface SettingsTable {
  key: string;
  value: string;
  updated_at: Int;
}

export interface WorkspacesTable {
  id: string;
  name: string;
  status: string;
  metadata: string;
  price_book_id: string | null;
  policy: Generated<string>;
  key_defaults: Generated<string>;
  created_at: Int;
  updated_at: Int;
}

export interface AccountsTable {
  id: string;
  workspace_id: string | null;
  code: string;
  credits_posted: Int;
  debits_posted: Int;
  debits_pending: Int;
  overdraft_limit_micros: Int;
  warning_limit_micros: NullableInt;
  purchased_micros: Int;
  consumed_micros: Int;
  expired_micros: Int;
  created_at: Int;
}

export interface TransfersTable {
  id: string;
  kind: string;
  debit_account_id: string;
  credit_account_id: string;
  amount_micros: Int;
  workspace_id: string | null;
  hold_id: string | null;
  lot_id: string | null;
  model: string | null;
  tag: string | null;
  ref: string | null;
  note: string | null;
  balance_after_micros: NullableInt;
  overdrawn_micros: Int;
  created_at: Int;
}

export interface LotsTable {
  id: string;
  workspace_id: string;
  account_id: string;
  source: string;
  amount_micros: Int;
  remaining_micros: Int;
  repaid_micros: Int;
  priority: SmallInt;
  effective_at: Int;
  expires_at: NullableInt;
  expired_at: NullableInt;
  transfer_id: string;
  note: string | null;
  created_at: Int;
}

export interface LotConsumptionsTable {
  transfer_id: string;
  lot_id: string;
  amount_micros: Int;
}

export interface HoldsTable {
  id: string;
  account_id: string;
  workspace_id: string;
  amount_micros: Int;
  status: string;
  idempotency_key: string;
  ref: string | null;
  expires_at: Int;
  settled_micros: NullableInt;
  transfer_id: string | null;
  created_at: Int;
  resolved_at: NullableInt;
  budget_ids: string | null;
  settled_late: ColumnType<number, number | undefined, number>;
  rejection: string | null;
  /** 'call': one call's reservation; 'lease': an instance's balance lease (src/ledger/leases.ts). */
  kind: ColumnType<string, string | undefined, string>;
}

export interface IdempotencyKeysTable {
  scope: string;
  key: string;
  request_hash: string;
  status: string;
  response: string;
  created_at: Int;
}

export interface OutboxTable {
  id: string;
  topic: string;
  workspace_id: string | null;
  payload: string;
  created_at: Int;
  delivered_at: NullableInt;
}

export interface Database extends GatewayTables {
  settings: SettingsTable;
  workspaces: WorkspacesTable;
  accounts: AccountsTable;
  transfers: TransfersTable;
  lots: LotsTable;
  lot_consumptions: LotConsumptionsTable;
  holds: HoldsTable;
  idempotency_keys: IdempotencyKeysTable;
  outbox: OutboxTable;
}

export type { Generated };

export interface ProvidersTable {
  id: string;
  name: string;
  type: string;
  base_url: string | null;
  api_version: string | null;
  regions: string;
  retention: string;
  status: string;
  resale: string;
  sla: string | null;
  support_owner: string | null;
  notes: string | null;
  timeout_ms: SmallInt;
  created_at: Int;
  updated_at: Int;
}

export interface ProviderCredentialsTable {
  id: string;
  provider_id: string;
  label: string;
  secret_enc: string;
  key_hint: string;
  status: string;
  created_at: Int;
}

export interface ModelsTable {
  id: string;
  name: string;
  workload: string;
  description: string | null;
  max_output_tokens: SmallInt | null;
  status: string;
  alias_of: string | null;
  routing_strategy: Generated<string>;
  created_at: Int;
  updated_at: Int;
}

export interface ModelRoutesTable {
  id: string;
  model_id: string;
  provider_id: string;
  upstream_model: string;
  priority: SmallInt;
  weight: SmallInt;
  region: string | null;
  cost: string | null;
  created_at: Int;
}

export interface ModelRatesTable {
  id: string;
  model_id: string;
  price_book_id: string | null;
  effective_at: Int;
  rates: string;
  created_at: Int;
}

export interface ApiKeysTable {
  id: string;
  workspace_id: string;
  name: string;
  prefix: string;
  hash: string;
  scopes: string;
  models: string | null;
  metadata: string;
  status: string;
  expires_at: NullableInt;
  created_at: Int;
  revoked_at: NullableInt;
  budget_period: string | null;
  budget_micros: NullableInt;
  rpm: SmallInt | null;
  tpm: SmallInt | null;
  spend_micros: ColumnType<bigint, bigint | number | undefined, bigint | number>;
  requests: ColumnType<bigint, bigint | number | undefined, bigint | number>;
  last_used_at: NullableInt;
}

export interface UsageRecordsTable {
  id: string;
  workspace_id: string;
  key_id: string;
  endpoint: string;
  model: string;
  provider_id: string | null;
  upstream_model: string | null;
  route_id: string | null;
  rate_id: string | null;
  input_tokens: Int;
  cached_input_tokens: Int;
  output_tokens: Int;
  reasoning_tokens: Int;
  images: Int;
  estimated: SmallInt;
  cost_nanos: NullableInt;
  cost_currency: string | null;
  charge_micros: Int;
  margin_nanos: NullableInt;
  balance_after_micros: NullableInt;
  hold_id: string | null;
  transfer_id: string | null;
  status: string;
  error_code: string | null;
  stream: SmallInt;
  latency_ms: SmallInt | null;
  ttfb_ms: SmallInt | null;
  attempts: SmallInt;
  route_summary: string | null;
  created_at: Int;
}

export interface BudgetCountersTable {
  id: string;
  key_id: string;
  period: string;
  period_start: Int;
  posted_micros: Int;
  pending_micros: Int;
  created_at: Int;
}

export interface PriceBooksTable {
  id: string;
  name: string;
  description: string | null;
  created_at: Int;
}

export interface RequestLogsTable {
  id: string;
  workspace_id: string;
  request_body: string;
  response_body: string | null;
  created_at: Int;
  expires_at: Int;
}

export interface GatewayTables {
  budget_counters: BudgetCountersTable;
  price_books: PriceBooksTable;
  request_logs: RequestLogsTable;
  providers: ProvidersTable;
  provider_credentials: ProviderCredentialsTable;
  models: ModelsTable;
  model_routes: ModelRoutesTable;
  model_rates: ModelRatesTable;
  api_keys: ApiKeysTable;
  usage_records: UsageRecordsTable;
}

// Shared setup for the gateway's end-to-end suites, all through the real admin API: a provider
// pointing at a mock upstream, a model with rates, a workspace with credits and a customer key.
// Also the tests' own arithmetic (the expected charge of a usage, computed here independently of
// src/pricing) and readers for balances and usage records.
import { expect } from 'vitest';
import type { TestServer } from './server.ts';
import { LeasedLedger } from '../../src/ledger/leases.ts';

/** What the setup helpers need: the admin API of a server (in this process or another). */
export type AdminApi = Pick<TestServer, 'admin'>;

/** Credits per 1M tokens with fractional micro-credits per token, so the rounding rule matters. */
export const fractionalRates = { inputPer1M: '2.5000003', cachedInputPer1M: '1.2500001', outputPer1M: '10.0000007' } as const;

export type Rates = Partial<Record<'inputPer1M' | 'cachedInputPer1M' | 'outputPer1M' | 'reasoningPer1M' | 'perImage' | 'perRequest', string>>;

export interface ProviderSpec {
  type: 'openai' | 'openai-compatible' | 'anthropic' | 'gemini' | 'azure-openai' | 'sandbox';
  baseUrl?: string;
  apiKey?: string;
  apiVersion?: string;
  timeoutMs?: number;
  name?: string;
}

let serial = 0;
const unique = (prefix: string) => `${prefix}-${process.pid}-${++serial}`;

export async function addProvider(s: AdminApi, spec: ProviderSpec): Promise<{ id: string; [k: string]: unknown }> {
  const { name, ...rest } = spec;
  const r = await s.admin('POST', '/api/admin/providers', { name: name ?? unique(spec.type), ...rest });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

export interface ModelSpec {
  name?: string;
  workload?: 'text' | 'embedding' | 'image' | 'coding';
  providerId: string;
  upstreamModel: string;
  rates?: Rates | null;
  maxOutputTokens?: number | null;
}

export async function addModel(s: AdminApi, spec: ModelSpec): Promise<{ id: string; name: string; [k: string]: unknown }> {
  const body: Record<string, unknown> = {
    name: spec.name ?? unique('model'),
    workload: spec.workload ?? 'text',
    routes: [{ providerId: spec.providerId, upstreamModel: spec.upstreamModel }],
  };
  if (spec.rates !== null) body.rates = spec.rates ?? fractionalRates;
  if (spec.maxOutputTokens !== undefined) body.maxOutputTokens = spec.maxOutputTokens;
  const r = await s.admin('POST', '/api/admin/models', body);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

/** A workspace, with `credits` granted when given (a decimal string). */
export async function addWorkspace(s: AdminApi, credits?: string): Promise<string> {
  const r = await s.admin('POST', '/api/admin/workspaces', { name: unique('ws') });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  if (credits !== undefined) await grant(s, r.body.id, credits);
  return r.body.id;
}

export async function grant(s: AdminApi, workspaceId: string, credits: string): Promise<void> {
  const g = await s.admin('POST', `/api/admin/workspaces/${workspaceId}/grants`, { credits });
  expect(g.status, JSON.stringify(g.body)).toBe(201);
}

export interface KeySpec {
  scopes?: string[];
  models?: string[] | null;
  rpm?: number | null;
  tpm?: number | null;
}

export async function addKey(s: AdminApi, workspaceId: string, spec: KeySpec = {}): Promise<{ id: string; key: string }> {
  const r = await s.admin('POST', `/api/admin/workspaces/${workspaceId}/keys`, { name: unique('key'), ...spec });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return { id: r.body.id, key: r.body.key };
}

export interface GatewaySetup {
  providerId: string;
  modelId: string;
  model: string;
  workspaceId: string;
  apiKey: string;
  keyId: string;
}

/** Provider → model with rates → workspace with credits → key: the whole path a call needs. */
export async function setupGateway(
  s: TestServer,
  opts: {
    provider: ProviderSpec;
    upstreamModel: string;
    model?: Omit<ModelSpec, 'providerId' | 'upstreamModel'>;
    credits?: string;
    key?: KeySpec;
    providerId?: string;
  },
): Promise<GatewaySetup> {
  const providerId = opts.providerId ?? (await addProvider(s, opts.provider)).id;
  const model = await addModel(s, { ...opts.model, providerId, upstreamModel: opts.upstreamModel });
  const workspaceId = await addWorkspace(s, opts.credits ?? '100');
  const key = await addKey(s, workspaceId, opts.key);
  return { providerId, modelId: model.id, model: model.name, workspaceId, apiKey: key.key, keyId: key.id };
}

// ---------------------------------------------------------------------------------------------
// Money, computed by the tests themselves

/** "12.5" → 12_500_000n micro-credits. */
export function micros(credits: string): bigint {
  const m = /^(-)?(\d+)(?:\.(\d{1,6}))?$/.exec(credits);
  if (!m) throw new Error(`not a credit amount: ${credits}`);
  const value = BigInt(m[2]) * 1_000_000n + BigInt((m[3] ?? '').padEnd(6, '0'));
  return m[1] ? -value : value;
}

/** 12_500_000n → "12.5", the way the API writes credits. */
export function credits(value: bigint): string {
  const neg = value < 0n;
  const abs = neg ? -value : value;
  const frac = (abs % 1_000_000n).toString().padStart(6, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${abs / 1_000_000n}${frac ? `.${frac}` : ''}`;
}

export interface TokenUsage {
  input: number; // excluding cached
  cached?: number;
  output: number; // including reasoning
  reasoning?: number;
  images?: number;
}

/** A decimal string as a fraction over 10^18 (enough digits for any rate the API accepts). */
function e18(rate: string | undefined): bigint {
  if (rate === undefined) return 0n;
  const [whole, frac = ''] = rate.split('.');
  return BigInt(whole) * 10n ** 18n + BigInt(frac.padEnd(18, '0'));
}

/**
 * The charge in micro-credits: the exact sum over the call's units, rounded up to the next micro
 * once per call. A per-1M-token rate in credits is the per-token rate in micros.
 */
export function expectedCharge(rates: Rates, u: TokenUsage): bigint {
  const exact = exactCharge(rates, u);
  const one = 10n ** 18n;
  return (exact + one - 1n) / one;
}

/** The exact charge in micro-credits × 10^18 (before rounding). */
export function exactCharge(rates: Rates, u: TokenUsage): bigint {
  const reasoning = u.reasoning ?? 0;
  const visible = Math.max(u.output - reasoning, 0);
  const cachedRate = rates.cachedInputPer1M ?? rates.inputPer1M;
  const reasoningRate = rates.reasoningPer1M ?? rates.outputPer1M;
  return (
    BigInt(u.input) * e18(rates.inputPer1M) +
    BigInt(u.cached ?? 0) * e18(cachedRate) +
    BigInt(visible) * e18(rates.outputPer1M) +
    BigInt(reasoning) * e18(reasoningRate) +
    BigInt(u.images ?? 0) * e18(rates.perImage) * 1_000_000n +
    e18(rates.perRequest) * 1_000_000n
  );
}

/** The most output tokens `availableMicros` pays for after `inputTokens` of input (floor; 0 when it cannot pay the input). */
export function affordableOutput(rates: Rates, inputTokens: number, availableMicros: bigint): number {
  const budget = availableMicros * 10n ** 18n - BigInt(inputTokens) * e18(rates.inputPer1M);
  return budget <= 0n ? 0 : Number(budget / e18(rates.outputPer1M));
}

// ---------------------------------------------------------------------------------------------
// Reading what happened

export interface Balance {
  available: bigint;
  balance: bigint;
  pending: bigint;
  consumed: bigint;
  totalGranted: bigint;
}

export async function balanceOf(s: TestServer, workspaceId: string): Promise<Balance> {
  const r = await s.admin('GET', `/api/admin/workspaces/${workspaceId}/balance`);
  expect(r.status).toBe(200);
  return {
    available: micros(r.body.available),
    balance: micros(r.body.balance),
    pending: micros(r.body.pending),
    consumed: micros(r.body.consumed),
    totalGranted: micros(r.body.totalGranted),
  };
}

export interface UsageRow {
  id: string;
  workspace_id: string;
  key_id: string;
  endpoint: string;
  model: string;
  provider_id: string | null;
  upstream_model: string | null;
  input_tokens: number;
  cached_input_tokens: number;
  output_tokens: number;
  reasoning_tokens: number;
  images: number;
  estimated: number;
  charge_micros: bigint;
  status: string;
  error_code: string | null;
  stream: number;
  hold_id: string | null;
  transfer_id: string | null;
  [column: string]: unknown;
}

function normalise(row: Record<string, unknown>): UsageRow {
  const n = (k: string) => Number(row[k]);
  return {
    ...row,
    input_tokens: n('input_tokens'),
    cached_input_tokens: n('cached_input_tokens'),
    output_tokens: n('output_tokens'),
    reasoning_tokens: n('reasoning_tokens'),
    images: n('images'),
    estimated: n('estimated'),
    stream: n('stream'),
    charge_micros: BigInt(row.charge_micros as bigint | number | string),
  } as UsageRow;
}

/**
 * The store, once this server's settlements of answered calls have committed: a call is answered
 * before its settlement commits, and the server's own reads wait for them as this does.
 */
export async function settledDb(s: TestServer): Promise<TestServer['running']['ctx']['store']['db']> {
  await s.running.ctx.settlements.settled();
  return s.running.ctx.store.db;
}

export async function usageRecord(s: TestServer, requestId: string): Promise<UsageRow | undefined> {
  const row = await (await settledDb(s)).selectFrom('usage_records').selectAll().where('id', '=', requestId).executeTakeFirst();
  return row ? normalise(row as unknown as Record<string, unknown>) : undefined;
}

/** Waits until the request's usage record is written (streams settle after their last byte). */
export async function settledUsage(s: TestServer, requestId: string): Promise<UsageRow> {
  for (let i = 0; i < 500; i++) {
    const row = await usageRecord(s, requestId);
    if (row) return row;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no usage record for ${requestId}`);
}

export async function usageRecords(s: TestServer, workspaceId: string): Promise<UsageRow[]> {
  const rows = await (await settledDb(s)).selectFrom('usage_records').selectAll().where('workspace_id', '=', workspaceId).orderBy('id').execute();
  return rows.map((r) => normalise(r as unknown as Record<string, unknown>));
}

/**
 * The holds the workspace's usage transfers settled, one transfer each (the database allows no
 * second): a held call's own holds row, or the id a call admitted against a balance lease got.
 */
export async function settledHoldIds(s: TestServer, workspaceId: string): Promise<string[]> {
  const rows = await (await settledDb(s)).selectFrom('transfers').select('hold_id').where('workspace_id', '=', workspaceId).where('kind', '=', 'usage').execute();
  return rows.map((r) => r.hold_id!);
}

/** Sum of the workspace's usage transfers (what was debited for calls), from the ledger itself. */
export async function usageTransfersTotal(s: TestServer, workspaceId: string): Promise<bigint> {
  const rows = await (await settledDb(s)).selectFrom('transfers').select('amount_micros').where('workspace_id', '=', workspaceId).where('kind', '=', 'usage').execute();
  return rows.reduce((sum, r) => sum + BigInt(r.amount_micros as bigint | number | string), 0n);
}

/**
 * Calls of the workspace still holding credits: pending call holds straight from the holds table,
 * plus calls admitted against this server's balance lease and not yet settled or voided.
 */
export async function pendingHolds(s: TestServer, workspaceId: string): Promise<number> {
  const rows = await (await settledDb(s))
    .selectFrom('holds')
    .select('id')
    .where('workspace_id', '=', workspaceId)
    .where('status', '=', 'pending')
    .where('kind', '=', 'call')
    .execute();
  const ledger = s.running.ctx.ledger;
  const leased = ledger instanceof LeasedLedger ? ledger.leasedCallsInFlight(workspaceId) : 0;
  return rows.length + leased;
}

/** Every column of every row, as text: for proving that no prompt or completion text is stored. */
export function rowText(row: Record<string, unknown>): string {
  return Object.values(row)
    .map((v) => (v === null || v === undefined ? '' : String(v)))
    .join('\u0001');
}

/** Waits until `check` holds, polling (for effects that follow a response, never as a timing assertion). */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, tries = 1000): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

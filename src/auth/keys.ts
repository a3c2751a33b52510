// Customer API keys: created per workspace and shown once (`tg_live_` + 32 random base62
// characters), stored only as their SHA-256 hash with a 12-character display prefix, listed,
// changed (name, scopes, models, expiry, metadata, limits) and revoked. KeyCache answers "whose
// key is this?" on the request path from memory.
import { randomBytes } from 'node:crypto';
import type { Kysely, Updateable } from 'kysely';
import { counterId, periodEnd, periodStart, type BudgetPeriod } from '../ledger/budgets.ts';
import { toBigInt } from '../ledger/money.ts';
import type { Database, ApiKeysTable } from '../store/schema.ts';
import { AppError, invalid, notFound } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import { sha256Hex } from '../lib/secrets.ts';
import { checkMetadata } from '../workspaces/workspaces.ts';
import { noLimits, type KeyLimits } from '../workspaces/policy.ts';
import { patchKeyLimits, type KeyLimitsPatch } from '../workspaces/key-limits.ts';
import { modelNamePattern } from '../routing/models.ts';
import { defaultKeyScopes, keyScopes, type ApiKeyEntry, type KeyScope } from '../routing/types.ts';

export const liveKeyPrefix = 'tg_live_';
const keySecretChars = 32;
const displayPrefixChars = 12;
export const maxActiveKeysPerWorkspace = 1000;
const maxKeyNameChars = 200;
const maxAllowedModels = 100;
const base62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** Anything shaped otherwise is refused before it is hashed or looked up. */
const tokenPattern = /^tg_[a-z]{1,16}_[A-Za-z0-9_-]{16,128}$/;

export type ApiKeyStatus = 'active' | 'revoked';

export interface ApiKey {
  id: string;
  workspaceId: string;
  name: string;
  prefix: string;
  scopes: KeyScope[];
  models: string[] | null;
  metadata: Record<string, string>;
  status: ApiKeyStatus;
  expiresAt: number | null;
  createdAt: number;
  revokedAt: number | null;
  /** The key's own limits; a null field falls back to the workspace's key defaults. */
  limits: KeyLimits;
  spendMicros: bigint;
  requests: number;
  lastUsedAt: number | null;
}

export interface ApiKeyInput extends KeyLimitsPatch {
  name: string;
  scopes?: string[];
  /** null or absent: every model. */
  models?: string[] | null;
  expiresAtMs?: number | null;
  metadata?: Record<string, string>;
}

/** An absent field keeps its value. */
export interface ApiKeyPatch extends KeyLimitsPatch {
  name?: string;
  scopes?: string[];
  models?: string[] | null;
  expiresAtMs?: number | null;
  metadata?: Record<string, string>;
}

/** Where a budgeted key stands in its current period (its own budget, or the workspace default). */
export interface BudgetUsage {
  period: BudgetPeriod;
  limitMicros: bigint;
  periodStart: number;
  /** null for a lifetime budget. */
  periodEnd: number | null;
  spentMicros: bigint;
  /** Held for calls in flight. */
  pendingMicros: bigint;
  remainingMicros: bigint;
}

/** Creates a key; `key` is the only time the secret exists outside the caller's hands. */
export async function createApiKey(db: Kysely<Database>, workspaceId: string, input: ApiKeyInput, nowMs = Date.now()): Promise<{ apiKey: ApiKey; key: string }> {
  const name = checkKeyName(input.name);
  const scopes = checkScopes(input.scopes ?? defaultKeyScopes);
  const models = input.models == null ? null : checkModels(input.models);
  const expiresAt = input.expiresAtMs ?? null;
  if (expiresAt !== null && expiresAt <= nowMs) throw invalid('invalid_expiry', "'expiresAt' must be in the future.", 'expiresAt');
  const metadata = checkMetadata(input.metadata ?? {});
  const limits = patchKeyLimits(noLimits, input);
  const key = liveKeyPrefix + randomBase62(keySecretChars);
  const row = {
    id: newId('key', nowMs),
    workspace_id: workspaceId,
    name,
    prefix: key.slice(0, displayPrefixChars),
    hash: sha256Hex(key),
    scopes: JSON.stringify(scopes),
    models: models === null ? null : JSON.stringify(models),
    metadata: JSON.stringify(metadata),
    status: 'active',
    expires_at: expiresAt,
    created_at: nowMs,
    revoked_at: null,
    ...limitColumns(limits),
  };
  await db.transaction().execute(async (tx) => {
    const workspace = await tx.selectFrom('workspaces').select('id').where('id', '=', workspaceId).executeTakeFirst();
    if (!workspace) throw notFound('workspace', workspaceId);
    const { n } = await tx
      .selectFrom('api_keys')
      .select((eb) => eb.fn.countAll<number | bigint | string>().as('n'))
      .where('workspace_id', '=', workspaceId)
      .where('status', '=', 'active')
      .executeTakeFirstOrThrow();
    if (Number(n) >= maxActiveKeysPerWorkspace) {
      throw new AppError('invalid_request_error', 'key_limit_reached', `A workspace holds at most ${maxActiveKeysPerWorkspace} active keys; revoke one first.`);
    }
    await tx.insertInto('api_keys').values(row).execute();
  });
  return { apiKey: toApiKey({ ...row, spend_micros: 0n, requests: 0n, last_used_at: null }), key };
}

export async function getApiKey(db: Kysely<Database>, workspaceId: string, keyId: string): Promise<ApiKey> {
  const row = await db.selectFrom('api_keys').selectAll().where('id', '=', keyId).where('workspace_id', '=', workspaceId).executeTakeFirst();
  if (!row) throw notFound('api_key', keyId);
  return toApiKey(row);
}

/** Newest first; `nextCursor` is the id to pass as `cursor` for the next page. */
export async function listApiKeys(
  db: Kysely<Database>,
  workspaceId: string,
  page: { cursor?: string; limit: number; status?: string },
): Promise<{ data: ApiKey[]; nextCursor: string | null }> {
  const workspace = await db.selectFrom('workspaces').select('id').where('id', '=', workspaceId).executeTakeFirst();
  if (!workspace) throw notFound('workspace', workspaceId);
  let q = db.selectFrom('api_keys').selectAll().where('workspace_id', '=', workspaceId);
  if (page.cursor) q = q.where('id', '<', page.cursor);
  if (page.status) q = q.where('status', '=', page.status);
  const rows = await q.orderBy('id', 'desc').limit(page.limit + 1).execute();
  const data = rows.slice(0, page.limit).map(toApiKey);
  return { data, nextCursor: rows.length > page.limit ? data[data.length - 1].id : null };
}

/** Changes what the patch names and nothing else; a revoked key may still be renamed or re-tagged. */
export async function updateApiKey(db: Kysely<Database>, workspaceId: string, keyId: string, patch: ApiKeyPatch, nowMs = Date.now()): Promise<ApiKey> {
  const set: Updateable<ApiKeysTable> = {};
  if (patch.name !== undefined) set.name = checkKeyName(patch.name);
  if (patch.scopes !== undefined) set.scopes = JSON.stringify(checkScopes(patch.scopes));
  if (patch.models !== undefined) set.models = patch.models === null ? null : JSON.stringify(checkModels(patch.models));
  if (patch.expiresAtMs !== undefined) {
    if (patch.expiresAtMs !== null && patch.expiresAtMs <= nowMs) throw invalid('invalid_expiry', "'expiresAt' must be in the future.", 'expiresAt');
    set.expires_at = patch.expiresAtMs;
  }
  if (patch.metadata !== undefined) set.metadata = JSON.stringify(checkMetadata(patch.metadata));
  const touchesLimits = patch.budget !== undefined || patch.rpm !== undefined || patch.tpm !== undefined;
  // Checked before the transaction, so bad input writes nothing.
  if (touchesLimits) patchKeyLimits(noLimits, patch);
  await db.transaction().execute(async (tx) => {
    const row = await tx.selectFrom('api_keys').selectAll().where('id', '=', keyId).where('workspace_id', '=', workspaceId).executeTakeFirst();
    if (!row) throw notFound('api_key', keyId);
    if (touchesLimits) Object.assign(set, limitColumns(patchKeyLimits(toApiKey(row).limits, patch)));
    if (Object.keys(set).length > 0) await tx.updateTable('api_keys').set(set).where('id', '=', keyId).execute();
  });
  return getApiKey(db, workspaceId, keyId);
}

/**
 * The current period's spend of each budgeted key, from the ledger's budget counters; `defaults`
 * (the workspace's key defaults) supply the budget of keys without their own.
 */
export async function budgetUsageOf(db: Kysely<Database>, keys: ApiKey[], defaults: KeyLimits, nowMs = Date.now()): Promise<Map<string, BudgetUsage>> {
  const budgeted = keys.flatMap((k) => {
    const budget = k.limits.budget ?? defaults.budget;
    return budget ? [{ keyId: k.id, period: budget.period, limitMicros: budget.limitMicros }] : [];
  });
  const out = new Map<string, BudgetUsage>();
  if (budgeted.length === 0) return out;
  const ids = budgeted.map((b) => counterId(b, nowMs));
  const rows = await db.selectFrom('budget_counters').select(['id', 'posted_micros', 'pending_micros']).where('id', 'in', ids).execute();
  const byId = new Map(rows.map((r) => [r.id, r]));
  budgeted.forEach((b, i) => {
    const c = byId.get(ids[i]);
    const spentMicros = c ? toBigInt(c.posted_micros) : 0n;
    const pendingMicros = c ? toBigInt(c.pending_micros) : 0n;
    const remaining = b.limitMicros - spentMicros - pendingMicros;
    out.set(b.keyId, {
      period: b.period,
      limitMicros: b.limitMicros,
      periodStart: periodStart(b.period, nowMs),
      periodEnd: periodEnd(b.period, nowMs),
      spentMicros,
      pendingMicros,
      remainingMicros: remaining > 0n ? remaining : 0n,
    });
  });
  return out;
}

/** Revokes the key for good; revoking a revoked key changes nothing and returns it. */
export async function revokeApiKey(db: Kysely<Database>, workspaceId: string, keyId: string, nowMs = Date.now()): Promise<ApiKey> {
  await db
    .updateTable('api_keys')
    .set({ status: 'revoked', revoked_at: nowMs })
    .where('id', '=', keyId)
    .where('workspace_id', '=', workspaceId)
    .where('status', '=', 'active')
    .execute();
  return getApiKey(db, workspaceId, keyId);
}

export const keyCacheTtlMs = 30_000;
export const negativeKeyTtlMs = 5_000;
export const maxCachedKeys = 100_000;
export const maxCachedUnknownKeys = 10_000;

export interface KeyCacheOptions {
  /** How long a found key is served from memory; revocations by other processes show within it. */
  ttlMs?: number;
  /** How long an unknown key is remembered as unknown. */
  negativeTtlMs?: number;
  maxKeys?: number;
  maxUnknownKeys?: number;
  now?: () => number;
}

/**
 * Authenticates bearer tokens from memory. A key seen in the last `ttlMs` (30 s) costs no query;
 * otherwise one indexed lookup by hash, shared by concurrent callers. Unknown keys are remembered
 * for `negativeTtlMs` (5 s) in a bounded map, so a flood of bad keys costs at most one query per
 * distinct key per 5 s and cannot grow memory past `maxUnknownKeys`. Expired and revoked keys are
 * returned as they are: the gateway tells the caller which it was.
 */
export class KeyCache {
  readonly #db: Kysely<Database>;
  readonly #ttlMs: number;
  readonly #negativeTtlMs: number;
  readonly #maxKeys: number;
  readonly #maxUnknownKeys: number;
  readonly #now: () => number;
  readonly #found = new Map<string, { entry: ApiKeyEntry; freshUntilMs: number }>();
  readonly #unknown = new Map<string, number>();
  readonly #inflight = new Map<string, Promise<ApiKeyEntry | null>>();
  /** Bumped by invalidate(), so a lookup that began before it does not refill the cache. */
  #generation = 0;

  constructor(db: Kysely<Database>, opts: KeyCacheOptions = {}) {
    this.#db = db;
    this.#ttlMs = opts.ttlMs ?? keyCacheTtlMs;
    this.#negativeTtlMs = opts.negativeTtlMs ?? negativeKeyTtlMs;
    this.#maxKeys = opts.maxKeys ?? maxCachedKeys;
    this.#maxUnknownKeys = opts.maxUnknownKeys ?? maxCachedUnknownKeys;
    this.#now = opts.now ?? Date.now;
  }

  async authenticate(token: string): Promise<ApiKeyEntry | null> {
    if (!tokenPattern.test(token)) return null;
    const hash = sha256Hex(token);
    const nowMs = this.#now();
    const hit = this.#found.get(hash);
    if (hit && hit.freshUntilMs > nowMs) return hit.entry;
    const unknownUntil = this.#unknown.get(hash);
    if (unknownUntil !== undefined && unknownUntil > nowMs) return null;
    return this.#lookup(hash);
  }

  /** Forgets everything (a key was created, changed or revoked). */
  invalidate(): void {
    this.#generation++;
    this.#found.clear();
    this.#unknown.clear();
    this.#inflight.clear();
  }

  #lookup(hash: string): Promise<ApiKeyEntry | null> {
    const pending = this.#inflight.get(hash);
    if (pending) return pending;
    const generation = this.#generation;
    const promise = this.#load(hash).then(
      (entry) => {
        if (generation === this.#generation) this.#remember(hash, entry);
        if (this.#inflight.get(hash) === promise) this.#inflight.delete(hash);
        return entry;
      },
      (err: unknown) => {
        if (this.#inflight.get(hash) === promise) this.#inflight.delete(hash);
        throw err;
      },
    );
    this.#inflight.set(hash, promise);
    return promise;
  }

  async #load(hash: string): Promise<ApiKeyEntry | null> {
    const row = await this.#db
      .selectFrom('api_keys')
      .select(['id', 'workspace_id', 'name', 'scopes', 'models', 'metadata', 'status', 'expires_at', 'budget_period', 'budget_micros', 'rpm', 'tpm'])
      .where('hash', '=', hash)
      .executeTakeFirst();
    if (!row) return null;
    return {
      id: row.id,
      workspaceId: row.workspace_id,
      name: row.name,
      scopes: JSON.parse(row.scopes) as string[],
      models: row.models === null ? null : (JSON.parse(row.models) as string[]),
      status: row.status as ApiKeyEntry['status'],
      expiresAt: row.expires_at === null ? null : Number(row.expires_at),
      metadata: JSON.parse(row.metadata) as Record<string, string>,
      limits: {
        budget: row.budget_period && row.budget_micros !== null ? { period: row.budget_period as BudgetPeriod, limitMicros: BigInt(row.budget_micros) } : null,
        rpm: row.rpm === null ? null : Number(row.rpm),
        tpm: row.tpm === null ? null : Number(row.tpm),
      },
    };
  }

  #remember(hash: string, entry: ApiKeyEntry | null): void {
    const nowMs = this.#now();
    if (entry) {
      this.#unknown.delete(hash);
      setBounded(this.#found, hash, { entry, freshUntilMs: nowMs + this.#ttlMs }, this.#maxKeys);
    } else {
      this.#found.delete(hash);
      setBounded(this.#unknown, hash, nowMs + this.#negativeTtlMs, this.#maxUnknownKeys);
    }
  }
}

/** Inserts as the newest entry, evicting the oldest ones (Map keeps insertion order) past `max`. */
function setBounded<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  while (map.size >= max) map.delete(map.keys().next().value as string);
  map.set(key, value);
}

function randomBase62(chars: number): string {
  let out = '';
  while (out.length < chars) {
    for (const byte of randomBytes(chars * 2)) {
      // 248 = 4 × 62: rejecting bytes above it keeps every character equally likely.
      if (byte < 248) out += base62[byte % 62];
      if (out.length === chars) break;
    }
  }
  return out;
}

function toApiKey(row: { [K in keyof ApiKeysTable]: unknown }): ApiKey {
  return {
    id: row.id as string,
    workspaceId: row.workspace_id as string,
    name: row.name as string,
    prefix: row.prefix as string,
    scopes: JSON.parse(row.scopes as string) as KeyScope[],
    models: row.models === null ? null : (JSON.parse(row.models as string) as string[]),
    metadata: JSON.parse(row.metadata as string) as Record<string, string>,
    status: row.status as ApiKeyStatus,
    expiresAt: row.expires_at === null ? null : Number(row.expires_at),
    createdAt: Number(row.created_at),
    revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
    limits: {
      budget: row.budget_period && row.budget_micros !== null ? { period: row.budget_period as BudgetPeriod, limitMicros: toBigInt(row.budget_micros) } : null,
      rpm: row.rpm === null ? null : Number(row.rpm),
      tpm: row.tpm === null ? null : Number(row.tpm),
    },
    spendMicros: toBigInt(row.spend_micros),
    requests: Number(row.requests),
    lastUsedAt: row.last_used_at === null ? null : Number(row.last_used_at),
  };
}

function limitColumns(limits: KeyLimits) {
  return {
    budget_period: limits.budget?.period ?? null,
    budget_micros: limits.budget?.limitMicros ?? null,
    rpm: limits.rpm,
    tpm: limits.tpm,
  };
}

function checkKeyName(name: unknown): string {
  if (typeof name !== 'string' || name.trim().length === 0 || name.length > maxKeyNameChars) {
    throw invalid('invalid_name', `'name' must be a non-empty string of at most ${maxKeyNameChars} characters.`, 'name');
  }
  return name.trim();
}

function checkScopes(value: unknown): KeyScope[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw invalid('invalid_scopes', `'scopes' must be a non-empty array of ${keyScopes.join(', ')}.`, 'scopes');
  }
  value.forEach((s, i) => {
    if (!(keyScopes as readonly unknown[]).includes(s)) {
      throw invalid('invalid_scope', `Unknown scope '${String(s)}' in 'scopes.${i}' (use ${keyScopes.join(', ')}).`, 'scopes');
    }
  });
  return [...new Set(value as KeyScope[])];
}

function checkModels(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > maxAllowedModels) {
    throw invalid('invalid_models', `'models' must be null (every model) or a non-empty array of at most ${maxAllowedModels} model names.`, 'models');
  }
  value.forEach((m, i) => {
    if (typeof m !== 'string' || !modelNamePattern.test(m)) throw invalid('invalid_models', `'models.${i}' is not a model name.`, 'models');
  });
  return [...new Set(value as string[])];
}

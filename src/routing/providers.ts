// Upstream providers and their credentials: create, read, update, delete, add and remove keys.
// Credentials are sealed with the SecretBox before they touch the store and only a hint of each
// (first 3 and last 4 characters) ever leaves it; the plaintext is read back by loadCatalog alone.
import type { Kysely, Updateable } from 'kysely';
import type { Database, ProviderCredentialsTable, ProvidersTable } from '../store/schema.ts';
import type { ProviderType } from '../providers/types.ts';
import type { SecretBox } from '../lib/secrets.ts';
import { AppError, conflict, invalid, notFound } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import { isUniqueViolation } from '../store/errors.ts';

export const providerTypes = ['openai', 'openai-compatible', 'anthropic', 'gemini', 'azure-openai', 'sandbox'] as const satisfies readonly ProviderType[];

/** Where a known provider type lives when no base URL is given. */
export const defaultBaseUrls: Partial<Record<ProviderType, string>> = {
  openai: 'https://api.openai.com/v1',
  anthropic: 'https://api.anthropic.com',
  gemini: 'https://generativelanguage.googleapis.com/v1beta',
};
const typesNeedingBaseUrl: readonly ProviderType[] = ['openai-compatible', 'azure-openai'];

export const maxCredentialsPerProvider = 20;
const maxProviderNameChars = 100;
const maxBaseUrlChars = 2000;
const maxApiKeyChars = 4096;
const maxLabelChars = 100;
const maxRegions = 32;
const maxNotesChars = 2000;
const maxShortTextChars = 200;
const minTimeoutMs = 1000;
const maxTimeoutMs = 600_000;
const defaultTimeoutMs = 60_000;
const regionPattern = /^[a-z0-9][a-z0-9-]{0,31}$/;
const apiVersionPattern = /^[A-Za-z0-9._-]{1,40}$/;
// Printable ASCII without spaces: a key goes into an HTTP header, where a newline would be an injection.
const apiKeyPattern = /^[\x21-\x7e]+$/;
/** Keys shorter than this get no hint at all: 7 visible characters would give most of them away. */
const minHintedKeyChars = 16;

export type Retention = 'zero' | 'standard';
export type ProviderStatus = 'active' | 'inactive';
export type Resale = 'approved' | 'pending';

export interface CredentialInfo {
  id: string;
  providerId: string;
  label: string;
  hint: string;
  status: string;
  createdAt: number;
}

export interface Provider {
  id: string;
  name: string;
  type: ProviderType;
  /** As stored: null means the type's default (see effectiveBaseUrl). */
  baseUrl: string | null;
  apiVersion: string | null;
  regions: string[];
  retention: Retention;
  status: ProviderStatus;
  resale: Resale;
  sla: string | null;
  supportOwner: string | null;
  notes: string | null;
  timeoutMs: number;
  credentials: CredentialInfo[];
  createdAt: number;
  updatedAt: number;
}

export interface ProviderInput {
  name: string;
  type: string;
  baseUrl?: string | null;
  apiKey?: string;
  apiVersion?: string | null;
  regions?: string[];
  retention?: string;
  status?: string;
  resale?: string;
  sla?: string | null;
  supportOwner?: string | null;
  notes?: string | null;
  timeoutMs?: number;
}

export type ProviderPatch = Partial<Omit<ProviderInput, 'apiKey'>>;

/** The base URL requests go to: the stored one, or the default for a known type (null for sandbox). */
export function effectiveBaseUrl(type: ProviderType, baseUrl: string | null): string | null {
  return baseUrl ?? defaultBaseUrls[type] ?? null;
}

/** `sk-...abcd`: enough to tell keys apart, never enough to use one. */
export function keyHint(apiKey: string): string {
  return apiKey.length >= minHintedKeyChars ? `${apiKey.slice(0, 3)}...${apiKey.slice(-4)}` : '...';
}

export async function createProvider(db: Kysely<Database>, secrets: SecretBox, input: ProviderInput, nowMs = Date.now()): Promise<Provider> {
  const type = checkProviderType(input.type);
  const baseUrl = checkBaseUrl(input.baseUrl ?? null);
  requireBaseUrl(type, baseUrl);
  const row = {
    id: newId('prov', nowMs),
    name: checkProviderName(input.name),
    type,
    base_url: baseUrl,
    api_version: checkApiVersion(input.apiVersion ?? null),
    regions: JSON.stringify(checkRegions(input.regions ?? ['global'])),
    retention: checkOneOf(input.retention ?? 'standard', ['zero', 'standard'], 'retention'),
    status: checkOneOf(input.status ?? 'active', ['active', 'inactive'], 'status'),
    resale: checkOneOf(input.resale ?? 'approved', ['approved', 'pending'], 'resale'),
    sla: checkText(input.sla ?? null, 'sla', maxShortTextChars),
    support_owner: checkText(input.supportOwner ?? null, 'supportOwner', maxShortTextChars),
    notes: checkText(input.notes ?? null, 'notes', maxNotesChars),
    timeout_ms: checkTimeout(input.timeoutMs ?? defaultTimeoutMs),
    created_at: nowMs,
    updated_at: nowMs,
  };
  const apiKey = input.apiKey === undefined ? null : checkApiKey(input.apiKey, 'apiKey');
  try {
    await db.transaction().execute(async (tx) => {
      await assertNameFree(tx, row.name, null);
      await tx.insertInto('providers').values(row).execute();
      if (apiKey !== null) await insertCredential(tx, secrets, row.id, 'default', apiKey, nowMs);
    });
  } catch (err) {
    throw isUniqueViolation(err) ? nameTaken(row.name) : err;
  }
  return getProvider(db, row.id);
}

export async function getProvider(db: Kysely<Database>, id: string): Promise<Provider> {
  const row = await db.selectFrom('providers').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('provider', id);
  const credentials = await db.selectFrom('provider_credentials').selectAll().where('provider_id', '=', id).execute();
  return toProvider(row, credentials.map(toCredentialInfo));
}

/** Newest first; `nextCursor` is the id to pass as `cursor` for the next page. */
export async function listProviders(
  db: Kysely<Database>,
  page: { cursor?: string; limit: number; status?: string; type?: string },
): Promise<{ data: Provider[]; nextCursor: string | null }> {
  let q = db.selectFrom('providers').selectAll();
  if (page.cursor) q = q.where('id', '<', page.cursor);
  if (page.status) q = q.where('status', '=', page.status);
  if (page.type) q = q.where('type', '=', page.type);
  const rows = await q.orderBy('id', 'desc').limit(page.limit + 1).execute();
  const pageRows = rows.slice(0, page.limit);
  const ids = pageRows.map((r) => r.id);
  const credentials = ids.length === 0 ? [] : await db.selectFrom('provider_credentials').selectAll().where('provider_id', 'in', ids).execute();
  const byProvider = groupBy(credentials.map(toCredentialInfo), (c) => c.providerId);
  const data = pageRows.map((r) => toProvider(r, byProvider.get(r.id) ?? []));
  return { data, nextCursor: rows.length > page.limit ? data[data.length - 1].id : null };
}

export async function updateProvider(db: Kysely<Database>, id: string, patch: ProviderPatch, nowMs = Date.now()): Promise<Provider> {
  const set: Updateable<ProvidersTable> = { updated_at: nowMs };
  if (patch.name !== undefined) set.name = checkProviderName(patch.name);
  if (patch.type !== undefined) set.type = checkProviderType(patch.type);
  if (patch.baseUrl !== undefined) set.base_url = checkBaseUrl(patch.baseUrl);
  if (patch.apiVersion !== undefined) set.api_version = checkApiVersion(patch.apiVersion);
  if (patch.regions !== undefined) set.regions = JSON.stringify(checkRegions(patch.regions));
  if (patch.retention !== undefined) set.retention = checkOneOf(patch.retention, ['zero', 'standard'], 'retention');
  if (patch.status !== undefined) set.status = checkOneOf(patch.status, ['active', 'inactive'], 'status');
  if (patch.resale !== undefined) set.resale = checkOneOf(patch.resale, ['approved', 'pending'], 'resale');
  if (patch.sla !== undefined) set.sla = checkText(patch.sla, 'sla', maxShortTextChars);
  if (patch.supportOwner !== undefined) set.support_owner = checkText(patch.supportOwner, 'supportOwner', maxShortTextChars);
  if (patch.notes !== undefined) set.notes = checkText(patch.notes, 'notes', maxNotesChars);
  if (patch.timeoutMs !== undefined) set.timeout_ms = checkTimeout(patch.timeoutMs);
  try {
    await db.transaction().execute(async (tx) => {
      const current = await tx.selectFrom('providers').select(['type', 'base_url']).where('id', '=', id).executeTakeFirst();
      if (!current) throw notFound('provider', id);
      // The type and URL are checked together: switching to a type that needs a URL needs one.
      requireBaseUrl((set.type ?? current.type) as ProviderType, set.base_url !== undefined ? set.base_url : current.base_url);
      if (set.name !== undefined) await assertNameFree(tx, set.name, id);
      await tx.updateTable('providers').set(set).where('id', '=', id).execute();
    });
  } catch (err) {
    throw isUniqueViolation(err) ? nameTaken(String(set.name)) : err;
  }
  return getProvider(db, id);
}

/** Deletes a provider and its credentials; refused while any model route still sends traffic to it. */
export async function deleteProvider(db: Kysely<Database>, id: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const row = await tx.selectFrom('providers').select('id').where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound('provider', id);
    const routed = await tx
      .selectFrom('model_routes')
      .innerJoin('models', 'models.id', 'model_routes.model_id')
      .select('models.name')
      .where('model_routes.provider_id', '=', id)
      .limit(5)
      .execute();
    if (routed.length > 0) {
      const names = [...new Set(routed.map((r) => r.name))].join(', ');
      throw conflict('provider_in_use', `Provider '${id}' is routed by model(s) ${names}; remove those routes first.`);
    }
    await tx.deleteFrom('provider_credentials').where('provider_id', '=', id).execute();
    await tx.deleteFrom('providers').where('id', '=', id).execute();
  });
}

export async function addCredential(
  db: Kysely<Database>,
  secrets: SecretBox,
  providerId: string,
  input: { label?: string; apiKey: string },
  nowMs = Date.now(),
): Promise<CredentialInfo> {
  const apiKey = checkApiKey(input.apiKey, 'apiKey');
  const label = input.label === undefined ? null : checkLabel(input.label);
  return db.transaction().execute(async (tx) => {
    const provider = await tx.selectFrom('providers').select('id').where('id', '=', providerId).executeTakeFirst();
    if (!provider) throw notFound('provider', providerId);
    const { n } = await tx
      .selectFrom('provider_credentials')
      .select((eb) => eb.fn.countAll<number | bigint | string>().as('n'))
      .where('provider_id', '=', providerId)
      .executeTakeFirstOrThrow();
    const count = Number(n);
    if (count >= maxCredentialsPerProvider) {
      throw invalid('too_many_credentials', `A provider holds at most ${maxCredentialsPerProvider} credentials; remove one first.`, 'apiKey');
    }
    return insertCredential(tx, secrets, providerId, label ?? (count === 0 ? 'default' : `key-${count + 1}`), apiKey, nowMs);
  });
}

export async function listCredentials(db: Kysely<Database>, providerId: string): Promise<CredentialInfo[]> {
  const provider = await db.selectFrom('providers').select('id').where('id', '=', providerId).executeTakeFirst();
  if (!provider) throw notFound('provider', providerId);
  const rows = await db.selectFrom('provider_credentials').selectAll().where('provider_id', '=', providerId).execute();
  return rows.map(toCredentialInfo).sort((a, b) => a.createdAt - b.createdAt || compare(a.id, b.id));
}

/** Deletes the credential outright: its ciphertext is gone from the store, not just disabled. */
export async function removeCredential(db: Kysely<Database>, providerId: string, credentialId: string): Promise<void> {
  const res = await db
    .deleteFrom('provider_credentials')
    .where('id', '=', credentialId)
    .where('provider_id', '=', providerId)
    .executeTakeFirst();
  if (res.numDeletedRows !== 1n) throw notFound('provider_credential', credentialId);
}

async function insertCredential(tx: Kysely<Database>, secrets: SecretBox, providerId: string, label: string, apiKey: string, nowMs: number): Promise<CredentialInfo> {
  const row = {
    id: newId('cred', nowMs),
    provider_id: providerId,
    label,
    secret_enc: secrets.encrypt(apiKey),
    key_hint: keyHint(apiKey),
    status: 'active',
    created_at: nowMs,
  };
  await tx.insertInto('provider_credentials').values(row).execute();
  return toCredentialInfo(row);
}

async function assertNameFree(tx: Kysely<Database>, name: string, exceptId: string | null): Promise<void> {
  let q = tx.selectFrom('providers').select('id').where('name', '=', name);
  if (exceptId) q = q.where('id', '!=', exceptId);
  if (await q.executeTakeFirst()) throw nameTaken(name);
}

const nameTaken = (name: string) => new AppError('conflict_error', 'provider_name_taken', `A provider named '${name}' already exists.`, { param: 'name' });

function toProvider(row: { [K in keyof ProvidersTable]: unknown }, credentials: CredentialInfo[]): Provider {
  return {
    id: row.id as string,
    name: row.name as string,
    type: row.type as ProviderType,
    baseUrl: row.base_url as string | null,
    apiVersion: row.api_version as string | null,
    regions: JSON.parse(row.regions as string) as string[],
    retention: row.retention as Retention,
    status: row.status as ProviderStatus,
    resale: row.resale as Resale,
    sla: row.sla as string | null,
    supportOwner: row.support_owner as string | null,
    notes: row.notes as string | null,
    timeoutMs: Number(row.timeout_ms),
    credentials: credentials.sort((a, b) => a.createdAt - b.createdAt || compare(a.id, b.id)),
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

function toCredentialInfo(row: { [K in keyof ProviderCredentialsTable]: unknown }): CredentialInfo {
  return {
    id: row.id as string,
    providerId: row.provider_id as string,
    label: row.label as string,
    hint: row.key_hint as string,
    status: row.status as string,
    createdAt: Number(row.created_at),
  };
}

export function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function groupBy<T>(items: T[], keyOf: (item: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    const list = out.get(key);
    if (list) list.push(item);
    else out.set(key, [item]);
  }
  return out;
}

function checkProviderType(type: unknown): ProviderType {
  if (!(providerTypes as readonly unknown[]).includes(type)) {
    throw invalid('invalid_provider_type', `'type' must be one of ${providerTypes.join(', ')}.`, 'type');
  }
  return type as ProviderType;
}

function checkProviderName(name: unknown): string {
  if (typeof name !== 'string' || name.trim().length === 0 || name.trim().length > maxProviderNameChars) {
    throw invalid('invalid_name', `'name' must be a non-empty string of at most ${maxProviderNameChars} characters.`, 'name');
  }
  return name.trim();
}

/** An http(s) URL without credentials in it (those belong in a credential), trailing slashes trimmed. */
function checkBaseUrl(value: string | null): string | null {
  if (value === null) return null;
  let url: URL | null = null;
  try {
    url = value.length <= maxBaseUrlChars ? new URL(value.trim()) : null;
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw invalid('invalid_url', "'baseUrl' must be an http(s) URL such as https://api.example.com/v1.", 'baseUrl');
  }
  if (url.username || url.password) {
    throw invalid('invalid_url', "'baseUrl' must not contain a user name or password; send the key as 'apiKey'.", 'baseUrl');
  }
  return value.trim().replace(/\/+$/, '');
}

function requireBaseUrl(type: ProviderType, baseUrl: string | null): void {
  if (baseUrl === null && typesNeedingBaseUrl.includes(type)) {
    throw invalid('base_url_required', `A provider of type '${type}' needs a 'baseUrl'.`, 'baseUrl');
  }
}

function checkApiKey(value: unknown, param: string): string {
  const key = typeof value === 'string' ? value.trim() : '';
  if (key.length === 0 || key.length > maxApiKeyChars || !apiKeyPattern.test(key)) {
    // Never echo the value: it is a secret even when it is malformed.
    throw invalid('invalid_api_key', `'${param}' must be 1 to ${maxApiKeyChars} printable characters without spaces.`, param);
  }
  return key;
}

function checkLabel(value: unknown): string {
  if (typeof value !== 'string' || value.trim().length === 0 || value.length > maxLabelChars) {
    throw invalid('invalid_label', `'label' must be a non-empty string of at most ${maxLabelChars} characters.`, 'label');
  }
  return value.trim();
}

function checkApiVersion(value: unknown): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || !apiVersionPattern.test(value)) {
    throw invalid('invalid_api_version', "'apiVersion' must be a version such as 2024-10-21 (letters, digits, '.', '_', '-').", 'apiVersion');
  }
  return value;
}

function checkRegions(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > maxRegions) {
    throw invalid('invalid_regions', `'regions' must be a non-empty array of at most ${maxRegions} region names.`, 'regions');
  }
  value.forEach((r, i) => {
    if (typeof r !== 'string' || !regionPattern.test(r)) {
      throw invalid('invalid_region', `'regions.${i}' must be a short lowercase name such as 'eu' or 'us-east-1'.`, `regions.${i}`);
    }
  });
  return [...new Set(value as string[])];
}

/** A route's region: the same shape as a provider's regions. */
export function checkRegion(value: unknown, param: string): string {
  if (typeof value !== 'string' || !regionPattern.test(value)) {
    throw invalid('invalid_region', `'${param}' must be a short lowercase name such as 'eu' or 'us-east-1'.`, param);
  }
  return value;
}

export function checkOneOf<T extends string>(value: unknown, allowed: readonly T[], param: string): T {
  if (!(allowed as readonly unknown[]).includes(value)) throw invalid(`invalid_${snake(param)}`, `'${param}' must be one of ${allowed.join(', ')}.`, param);
  return value as T;
}

export function checkText(value: unknown, param: string, maxChars: number): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || value.length > maxChars) throw invalid('invalid_parameter', `'${param}' must be a string of at most ${maxChars} characters.`, param);
  return value.trim() === '' ? null : value.trim();
}

function checkTimeout(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < minTimeoutMs || value > maxTimeoutMs) {
    throw invalid('invalid_timeout', `'timeoutMs' must be an integer from ${minTimeoutMs} to ${maxTimeoutMs}.`, 'timeoutMs');
  }
  return value;
}

function snake(param: string): string {
  return param.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

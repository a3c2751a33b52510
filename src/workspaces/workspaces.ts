// Workspaces: the tenants. Creating one opens its credit account in the same transaction. A
// workspace also carries its rules: data policy, price book, prompt logging and key defaults,
// stored as JSON text and read into the WorkspaceEntry shape the request path uses.
import type { Kysely, Updateable } from 'kysely';
import type { Database, WorkspacesTable } from '../store/schema.ts';
import { invalid, notFound } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import { createWorkspaceAccount } from '../ledger/accounts.ts';
import { budgetPeriods, type BudgetPeriod } from '../ledger/budgets.ts';
import { formatCredits, parsePositiveCredits } from '../ledger/money.ts';
import { checkRegion } from '../routing/providers.ts';
import { lockPriceBookParam } from '../pricing/price-books.ts';
import { defaultDataPolicy, defaultLoggingPolicy, noLimits, type DataPolicy, type KeyLimits, type LoggingPolicy, type WorkspaceEntry } from './policy.ts';
import { patchKeyLimits, type KeyLimitsPatch } from './key-limits.ts';

export interface Workspace extends WorkspaceEntry {
  name: string;
  metadata: Record<string, string>;
  createdAt: number;
  updatedAt: number;
}

export interface WorkspacePatch {
  name?: string;
  metadata?: Record<string, string>;
  status?: 'active' | 'suspended';
  /** null removes the price book: the workspace pays the models' default rates. */
  priceBookId?: string | null;
  policy?: { allowedRegions?: unknown; zeroRetention?: unknown };
  logging?: { enabled?: unknown; retentionDays?: unknown };
  keyDefaults?: KeyLimitsPatch;
}

const maxNameChars = 200;
const maxMetadataKeys = 50;
const maxMetadataValueChars = 500;
const maxAllowedRegions = 32;
export const minRetentionDays = 1;
export const maxRetentionDays = 3650;
export const dayMs = 86_400_000;

export async function createWorkspace(
  db: Kysely<Database>,
  input: { name: string; metadata?: Record<string, string> },
  nowMs = Date.now(),
): Promise<Workspace> {
  const name = checkName(input.name);
  const metadata = checkMetadata(input.metadata ?? {});
  const id = newId('ws', nowMs);
  await db.transaction().execute(async (tx) => {
    await tx
      .insertInto('workspaces')
      .values({ id, name, status: 'active', metadata: JSON.stringify(metadata), created_at: nowMs, updated_at: nowMs })
      .execute();
    await createWorkspaceAccount(tx, id, nowMs);
  });
  return {
    id,
    name,
    status: 'active',
    metadata,
    priceBookId: null,
    policy: defaultDataPolicy,
    logging: defaultLoggingPolicy,
    keyDefaults: noLimits,
    createdAt: nowMs,
    updatedAt: nowMs,
  };
}

export async function getWorkspace(db: Kysely<Database>, id: string): Promise<Workspace> {
  const row = await db.selectFrom('workspaces').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('workspace', id);
  return toWorkspace(row);
}

export async function listWorkspaces(
  db: Kysely<Database>,
  page: { cursor?: string; limit: number },
): Promise<{ data: Workspace[]; nextCursor: string | null }> {
  let q = db.selectFrom('workspaces').selectAll();
  if (page.cursor) q = q.where('id', '<', page.cursor);
  const rows = await q.orderBy('id', 'desc').limit(page.limit + 1).execute();
  const data = rows.slice(0, page.limit).map(toWorkspace);
  return { data, nextCursor: rows.length > page.limit ? data[data.length - 1].id : null };
}

/**
 * Checks the whole patch before writing anything, then writes it in one transaction. A new
 * retention period applies to the logs already stored too: a log is kept for the workspace's
 * current period from when it was written, so shortening it deletes sooner, never later than promised.
 */
export async function updateWorkspace(db: Kysely<Database>, id: string, patch: WorkspacePatch, nowMs = Date.now()): Promise<Workspace> {
  const set: Updateable<WorkspacesTable> = { updated_at: nowMs };
  if (patch.name !== undefined) set.name = checkName(patch.name);
  if (patch.metadata !== undefined) set.metadata = JSON.stringify(checkMetadata(patch.metadata));
  if (patch.status !== undefined) set.status = patch.status;
  const priceBookId = patch.priceBookId === undefined ? undefined : checkPriceBookId(patch.priceBookId);
  if (patch.policy !== undefined) checkPolicyPatch(patch.policy, defaultDataPolicy);
  if (patch.logging !== undefined) checkLoggingPatch(patch.logging, defaultLoggingPolicy);
  if (patch.keyDefaults !== undefined) patchKeyLimits(noLimits, patch.keyDefaults, 'keyDefaults.');

  await db.transaction().execute(async (tx) => {
    const row = await tx.selectFrom('workspaces').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound('workspace', id);
    const current = workspaceEntryOf(row);
    if (priceBookId !== undefined) {
      if (priceBookId !== null) await lockPriceBookParam(tx, priceBookId);
      set.price_book_id = priceBookId;
    }
    const policy = patch.policy === undefined ? current.policy : checkPolicyPatch(patch.policy, current.policy);
    const logging = patch.logging === undefined ? current.logging : checkLoggingPatch(patch.logging, current.logging);
    if (patch.policy !== undefined || patch.logging !== undefined) set.policy = storedPolicy(policy, logging);
    if (patch.keyDefaults !== undefined) set.key_defaults = storedKeyDefaults(patchKeyLimits(current.keyDefaults, patch.keyDefaults, 'keyDefaults.'));
    await tx.updateTable('workspaces').set(set).where('id', '=', id).execute();
    if (logging.retentionDays !== current.logging.retentionDays) {
      await tx
        .updateTable('request_logs')
        .set((eb) => ({ expires_at: eb('created_at', '+', BigInt(logging.retentionDays * dayMs)) }))
        .where('workspace_id', '=', id)
        .execute();
    }
  });
  return getWorkspace(db, id);
}

/** A workspaces row as the request path reads it. Stored policy that does not parse fails loudly: a policy is never silently dropped. */
export function workspaceEntryOf(row: Pick<{ [K in keyof WorkspacesTable]: unknown }, 'id' | 'status' | 'price_book_id' | 'policy' | 'key_defaults'>): WorkspaceEntry {
  const { policy, logging } = readPolicy(row.id as string, row.policy as string);
  return {
    id: row.id as string,
    status: row.status === 'suspended' ? 'suspended' : 'active',
    priceBookId: (row.price_book_id as string | null) ?? null,
    policy,
    logging,
    keyDefaults: readKeyDefaults(row.id as string, row.key_defaults as string),
  };
}

/** The stored form: `{ allowedRegions, zeroRetention, logging: { enabled, retentionDays } }`. */
export function storedPolicy(policy: DataPolicy, logging: LoggingPolicy): string {
  return JSON.stringify({
    allowedRegions: policy.allowedRegions,
    zeroRetention: policy.zeroRetention,
    logging: { enabled: logging.enabled, retentionDays: logging.retentionDays },
  });
}

/** Finds opted-in workspaces with a LIKE on the stored policy before parsing it (the key order above is fixed). */
export const loggingEnabledPattern = '%"logging":{"enabled":true%';

/** The stored form: `{ budget: { period, credits } | null, rpm, tpm }`, credits as a decimal string. */
export function storedKeyDefaults(limits: KeyLimits): string {
  const budget = limits.budget === null ? null : { period: limits.budget.period, credits: formatCredits(limits.budget.limitMicros) };
  return JSON.stringify({ budget, rpm: limits.rpm, tpm: limits.tpm });
}

function readPolicy(workspaceId: string, text: string): { policy: DataPolicy; logging: LoggingPolicy } {
  const corrupt = (what: string) => new Error(`workspace ${workspaceId} has a corrupt stored policy: ${what}`);
  const raw = parseObject(text, corrupt);
  const regions = raw.allowedRegions ?? null;
  if (regions !== null && !(Array.isArray(regions) && regions.every((r) => typeof r === 'string'))) throw corrupt('allowedRegions');
  const zeroRetention = raw.zeroRetention ?? false;
  if (typeof zeroRetention !== 'boolean') throw corrupt('zeroRetention');
  const logging = (raw.logging ?? {}) as Record<string, unknown>;
  const enabled = logging.enabled ?? defaultLoggingPolicy.enabled;
  const retentionDays = logging.retentionDays ?? defaultLoggingPolicy.retentionDays;
  if (typeof enabled !== 'boolean') throw corrupt('logging.enabled');
  if (typeof retentionDays !== 'number' || !Number.isInteger(retentionDays) || retentionDays < minRetentionDays) throw corrupt('logging.retentionDays');
  return { policy: { allowedRegions: regions as string[] | null, zeroRetention }, logging: { enabled, retentionDays } };
}

function readKeyDefaults(workspaceId: string, text: string): KeyLimits {
  const corrupt = (what: string) => new Error(`workspace ${workspaceId} has corrupt stored key defaults: ${what}`);
  const raw = parseObject(text, corrupt);
  const perMinute = (v: unknown, what: string): number | null => {
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw corrupt(what);
    return v;
  };
  let budget: KeyLimits['budget'] = null;
  if (raw.budget != null) {
    const b = raw.budget as Record<string, unknown>;
    if (!(budgetPeriods as readonly unknown[]).includes(b.period)) throw corrupt('budget.period');
    try {
      budget = { period: b.period as BudgetPeriod, limitMicros: parsePositiveCredits(b.credits, 'budget.credits') };
    } catch {
      throw corrupt('budget.credits');
    }
  }
  return { budget, rpm: perMinute(raw.rpm, 'rpm'), tpm: perMinute(raw.tpm, 'tpm') };
}

function parseObject(text: string, corrupt: (what: string) => Error): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw corrupt('not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw corrupt('not an object');
  return value as Record<string, unknown>;
}

function checkPriceBookId(value: unknown): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || value.length === 0 || value.length > 64) {
    throw invalid('invalid_parameter', "'priceBookId' must be a price book id, or null.", 'priceBookId');
  }
  return value;
}

function checkPolicyPatch(patch: { allowedRegions?: unknown; zeroRetention?: unknown }, current: DataPolicy): DataPolicy {
  let allowedRegions = current.allowedRegions;
  if (patch.allowedRegions !== undefined) {
    const value = patch.allowedRegions;
    if (value === null) {
      allowedRegions = null;
    } else {
      // An empty list would refuse every route: say null for "any region", or name at least one.
      if (!Array.isArray(value) || value.length === 0 || value.length > maxAllowedRegions) {
        throw invalid('invalid_regions', `'policy.allowedRegions' must be null (any region) or 1 to ${maxAllowedRegions} region names.`, 'policy.allowedRegions');
      }
      allowedRegions = [...new Set(value.map((r, i) => checkRegion(r, `policy.allowedRegions.${i}`)))];
    }
  }
  let zeroRetention = current.zeroRetention;
  if (patch.zeroRetention !== undefined) {
    if (typeof patch.zeroRetention !== 'boolean') throw invalid('invalid_parameter', "'policy.zeroRetention' must be true or false.", 'policy.zeroRetention');
    zeroRetention = patch.zeroRetention;
  }
  return { allowedRegions, zeroRetention };
}

function checkLoggingPatch(patch: { enabled?: unknown; retentionDays?: unknown }, current: LoggingPolicy): LoggingPolicy {
  if (typeof patch.enabled !== 'boolean') throw invalid('invalid_parameter', "'logging.enabled' must be true or false.", 'logging.enabled');
  const days = patch.retentionDays ?? current.retentionDays;
  if (typeof days !== 'number' || !Number.isInteger(days) || days < minRetentionDays || days > maxRetentionDays) {
    throw invalid('invalid_retention_days', `'logging.retentionDays' must be an integer from ${minRetentionDays} to ${maxRetentionDays}.`, 'logging.retentionDays');
  }
  return { enabled: patch.enabled, retentionDays: days };
}

function toWorkspace(row: { [K in keyof WorkspacesTable]: unknown }): Workspace {
  return {
    ...workspaceEntryOf(row),
    name: row.name as string,
    metadata: JSON.parse(row.metadata as string) as Record<string, string>,
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.trim().length === 0 || name.length > maxNameChars) {
    throw invalid('invalid_name', `'name' must be a non-empty string of at most ${maxNameChars} characters.`, 'name');
  }
  return name.trim();
}

export function checkMetadata(metadata: unknown): Record<string, string> {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw invalid('invalid_metadata', "'metadata' must be an object of string values.", 'metadata');
  }
  const entries = Object.entries(metadata);
  if (entries.length > maxMetadataKeys) throw invalid('invalid_metadata', `'metadata' holds at most ${maxMetadataKeys} keys.`, 'metadata');
  for (const [k, v] of entries) {
    if (typeof v !== 'string' || v.length > maxMetadataValueChars || k.length > 100) {
      throw invalid('invalid_metadata', `metadata '${k}' must be a string of at most ${maxMetadataValueChars} characters.`, 'metadata');
    }
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

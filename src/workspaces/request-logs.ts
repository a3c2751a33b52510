// Prompt and completion logs of the workspaces that opted in (metadata only is the default): the
// gateway stores one per call with its expiry, operators read them, and a job in every process
// deletes each when its workspace's retention period has passed.
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Database, RequestLogsTable } from '../store/schema.ts';
import { dayMs, loggingEnabledPattern, maxRetentionDays, minRetentionDays, workspaceEntryOf } from './workspaces.ts';
import { notFound } from '../lib/errors.ts';

export const requestLogRetentionIntervalMs = 10 * 60_000;
/** Rows deleted per statement, so one run never holds a long lock or a huge transaction. */
export const retentionBatchRows = 1000;
/** Statements per run: a backlog larger than this is finished by the next runs. */
export const maxRetentionBatchesPerRun = 100;
/** A body longer than this is cut (and marked) before it is stored. */
export const maxStoredBodyChars = 1_000_000;
export const truncationMark = '…[truncated by Tollgate]';

export interface RequestLogInput {
  /** The gateway's request id; storing the same one twice keeps the first. */
  requestId: string;
  workspaceId: string;
  /** Stored as given when a string, else as JSON. */
  requestBody: unknown;
  responseBody: unknown;
  retentionDays: number;
  nowMs?: number;
}

export interface RequestLog {
  id: string;
  workspaceId: string;
  requestBody: string;
  responseBody: string | null;
  createdAt: number;
  expiresAt: number;
}

export interface LoggingWorkspace {
  id: string;
  name: string;
  retentionDays: number;
  storedLogs: number;
  oldestLogAt: number | null;
}

/** Call only for workspaces whose logging policy is enabled. */
export async function storeRequestLog(db: Kysely<Database>, input: RequestLogInput): Promise<void> {
  const nowMs = input.nowMs ?? Date.now();
  const days = input.retentionDays;
  if (!Number.isInteger(days) || days < minRetentionDays || days > maxRetentionDays) {
    throw new RangeError(`retentionDays must be an integer from ${minRetentionDays} to ${maxRetentionDays} (got ${days})`);
  }
  await db
    .insertInto('request_logs')
    .values({
      id: input.requestId,
      workspace_id: input.workspaceId,
      request_body: bodyText(input.requestBody) ?? '',
      response_body: bodyText(input.responseBody),
      created_at: nowMs,
      expires_at: nowMs + days * dayMs,
    })
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
}

/** Deletes logs whose expiry has passed (at most maxRetentionBatchesPerRun × retentionBatchRows); returns how many. */
export async function deleteExpiredRequestLogs(db: Kysely<Database>, nowMs = Date.now()): Promise<number> {
  let deleted = 0;
  for (let batch = 0; batch < maxRetentionBatchesPerRun; batch++) {
    const res = await db
      .deleteFrom('request_logs')
      .where('id', 'in', (eb) => eb.selectFrom('request_logs').select('id').where('expires_at', '<=', BigInt(nowMs)).limit(retentionBatchRows))
      .executeTakeFirst();
    const n = Number(res.numDeletedRows);
    deleted += n;
    if (n < retentionBatchRows) break;
  }
  return deleted;
}

/** Runs deleteExpiredRequestLogs every `intervalMs` (10 minutes); returns the stop function. Safe in several processes at once. */
export function startRequestLogRetention(db: Kysely<Database>, log: Logger, intervalMs = requestLogRetentionIntervalMs): () => void {
  let running = false;
  const timer = setInterval(async () => {
    if (running) return;
    running = true;
    try {
      const n = await deleteExpiredRequestLogs(db);
      if (n > 0) log.info({ job: 'request_log_retention', count: n }, 'deleted expired request logs');
    } catch (err) {
      log.error({ err, job: 'request_log_retention' }, 'request log retention failed');
    } finally {
      running = false;
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** Newest first; `nextCursor` is the id to pass as `cursor` for the next page. */
export async function listRequestLogs(
  db: Kysely<Database>,
  workspaceId: string,
  page: { cursor?: string; limit: number },
): Promise<{ data: RequestLog[]; nextCursor: string | null }> {
  const workspace = await db.selectFrom('workspaces').select('id').where('id', '=', workspaceId).executeTakeFirst();
  if (!workspace) throw notFound('workspace', workspaceId);
  let q = db.selectFrom('request_logs').selectAll().where('workspace_id', '=', workspaceId);
  if (page.cursor) q = q.where('id', '<', page.cursor);
  const rows = await q.orderBy('id', 'desc').limit(page.limit + 1).execute();
  const data = rows.slice(0, page.limit).map(toRequestLog);
  return { data, nextCursor: rows.length > page.limit ? data[data.length - 1].id : null };
}

/** The workspaces that opted in to prompt logging, newest first, with what they hold now. */
export async function listLoggingWorkspaces(
  db: Kysely<Database>,
  page: { cursor?: string; limit: number },
): Promise<{ data: LoggingWorkspace[]; nextCursor: string | null }> {
  let q = db.selectFrom('workspaces').select(['id', 'name', 'status', 'price_book_id', 'policy', 'key_defaults']).where('policy', 'like', loggingEnabledPattern);
  if (page.cursor) q = q.where('id', '<', page.cursor);
  const rows = await q.orderBy('id', 'desc').limit(page.limit + 1).execute();
  const pageRows = rows.slice(0, page.limit);
  const nextCursor = rows.length > page.limit ? pageRows[pageRows.length - 1].id : null;
  const optedIn = pageRows.map((r) => ({ row: r, entry: workspaceEntryOf(r) })).filter((w) => w.entry.logging.enabled);
  if (optedIn.length === 0) return { data: [], nextCursor };
  const counts = await db
    .selectFrom('request_logs')
    .select(['workspace_id', (eb) => eb.fn.countAll<number | bigint | string>().as('n'), (eb) => eb.fn.min('created_at').as('oldest')])
    .where('workspace_id', 'in', optedIn.map((w) => w.row.id))
    .groupBy('workspace_id')
    .execute();
  const byId = new Map(counts.map((c) => [c.workspace_id, c]));
  const data = optedIn.map(({ row, entry }) => {
    const c = byId.get(row.id);
    return {
      id: row.id,
      name: row.name,
      retentionDays: entry.logging.retentionDays,
      storedLogs: c ? Number(c.n) : 0,
      oldestLogAt: c && c.oldest !== null ? Number(c.oldest) : null,
    };
  });
  return { data, nextCursor };
}

function bodyText(body: unknown): string | null {
  if (body === null || body === undefined) return null;
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return text.length > maxStoredBodyChars ? text.slice(0, maxStoredBodyChars - truncationMark.length) + truncationMark : text;
}

function toRequestLog(row: { [K in keyof RequestLogsTable]: unknown }): RequestLog {
  return {
    id: row.id as string,
    workspaceId: row.workspace_id as string,
    requestBody: row.request_body as string,
    responseBody: row.response_body as string | null,
    createdAt: Number(row.created_at),
    expiresAt: Number(row.expires_at),
  };
}

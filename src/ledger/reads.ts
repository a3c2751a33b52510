// What the ledger shows: a workspace's balance summary, its transactions (cursor paginated and
// filtered) and its balance history by day, week or month. Reads never take write locks.
import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import type { Engine } from '../store/db.ts';
import { invalid, notFound } from '../lib/errors.ts';
import { workspaceAccountId } from './accounts.ts';
import { toBigInt } from './money.ts';

export interface BalanceSummary {
  workspaceId: string;
  availableMicros: bigint;
  balanceMicros: bigint;
  pendingMicros: bigint;
  overdraftLimitMicros: bigint;
  warningLimitMicros: bigint | null;
  totalGrantedMicros: bigint;
  purchasedMicros: bigint;
  consumedMicros: bigint;
  expiredMicros: bigint;
}

export async function balanceOf(db: Kysely<Database>, workspaceId: string): Promise<BalanceSummary> {
  // Balance leases (src/ledger/leases.ts) are an instance's working reserve, not calls in flight:
  // shown as pending they would make credits look spoken for that any call can still use. Read in
  // the same statement as the account, so a lease that grows meanwhile cannot skew the difference.
  const a = await db
    .selectFrom('accounts')
    .selectAll()
    .select((eb) =>
      eb
        .selectFrom('holds')
        .select(sql<unknown>`coalesce(sum(amount_micros), 0)`.as('total'))
        .whereRef('holds.account_id', '=', 'accounts.id')
        .where('holds.status', '=', 'pending')
        .where('holds.kind', '=', 'lease')
        .as('leased_micros'),
    )
    .where('id', '=', workspaceAccountId(workspaceId))
    .executeTakeFirst();
  if (!a || a.workspace_id !== workspaceId) throw notFound('workspace', workspaceId);
  const balance = toBigInt(a.credits_posted) - toBigInt(a.debits_posted);
  const pending = toBigInt(a.debits_pending) - toBigInt(a.leased_micros ?? 0);
  const overdraft = toBigInt(a.overdraft_limit_micros);
  return {
    workspaceId,
    availableMicros: balance - pending + overdraft,
    balanceMicros: balance,
    pendingMicros: pending,
    overdraftLimitMicros: overdraft,
    warningLimitMicros: a.warning_limit_micros === null ? null : toBigInt(a.warning_limit_micros),
    totalGrantedMicros: toBigInt(a.credits_posted),
    purchasedMicros: toBigInt(a.purchased_micros),
    consumedMicros: toBigInt(a.consumed_micros),
    expiredMicros: toBigInt(a.expired_micros),
  };
}

export interface TransactionRecord {
  id: string;
  kind: string;
  /** Signed from the workspace's side: credits in are positive, debits negative. */
  amountMicros: bigint;
  balanceAfterMicros: bigint | null;
  overdrawnMicros: bigint;
  model: string | null;
  tag: string | null;
  ref: string | null;
  note: string | null;
  holdId: string | null;
  lotId: string | null;
  createdAt: number;
}

export interface TransactionFilter {
  cursor?: string;
  limit?: number;
  kind?: string;
  model?: string;
  tag?: string;
  fromMs?: number;
  toMs?: number;
}

export const maxPageSize = 200;
export const defaultPageSize = 50;

/** Newest first; `nextCursor` is the id to pass as `cursor` for the next page (null at the end). */
export async function listTransactions(
  db: Kysely<Database>,
  workspaceId: string,
  filter: TransactionFilter,
): Promise<{ data: TransactionRecord[]; nextCursor: string | null }> {
  const limit = filter.limit ?? defaultPageSize;
  const accountId = workspaceAccountId(workspaceId);
  let q = db.selectFrom('transfers').selectAll().where('workspace_id', '=', workspaceId);
  if (filter.cursor) q = q.where('id', '<', filter.cursor);
  if (filter.kind) q = q.where('kind', '=', filter.kind);
  if (filter.model) q = q.where('model', '=', filter.model);
  if (filter.tag) q = q.where('tag', '=', filter.tag);
  if (filter.fromMs !== undefined) q = q.where('created_at', '>=', BigInt(filter.fromMs));
  if (filter.toMs !== undefined) q = q.where('created_at', '<', BigInt(filter.toMs));
  const rows = await q.orderBy('id', 'desc').limit(limit + 1).execute();
  const page = rows.slice(0, limit);
  return {
    data: page.map((t) => ({
      id: t.id,
      kind: t.kind,
      amountMicros: t.credit_account_id === accountId ? toBigInt(t.amount_micros) : -toBigInt(t.amount_micros),
      balanceAfterMicros: t.balance_after_micros === null ? null : toBigInt(t.balance_after_micros),
      overdrawnMicros: toBigInt(t.overdrawn_micros),
      model: t.model,
      tag: t.tag,
      ref: t.ref,
      note: t.note,
      holdId: t.hold_id,
      lotId: t.lot_id,
      createdAt: Number(t.created_at),
    })),
    nextCursor: rows.length > limit ? page[page.length - 1].id : null,
  };
}

export type Granularity = 'day' | 'week' | 'month';

export interface HistoryPoint {
  /** The bucket's first day, YYYY-MM-DD (UTC; weeks start on Monday). */
  period: string;
  creditedMicros: bigint;
  debitedMicros: bigint;
  /** The balance at the end of the bucket. */
  balanceMicros: bigint;
}

const maxHistoryBuckets = 1000;
const dayMs = 86_400_000;

function bucketExpression(engine: Engine, granularity: Granularity) {
  if (engine === 'sqlite') {
    const secs = sql`created_at / 1000, 'unixepoch'`;
    if (granularity === 'day') return sql<string>`date(${secs})`;
    if (granularity === 'week') return sql<string>`date(${secs}, 'weekday 0', '-6 days')`;
    return sql<string>`date(${secs}, 'start of month')`;
  }
  const ts = sql`(to_timestamp(created_at / 1000) at time zone 'UTC')`;
  return sql<string>`to_char(date_trunc(${sql.lit(granularity)}, ${ts}), 'YYYY-MM-DD')`;
}

/** The balance at the end of each day, week or month in [fromMs, toMs), with empty buckets filled. */
export async function balanceHistory(
  db: Kysely<Database>,
  engine: Engine,
  workspaceId: string,
  granularity: Granularity,
  fromMs: number,
  toMs: number,
): Promise<HistoryPoint[]> {
  if (toMs <= fromMs) throw invalid('invalid_range', "'from' must be before 'to'.", 'from');
  const periods = periodsBetween(granularity, fromMs, toMs);
  if (periods.length > maxHistoryBuckets) {
    throw invalid('range_too_large', `At most ${maxHistoryBuckets} ${granularity}s per request; narrow the range.`, 'from');
  }
  const summary = await balanceOf(db, workspaceId);
  const accountId = workspaceAccountId(workspaceId);
  const credited = sql<bigint>`coalesce(sum(case when credit_account_id = ${accountId} then amount_micros else 0 end), 0)`;
  const debited = sql<bigint>`coalesce(sum(case when debit_account_id = ${accountId} then amount_micros else 0 end), 0)`;
  const bucket = bucketExpression(engine, granularity);
  const rows = await db
    .selectFrom('transfers')
    .select([bucket.as('period'), credited.as('credited'), debited.as('debited')])
    .where('workspace_id', '=', workspaceId)
    .where('created_at', '>=', BigInt(fromMs))
    .where('created_at', '<', BigInt(toMs))
    .groupBy(sql`1`)
    .execute();
  const after = await db
    .selectFrom('transfers')
    .select([credited.as('credited'), debited.as('debited')])
    .where('workspace_id', '=', workspaceId)
    .where('created_at', '>=', BigInt(toMs))
    .executeTakeFirstOrThrow();
  const byPeriod = new Map(rows.map((r) => [String(r.period), { credited: toBigInt(r.credited), debited: toBigInt(r.debited) }]));
  // Walk back from today's balance: the end of the last bucket is the balance minus all that came after.
  let balanceAtEnd = summary.balanceMicros - (toBigInt(after.credited) - toBigInt(after.debited));
  const points: HistoryPoint[] = [];
  for (let i = periods.length - 1; i >= 0; i--) {
    const flows = byPeriod.get(periods[i]) ?? { credited: 0n, debited: 0n };
    points.push({ period: periods[i], creditedMicros: flows.credited, debitedMicros: flows.debited, balanceMicros: balanceAtEnd });
    balanceAtEnd -= flows.credited - flows.debited;
  }
  return points.reverse();
}

/** The UTC bucket starts (YYYY-MM-DD) that [fromMs, toMs) touches. */
export function periodsBetween(granularity: Granularity, fromMs: number, toMs: number): string[] {
  const out: string[] = [];
  const start = new Date(Math.floor(fromMs / dayMs) * dayMs);
  if (granularity === 'week') start.setUTCDate(start.getUTCDate() - ((start.getUTCDay() + 6) % 7));
  if (granularity === 'month') start.setUTCDate(1);
  for (const d = start; d.getTime() < toMs && out.length <= maxHistoryBuckets; ) {
    out.push(d.toISOString().slice(0, 10));
    if (granularity === 'day') d.setUTCDate(d.getUTCDate() + 1);
    else if (granularity === 'week') d.setUTCDate(d.getUTCDate() + 7);
    else d.setUTCMonth(d.getUTCMonth() + 1);
  }
  return out;
}

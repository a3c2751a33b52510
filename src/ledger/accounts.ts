// The chart of accounts. Each workspace has one credit account; the operator has one account per
// source and destination of credits, so every credit has a source and every debit a destination.
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../store/schema.ts';

export const operatorAccounts = {
  sales: 'acct_op_sales', // purchases (paid credits come from here)
  promotions: 'acct_op_promotions', // starter and promotional credits
  manual: 'acct_op_manual', // operator grants and adjustments
  refunds: 'acct_op_refunds', // refund reversals and claw-backs
  usageRevenue: 'acct_op_usage_revenue', // what calls consumed
  expired: 'acct_op_expired', // what lots lost at expiry
} as const;

export type OperatorAccountId = (typeof operatorAccounts)[keyof typeof operatorAccounts];

export const lotSources = ['purchase', 'starter', 'manual', 'promo', 'refund_reversal', 'adjustment'] as const;
export type LotSource = (typeof lotSources)[number];

/** The operator account a lot of this source is funded from. */
export function fundingAccount(source: LotSource): OperatorAccountId {
  switch (source) {
    case 'purchase':
      return operatorAccounts.sales;
    case 'starter':
    case 'promo':
      return operatorAccounts.promotions;
    case 'refund_reversal':
      return operatorAccounts.refunds;
    case 'manual':
    case 'adjustment':
      return operatorAccounts.manual;
  }
}

/** A workspace's credit account id is derived from the workspace id: no lookup on the hot path. */
export function workspaceAccountId(workspaceId: string): string {
  return `acct_${workspaceId.slice(workspaceId.indexOf('_') + 1)}`;
}

export async function ensureOperatorAccounts(db: Kysely<Database>, nowMs: number): Promise<void> {
  for (const [code, id] of Object.entries(operatorAccounts)) {
    await db
      .insertInto('accounts')
      .values({ id, workspace_id: null, code: `operator:${code}`, created_at: nowMs, credits_posted: 0, debits_posted: 0, debits_pending: 0, overdraft_limit_micros: 0, purchased_micros: 0, consumed_micros: 0, expired_micros: 0 })
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
  }
}

export async function createWorkspaceAccount(
  trx: Transaction<Database> | Kysely<Database>,
  workspaceId: string,
  nowMs: number,
  limits: { overdraftLimitMicros?: bigint; warningLimitMicros?: bigint | null } = {},
): Promise<string> {
  const id = workspaceAccountId(workspaceId);
  await trx
    .insertInto('accounts')
    .values({
      id,
      workspace_id: workspaceId,
      code: 'credits',
      credits_posted: 0,
      debits_posted: 0,
      debits_pending: 0,
      overdraft_limit_micros: limits.overdraftLimitMicros ?? 0n,
      warning_limit_micros: limits.warningLimitMicros ?? null,
      purchased_micros: 0,
      consumed_micros: 0,
      expired_micros: 0,
      created_at: nowMs,
    })
    .execute();
  return id;
}

// The API's view of ledger and workspace records: exact decimal strings for credits, ISO 8601 UTC
// timestamps, an `object` field naming the resource. One place, so every route shows them alike.
import { formatCredits } from '../ledger/money.ts';
import type { BalanceSummary, HistoryPoint, TransactionRecord } from '../ledger/reads.ts';
import type { Workspace } from '../workspaces/workspaces.ts';
import { keyLimitsView } from '../workspaces/key-limits.ts';

export const iso = (ms: number | bigint | null | undefined): string | null => (ms === null || ms === undefined ? null : new Date(Number(ms)).toISOString());
const credits = (micros: bigint | null): string | null => (micros === null ? null : formatCredits(micros));

export function workspaceView(w: Workspace, limits?: { overdraftLimitMicros: bigint; warningLimitMicros: bigint | null }) {
  return {
    id: w.id,
    object: 'workspace',
    name: w.name,
    status: w.status,
    metadata: w.metadata,
    priceBookId: w.priceBookId,
    policy: { allowedRegions: w.policy.allowedRegions, zeroRetention: w.policy.zeroRetention },
    logging: { enabled: w.logging.enabled, retentionDays: w.logging.retentionDays },
    keyDefaults: keyLimitsView(w.keyDefaults),
    ...(limits ? { overdraftLimit: credits(limits.overdraftLimitMicros), warningLimit: credits(limits.warningLimitMicros) } : {}),
    createdAt: iso(w.createdAt),
    updatedAt: iso(w.updatedAt),
  };
}

export function balanceView(b: BalanceSummary) {
  return {
    object: 'balance',
    workspaceId: b.workspaceId,
    available: formatCredits(b.availableMicros),
    balance: formatCredits(b.balanceMicros),
    pending: formatCredits(b.pendingMicros),
    overdraftLimit: formatCredits(b.overdraftLimitMicros),
    warningLimit: credits(b.warningLimitMicros),
    totalGranted: formatCredits(b.totalGrantedMicros),
    purchased: formatCredits(b.purchasedMicros),
    consumed: formatCredits(b.consumedMicros),
    expired: formatCredits(b.expiredMicros),
  };
}

export interface LotRow {
  id: string;
  workspace_id: string;
  source: string;
  amount_micros: bigint;
  remaining_micros: bigint;
  repaid_micros: bigint;
  priority: number | bigint;
  effective_at: bigint;
  expires_at: bigint | null;
  expired_at: bigint | null;
  transfer_id: string;
  note: string | null;
  created_at: bigint;
}

export function lotView(l: LotRow) {
  return {
    id: l.id,
    object: 'lot',
    workspaceId: l.workspace_id,
    source: l.source,
    credits: formatCredits(BigInt(l.amount_micros)),
    remaining: formatCredits(BigInt(l.remaining_micros)),
    repaidDebt: formatCredits(BigInt(l.repaid_micros)),
    priority: Number(l.priority),
    effectiveAt: iso(l.effective_at),
    expiresAt: iso(l.expires_at),
    expiredAt: iso(l.expired_at),
    transactionId: l.transfer_id,
    note: l.note,
    createdAt: iso(l.created_at),
  };
}

export function transactionView(t: TransactionRecord) {
  return {
    id: t.id,
    object: 'transaction',
    kind: t.kind,
    credits: formatCredits(t.amountMicros),
    balanceAfter: credits(t.balanceAfterMicros),
    overdrawn: formatCredits(t.overdrawnMicros),
    model: t.model,
    tag: t.tag,
    ref: t.ref,
    note: t.note,
    holdId: t.holdId,
    lotId: t.lotId,
    createdAt: iso(t.createdAt),
  };
}

export function historyView(p: HistoryPoint) {
  return {
    period: p.period,
    credited: formatCredits(p.creditedMicros),
    debited: formatCredits(p.debitedMicros),
    balance: formatCredits(p.balanceMicros),
  };
}

export function listView<T>(data: T[], nextCursor: string | null) {
  return { object: 'list', data, hasMore: nextCursor !== null, nextCursor };
}

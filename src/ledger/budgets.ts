// Spend caps per API key (per day, per month or for its lifetime), enforced by the same holds as
// the balance: a hold reserves against every counter of the key in the same transaction, and is
// refused when any would pass its limit. Counters are taken after the workspace account's row
// lock, so the lock order across processes stays account → counters.
import type { Tx } from './committer.ts';
import { toBigInt } from './money.ts';

export type BudgetPeriod = 'day' | 'month' | 'lifetime';
export const budgetPeriods: BudgetPeriod[] = ['day', 'month', 'lifetime'];

export interface BudgetLimit {
  keyId: string;
  period: BudgetPeriod;
  limitMicros: bigint;
}

/** The UTC start of the period that contains `atMs` (0 for lifetime). */
export function periodStart(period: BudgetPeriod, atMs: number): number {
  if (period === 'lifetime') return 0;
  const d = new Date(atMs);
  return period === 'day' ? Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) : Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** When the period that contains `atMs` ends (null for lifetime). */
export function periodEnd(period: BudgetPeriod, atMs: number): number | null {
  if (period === 'lifetime') return null;
  const d = new Date(periodStart(period, atMs));
  if (period === 'day') d.setUTCDate(d.getUTCDate() + 1);
  else d.setUTCMonth(d.getUTCMonth() + 1);
  return d.getTime();
}

export function counterId(limit: BudgetLimit, atMs: number): string {
  return `bc_${limit.keyId}_${limit.period}_${periodStart(limit.period, atMs)}`;
}

export type Reservation = { ok: true; counterIds: string[] } | { ok: false; limit: BudgetLimit; remainingMicros: bigint };

/** Reserves `amount` against every budget, or none of them. */
export async function reserveBudgets(tx: Tx, limits: BudgetLimit[], amount: bigint, nowMs: number): Promise<Reservation> {
  const taken: string[] = [];
  for (const limit of [...limits].sort((a, b) => counterId(a, nowMs).localeCompare(counterId(b, nowMs)))) {
    const id = counterId(limit, nowMs);
    await tx
      .insertInto('budget_counters')
      .values({ id, key_id: limit.keyId, period: limit.period, period_start: periodStart(limit.period, nowMs), posted_micros: 0, pending_micros: 0, created_at: nowMs })
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
    const row = await tx
      .updateTable('budget_counters')
      .set((eb) => ({ pending_micros: eb('pending_micros', '+', amount) }))
      .where('id', '=', id)
      .where((eb) => eb(eb(eb('posted_micros', '+', eb.ref('pending_micros')), '+', amount), '<=', limit.limitMicros))
      .returning('id')
      .executeTakeFirst();
    if (!row) {
      await releaseBudgets(tx, taken, amount);
      const c = await tx.selectFrom('budget_counters').select(['posted_micros', 'pending_micros']).where('id', '=', id).executeTakeFirstOrThrow();
      const remaining = limit.limitMicros - toBigInt(c.posted_micros) - toBigInt(c.pending_micros);
      return { ok: false, limit, remainingMicros: remaining > 0n ? remaining : 0n };
    }
    taken.push(id);
  }
  return { ok: true, counterIds: taken };
}

export async function releaseBudgets(tx: Tx, counterIds: string[], heldMicros: bigint): Promise<void> {
  for (const id of counterIds) {
    await tx
      .updateTable('budget_counters')
      .set((eb) => ({ pending_micros: eb('pending_micros', '-', heldMicros) }))
      .where('id', '=', id)
      .execute();
  }
}

/** Settles a reservation: the held amount leaves pending (unless already released) and the actual is spent. */
export async function postBudgets(tx: Tx, counterIds: string[], releasedMicros: bigint, actualMicros: bigint): Promise<void> {
  for (const id of counterIds) {
    await tx
      .updateTable('budget_counters')
      .set((eb) => ({ pending_micros: eb('pending_micros', '-', releasedMicros), posted_micros: eb('posted_micros', '+', actualMicros) }))
      .where('id', '=', id)
      .execute();
  }
}

export function parseCounterIds(value: string | null): string[] {
  return value ? (JSON.parse(value) as string[]) : [];
}

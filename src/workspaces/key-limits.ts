// Per-key limits as the admin API takes and shows them: a budget cap in credits per day, month or
// lifetime, and requests and tokens per minute. Keys and workspace key defaults share these rules.
import { invalid } from '../lib/errors.ts';
import { budgetPeriods, type BudgetPeriod } from '../ledger/budgets.ts';
import { formatCredits, parsePositiveCredits } from '../ledger/money.ts';
import type { KeyLimits } from './policy.ts';

/** RPM and TPM are stored in 32-bit integer columns; these bounds keep them far inside. */
export const maxRequestsPerMinute = 1_000_000;
export const maxTokensPerMinute = 1_000_000_000;

export type Budget = KeyLimits['budget'];

/** What a budget looks like outside: credits as an exact decimal string. */
export interface BudgetView {
  period: BudgetPeriod;
  credits: string;
}

/** Patches of key limits: an absent field keeps its value, null removes the limit. */
export interface KeyLimitsPatch {
  budget?: unknown;
  rpm?: unknown;
  tpm?: unknown;
}

/** `{ period, credits }` → a budget of at least one micro-credit; null → no budget. */
export function checkBudget(value: unknown, param: string): Budget {
  if (value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value) || value === undefined) {
    throw invalid('invalid_budget', `'${param}' must be null or an object with 'period' and 'credits'.`, param);
  }
  const { period, credits, ...rest } = value as Record<string, unknown>;
  const unknownField = Object.keys(rest)[0];
  if (unknownField !== undefined) throw invalid('invalid_budget', `Unknown parameter '${unknownField}' in '${param}'.`, `${param}.${unknownField}`);
  if (!(budgetPeriods as readonly unknown[]).includes(period)) {
    throw invalid('invalid_budget_period', `'${param}.period' must be one of ${budgetPeriods.join(', ')}.`, `${param}.period`);
  }
  return { period: period as BudgetPeriod, limitMicros: parsePositiveCredits(credits, `${param}.credits`) };
}

/** A per-minute limit: a positive integer up to `max`, or null for none. */
export function checkPerMinute(value: unknown, max: number, param: string): number | null {
  if (value === null) return null;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw invalid('invalid_rate_limit', `'${param}' must be an integer from 1 to ${max}, or null for no limit.`, param);
  }
  return value;
}

/** Applies a patch to limits; `prefix` names the patch's place in the request body (e.g. 'keyDefaults.'). */
export function patchKeyLimits(current: KeyLimits, patch: KeyLimitsPatch, prefix = ''): KeyLimits {
  return {
    budget: patch.budget === undefined ? current.budget : checkBudget(patch.budget, `${prefix}budget`),
    rpm: patch.rpm === undefined ? current.rpm : checkPerMinute(patch.rpm, maxRequestsPerMinute, `${prefix}rpm`),
    tpm: patch.tpm === undefined ? current.tpm : checkPerMinute(patch.tpm, maxTokensPerMinute, `${prefix}tpm`),
  };
}

export function budgetView(budget: Budget): BudgetView | null {
  return budget === null ? null : { period: budget.period, credits: formatCredits(budget.limitMicros) };
}

export function keyLimitsView(limits: KeyLimits) {
  return { budget: budgetView(limits.budget), rpm: limits.rpm, tpm: limits.tpm };
}

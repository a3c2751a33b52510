// A workspace's rules as the request path reads them: data policy (allowed regions, zero
// retention), its price book, prompt-logging opt-in, and the default limits for its keys.
import type { BudgetPeriod } from '../ledger/budgets.ts';

export interface DataPolicy {
  /** Regions a route must serve from (e.g. ["sg","us"]); null: any region. */
  allowedRegions: string[] | null;
  /** Only providers with zero data retention may serve this workspace. */
  zeroRetention: boolean;
}

export interface LoggingPolicy {
  /** Store prompts and completions (default false: metadata only). */
  enabled: boolean;
  /** How long stored prompts are kept before the retention job deletes them. */
  retentionDays: number;
}

export interface KeyLimits {
  budget: { period: BudgetPeriod; limitMicros: bigint } | null;
  /** Requests per minute; null: unlimited. */
  rpm: number | null;
  /** Tokens (input + output) per minute; null: unlimited. */
  tpm: number | null;
}

export interface WorkspaceEntry {
  id: string;
  status: 'active' | 'suspended';
  priceBookId: string | null;
  policy: DataPolicy;
  logging: LoggingPolicy;
  /** Applied to each key that does not set the limit itself. */
  keyDefaults: KeyLimits;
}

export const defaultDataPolicy: DataPolicy = { allowedRegions: null, zeroRetention: false };
export const defaultLoggingPolicy: LoggingPolicy = { enabled: false, retentionDays: 30 };
export const noLimits: KeyLimits = { budget: null, rpm: null, tpm: null };

/** A key's effective limits: its own where set, else the workspace's defaults. */
export function effectiveLimits(key: KeyLimits, defaults: KeyLimits): KeyLimits {
  return {
    budget: key.budget ?? defaults.budget,
    rpm: key.rpm ?? defaults.rpm,
    tpm: key.tpm ?? defaults.tpm,
  };
}

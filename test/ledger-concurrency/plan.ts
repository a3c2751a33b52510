// What the multi-process ledger test's parent and its workers agree on: the arguments, the report,
// and the amounts that every process must send identically (or, when contested, differently).
export interface WorkerArgs {
  url: string;
  mode: 'holds' | 'grants';
  workspaceId: string;
  worker: number;
  seed: number;
  lanes: number;
  opsPerLane: number;
  /** holds: keys every process uses (one hold each, same amount, settled for the same actual). */
  sharedHoldKeys: number;
  /** grants: the keys every process grants, each with the same content in every process. */
  grantKeys: number;
  /** grants: keys every process grants with content of its own: exactly one may win each. */
  contestedGrantKeys: number;
}

export interface HoldRecord {
  key: string;
  holdId: string;
  ok: boolean;
  replayed: boolean;
  amount: string;
  /** ok: availableAfterMicros; refused: availableMicros. */
  available: string;
}

export interface SettleRecord {
  key: string;
  holdId: string;
  actual: string;
  transferId: string | null;
  overdrawn: string;
  replayed: boolean;
}

export interface GrantRecord {
  key: string;
  amount: string;
  lotId: string | null;
  transferId: string | null;
  replayed: boolean;
  error: string | null;
}

export interface WorkerReport {
  worker: number;
  holds: HoldRecord[];
  settles: SettleRecord[];
  voids: { key: string; holdId: string; released: string; replayed: boolean }[];
  grants: GrantRecord[];
  /** Replays whose answer differed from the first one: must stay empty. */
  mismatches: string[];
  committer: { batches: number; ops: number; retries: number; isolatedRuns: number };
}

const credit = 1_000_000n;

/** The amount and actual of a shared hold key: the same in every process. */
export function sharedHold(j: number): { amount: bigint; actual: bigint } {
  const amount = BigInt(2 + (j % 9)) * credit + BigInt(j);
  return { amount, actual: amount / 3n };
}

/** The content of a grant key every process sends identically. */
export function sameGrant(k: number): bigint {
  return BigInt(1 + (k % 5)) * credit + BigInt(k);
}

/** A contested key's amount in one process: different in each, so at most one process can win it. */
export function contestedGrant(k: number, worker: number): bigint {
  return BigInt(10 + k) * credit + BigInt(worker);
}


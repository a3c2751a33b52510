// Opening a workspace for business: create it, then grant the operator's starter credits (if any)
// as a `starter` lot under an idempotency key derived from the workspace, so it happens once.
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import type { LedgerApi } from '../ledger/ledger.ts';
import { getSetting } from '../store/settings.ts';
import { parseCredits } from '../ledger/money.ts';
import { createWorkspace, type Workspace } from './workspaces.ts';

export const starterCreditsSetting = 'starter_credits';

export class Onboarding {
  readonly #db: Kysely<Database>;
  readonly #ledger: LedgerApi;

  constructor(db: Kysely<Database>, ledger: LedgerApi) {
    this.#db = db;
    this.#ledger = ledger;
  }

  async createWorkspace(input: { name: string; metadata?: Record<string, string> }): Promise<Workspace> {
    const workspace = await createWorkspace(this.#db, input);
    const starter = await getSetting<string>(this.#db, starterCreditsSetting);
    const micros = starter ? parseCredits(starter, starterCreditsSetting) : 0n;
    if (micros > 0n) {
      await this.#ledger.grant({
        workspaceId: workspace.id,
        amountMicros: micros,
        source: 'starter',
        note: 'Starter credits',
        idempotencyKey: `starter:${workspace.id}`,
      });
    }
    return workspace;
  }
}

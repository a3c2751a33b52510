// Applies the one migration set to either engine. Migrations are imported statically (no folder
// scan), so the set is the same in every process and in tests; Kysely's migrator takes a lock, so
// several processes starting at once against PostgreSQL migrate once.
import { Migrator, type Migration, type MigrationProvider } from 'kysely';
import type { Store } from './db.ts';
import * as m001 from './migrations/001_ledger.ts';
import * as m002 from './migrations/002_gateway.ts';
import * as m003 from './migrations/003_routing_policy.ts';
import * as m004 from './migrations/004_hold_outcomes.ts';
import * as m005 from './migrations/005_balance_leases.ts';

const migrations: Record<string, Migration> = {
  '001_ledger': m001,
  '002_gateway': m002,
  '003_routing_policy': m003,
  '004_hold_outcomes': m004,
  '005_balance_leases': m005,
};

class StaticProvider implements MigrationProvider {
  async getMigrations() {
    return migrations;
  }
}

export async function migrateToLatest(store: Store): Promise<string[]> {
  const migrator = new Migrator({ db: store.db, provider: new StaticProvider() });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`migration ${failed?.migrationName ?? '?'} failed: ${(error as Error).message ?? error}`, { cause: error });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

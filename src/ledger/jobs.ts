// The ledger's background work in every process: void holds past their timeout and expire lots
// past their expiry. Both are safe to run in several processes at once (conditional updates).
import type { Logger } from 'pino';
import type { LedgerApi } from './ledger.ts';

export const holdSweepIntervalMs = 10_000;
export const lotExpiryIntervalMs = 60_000;

export function startLedgerJobs(ledger: LedgerApi, log: Logger): () => void {
  const run = (name: string, job: () => Promise<number>) => async () => {
    try {
      const n = await job();
      if (n > 0) log.info({ job: name, count: n }, `ledger job ${name}`);
    } catch (err) {
      log.error({ err, job: name }, `ledger job ${name} failed`);
    }
  };
  const sweep = setInterval(run('sweep_expired_holds', () => ledger.sweepExpiredHolds()), holdSweepIntervalMs);
  const expire = setInterval(run('expire_lots', () => ledger.expireLots()), lotExpiryIntervalMs);
  sweep.unref();
  expire.unref();
  return () => {
    clearInterval(sweep);
    clearInterval(expire);
  };
}

// The `tollgate` command: start the server, migrate the database, verify the ledger.
import { Command } from 'commander';
import { loadConfig } from '../config.ts';
import { createLogger, openAndMigrate, startServer } from '../server.ts';
import { verifyLedger } from '../ledger/verify.ts';
import { rotateMasterKey } from '../auth/admin.ts';
import { printWelcome } from './welcome.ts';
import { setUpDemoIfEmpty } from './first-run.ts';

const program = new Command();
program.name('tollgate').description('Self-hosted AI gateway with a prepaid credit ledger');

program
  .command('start')
  .description('migrate the database and serve the gateway, APIs and web app')
  .action(async () => {
    const config = loadConfig();
    const log = createLogger(config);
    const running = await startServer(config, log);
    const demo = await setUpDemoIfEmpty(running.ctx);
    printWelcome(running, demo);
    const shutdown = async (signal: string) => {
      log.info({ signal }, 'shutting down');
      await running.stop();
      process.exit(0);
    };
    process.once('SIGINT', () => void shutdown('SIGINT'));
    process.once('SIGTERM', () => void shutdown('SIGTERM'));
  });

program
  .command('migrate')
  .description('apply pending database migrations and exit')
  .action(async () => {
    const config = loadConfig();
    const store = await openAndMigrate(config, createLogger(config));
    await store.close();
    console.log(`database ${store.location} is up to date`);
  });

const ledger = program.command('ledger').description('credit ledger tools');
ledger
  .command('verify')
  .description('check every ledger invariant; exits 1 on any violation')
  .action(async () => {
    const config = loadConfig();
    const store = await openAndMigrate(config, createLogger({ logLevel: 'warn' }));
    try {
      const violations = await verifyLedger(store.db);
      if (violations.length === 0) {
        console.log(`ledger ok: every invariant holds (${store.location})`);
        return;
      }
      for (const v of violations) console.error(`VIOLATION ${v.check} ${v.subject}: ${v.detail}`);
      console.error(`${violations.length} violation(s)`);
      process.exitCode = 1;
    } finally {
      await store.close();
    }
  });

program
  .command('rotate-master-key')
  .description('replace the stored operator master key and print the new one once')
  .action(async () => {
    const config = loadConfig();
    if (config.masterKey) {
      console.error('TOLLGATE_MASTER_KEY is set in the environment; change it there instead.');
      process.exitCode = 1;
      return;
    }
    const store = await openAndMigrate(config, createLogger({ logLevel: 'warn' }));
    try {
      console.log(`new master key (shown once): ${await rotateMasterKey(store.db)}`);
    } finally {
      await store.close();
    }
  });

program.parseAsync().catch((err: unknown) => {
  console.error(`tollgate: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});

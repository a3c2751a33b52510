// SQLite WAL checkpoints off the request path. By default the connection that commits a
// transaction also runs the checkpoint when the WAL has grown past 1,000 pages: copying pages into
// the database file and syncing it, in the middle of whichever call's settlement happened to
// commit then. Here a worker thread with its own connection checkpoints every few hundred
// milliseconds instead (PASSIVE: it never blocks a writer), so commits only append to the WAL.
// The connection's own automatic checkpoint stays as a fallback at a larger size, should the
// worker ever fall behind or stop.
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';

export const checkpointIntervalMs = 250;
/** The writing connection's own checkpoint, only reached when the worker is not keeping up. */
export const fallbackAutocheckpointPages = 10_000;

// The worker is a few lines of CommonJS, evaluated as is: it needs no TypeScript loader.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma('busy_timeout = 1000');
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message || err) });
  }
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m !== 'stop') return;
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

export interface Checkpointer {
  stop(): Promise<void>;
}

/** Starts checkpointing `file` in a worker thread; `onError` hears of a checkpoint that failed. */
export function startCheckpointer(file: string, onError: (message: string) => void = () => {}): Checkpointer {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  const worker = new Worker(workerSource, { eval: true, workerData: { file, driver, intervalMs: checkpointIntervalMs } });
  worker.unref();
  worker.on('message', (m: { error?: string }) => {
    if (m.error) onError(m.error);
  });
  worker.on('error', (err) => onError(err.message));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    async stop() {
      worker.postMessage('stop');
      await exited;
    },
  };
}

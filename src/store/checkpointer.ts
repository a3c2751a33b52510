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
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    if (r && r.log > 0) parentPort.postMessage({ log: r.log, checkpointed: r.checkpointed });
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

export interface CheckpointerEvents {
  /** A checkpoint that failed (the writing connection's own checkpoint still applies). */
  onError?: (message: string) => void;
  /** A checkpoint of a WAL that had frames: how many it had and how many are now in the database file. */
  onCheckpoint?: (frames: { log: number; checkpointed: number }) => void;
}

/** Starts checkpointing `file` in a worker thread. */
export function startCheckpointer(file: string, events: CheckpointerEvents = {}): Checkpointer {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  const worker = new Worker(workerSource, { eval: true, workerData: { file, driver, intervalMs: checkpointIntervalMs } });
  worker.unref();
  worker.on('message', (m: { error?: string; log?: number; checkpointed?: number }) => {
    if (m.error !== undefined) events.onError?.(m.error);
    else if (m.log !== undefined) events.onCheckpoint?.({ log: m.log, checkpointed: m.checkpointed ?? 0 });
  });
  worker.on('error', (err) => events.onError?.(err.message));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    async stop() {
      worker.postMessage('stop');
      await exited;
    },
  };
}

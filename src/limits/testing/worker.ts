// One Tollgate-like process for redis.test.ts: its own RedisRateLimiter (own connection), which
// says {"ready":true} once connected, waits for "go" on stdin so every process starts together,
// fires `attempts` admits at one key in overlapping waves (many in flight at once, spread over a
// few hundred milliseconds so the processes truly contend), and prints what it was answered.
import readline from 'node:readline';
import pino from 'pino';
import { RedisRateLimiter } from '../redis.ts';
import type { Admission } from '../rate-limiter.ts';

export interface WorkerArgs {
  url: string;
  prefix: string;
  keyId: string;
  rpm: number;
  attempts: number;
  /** Admits sent at once; a new wave leaves every `waveIntervalMs` without waiting for the last. */
  waveSize: number;
  waveIntervalMs: number;
}

export interface WorkerReport {
  admitted: number;
  refused: number;
  unavailable: number;
}

const readyTimeoutMs = 10_000;

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]!) as WorkerArgs;
  const limiter = new RedisRateLimiter({ url: args.url, prefix: args.prefix, failOpen: false, log: pino({ level: 'warn' }, process.stderr) });
  const deadline = Date.now() + readyTimeoutMs;
  while (!limiter.health().healthy) {
    if (Date.now() > deadline) throw new Error(`Redis not ready: ${limiter.health().lastError}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) if (line.trim() === 'go') break;
  lines.close();
  const pending: Promise<Admission>[] = [];
  for (let sent = 0; sent < args.attempts; sent += args.waveSize) {
    if (sent > 0) await new Promise((resolve) => setTimeout(resolve, args.waveIntervalMs));
    for (let i = sent; i < Math.min(sent + args.waveSize, args.attempts); i++) pending.push(limiter.admit(args.keyId, { rpm: args.rpm, tpm: null }));
  }
  const answers = await Promise.all(pending);
  const report: WorkerReport = { admitted: 0, refused: 0, unavailable: 0 };
  for (const a of answers) {
    if (a.ok) report.admitted++;
    else if (a.limit === 'unavailable') report.unavailable++;
    else report.refused++;
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
  await limiter.close();
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});

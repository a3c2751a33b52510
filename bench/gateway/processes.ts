// The benchmark's child processes: each server under test runs in its own process, started here,
// waited for over HTTP, and stopped by its own pid at the end (also when the run fails).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const outputTailLines = 40;
const readyPollMs = 100;
const stopGraceMs = 10_000;

export interface Child {
  name: string;
  process: ChildProcess;
  /** The last lines the child printed, for the error when it fails. */
  tail: string[];
  exited: Promise<number | null>;
  /** Wall-clock time of the spawn (Date.now()), to place a CPU profile's samples. */
  startedAtMs: number;
}

const running = new Set<Child>();

export function startChild(name: string, command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Child {
  const startedAtMs = Date.now();
  const proc = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const tail: string[] = [];
  const keep = (data: Buffer) => {
    for (const line of data.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      tail.push(line);
      if (tail.length > outputTailLines) tail.shift();
    }
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const child: Child = { name, process: proc, tail, exited, startedAtMs };
  running.add(child);
  void exited.then(() => running.delete(child));
  return child;
}

/** Polls `url` until it answers 2xx; fails at once if the child exits first. */
export async function waitForHttp(child: Child, url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null | undefined;
  void child.exited.then((code) => {
    exitCode = code;
  });
  while (Date.now() < deadline) {
    if (exitCode !== undefined) throw new Error(`${child.name} exited with code ${exitCode} before it was ready:\n${child.tail.join('\n')}`);
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(readyPollMs);
  }
  throw new Error(`${child.name} was not ready at ${url} after ${timeoutMs} ms:\n${child.tail.join('\n')}`);
}

/** SIGTERM, then SIGKILL if the child has not exited after a grace period. Returns its exit code. */
export async function stopChild(child: Child): Promise<number | null> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return child.process.exitCode;
  child.process.kill('SIGTERM');
  const timer = setTimeout(() => child.process.kill('SIGKILL'), stopGraceMs);
  const code = await child.exited;
  clearTimeout(timer);
  return code;
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((child) => stopChild(child)));
}

/** Ports free on 127.0.0.1 right now, all different (the OS picks them; each is held until all are). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => {
      const server = createServer();
      return new Promise<typeof server>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve(server));
      });
    }),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    return typeof address === 'object' && address ? address.port : 0;
  });
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** Runs a command to its end and returns its exit code and output. */
export function runToEnd(command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout.on('data', (d: Buffer) => (output += d.toString('utf8')));
    proc.stderr.on('data', (d: Buffer) => (output += d.toString('utf8')));
    proc.once('error', reject);
    proc.once('exit', (code) => resolve({ code, output }));
  });
}

let clockTicksPerSecond: number | null = null;

/**
 * CPU seconds (user and system, all threads) a child has used so far, from /proc; null where
 * there is no /proc. Another process taking the cores lowers a server's requests per second
 * far more than the CPU it spends on each one.
 */
export function cpuSecondsOf(child: Child): number | null {
  try {
    clockTicksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    const stat = readFileSync(`/proc/${child.process.pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces, inside parentheses): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicksPerSecond;
  } catch {
    return null;
  }
}

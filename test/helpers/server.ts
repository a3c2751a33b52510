// A real Tollgate server for tests: a fresh database of the given engine, a fixed master key,
// listening on 127.0.0.1 on a free port.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../../src/config.ts';
import { createLogger, startServer, type Running } from '../../src/server.ts';
import type { Engine } from '../../src/store/db.ts';
import { createTestDatabase } from './store.ts';

export const testMasterKey = 'tg_admin_test_master_key_0123456789';

export type AdminCall = (method: string, route: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number; body: any; headers: Headers }>;

export interface TestServer {
  running: Running;
  url: string;
  config: Config;
  admin: AdminCall;
  close(): Promise<void>;
}

/** Calls the admin API of the server at `url` (in this process or another) with the test master key. */
export function adminCall(url: string): AdminCall {
  return async (method, route, body, headers = {}) => {
    const res = await fetch(`${url}${route}`, {
      method,
      headers: { authorization: `Bearer ${testMasterKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
  };
}

export interface TestServerOptions {
  /** Receives every log line the server writes (instead of stdout). */
  logDestination?: { write(line: string): void };
}

export async function startTestServer(engine: Engine, env: Record<string, string> = {}, options: TestServerOptions = {}): Promise<TestServer> {
  const database = await createTestDatabase(engine);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-data-'));
  const config = loadConfig({
    DATABASE_URL: database.url,
    PORT: '0',
    HOST: '127.0.0.1',
    TOLLGATE_MASTER_KEY: testMasterKey,
    TOLLGATE_SECRET_KEY: randomBytes(32).toString('hex'),
    TOLLGATE_DATA_DIR: dataDir,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    DB_POOL_SIZE: '5',
    ...env,
  });
  const running = await startServer(config, createLogger(config, options.logDestination));
  const url = running.url.replace('0.0.0.0', '127.0.0.1');
  return {
    running,
    url,
    config,
    admin: adminCall(url),
    async close() {
      await running.stop();
      await database.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// The upstream transport against a real HTTP server on 127.0.0.1: whole bodies, bodies read piece
// by piece, and what lets the upstream go (a reader that stops, the call's signal, the limits).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProviderAdapter } from '../providers/types.ts';
import { CallSignal, sendUpstream, UpstreamTimeout, UpstreamTooLarge } from './upstream.ts';

const adapter = {} as ProviderAdapter;
let baseUrl = '';
/** Resolves, per path, when the server saw the client close before the answer ended. */
const clientClosed = new Map<string, Promise<void>>();
const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  const url = new URL(req.url ?? '/', 'http://x');
  clientClosed.set(url.pathname, new Promise((resolve) => res.once('close', () => !res.writableFinished && resolve())));
  void route(url, req, res);
});

async function route(url: URL, req: IncomingMessage, res: ServerResponse) {
  let body = '';
  for await (const chunk of req) body += chunk;
  const pieces = Number(url.searchParams.get('pieces') ?? 1);
  const size = Number(url.searchParams.get('size') ?? 4);
  const gapMs = Number(url.searchParams.get('gap') ?? 0);
  if (url.pathname === '/slow-headers') return setTimeout(() => res.end('late'), 1000).unref();
  if (url.pathname === '/echo') return res.writeHead(201, { 'content-type': 'application/json', 'x-seen': body }).end(JSON.stringify({ got: JSON.parse(body) }));
  res.writeHead(200, { 'content-type': 'text/plain' });
  for (let i = 0; i < pieces && !res.destroyed; i++) {
    res.write(String(i % 10).repeat(size));
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
  }
  if (url.pathname !== '/never-ends') res.end();
}

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const send = (path: string, opts: { signal?: CallSignal | AbortSignal; headersTimeoutMs?: number; bodyIdleMs?: number; maxBodyBytes?: number; body?: string } = {}) =>
  sendUpstream(adapter, { url: `${baseUrl}${path}`, method: 'POST', headers: { 'content-type': 'application/json' }, body: opts.body ?? '{}' }, {
    signal: opts.signal ?? new CallSignal(),
    headersTimeoutMs: opts.headersTimeoutMs ?? 5000,
    bodyIdleMs: opts.bodyIdleMs ?? 5000,
    maxBodyBytes: opts.maxBodyBytes,
  });

describe('sendUpstream', () => {
  it('sends the request and answers status, headers and the whole body', async () => {
    const answer = await send('/echo', { body: JSON.stringify({ model: 'm', n: 1 }) });
    expect(answer.status).toBe(201);
    expect(answer.headers['x-seen']).toBe('{"model":"m","n":1}');
    expect(JSON.parse(await answer.text())).toEqual({ got: { model: 'm', n: 1 } });
  });

  it('joins a body that came in many pieces, and reads it only once', async () => {
    const answer = await send('/body?pieces=50&size=1000&gap=1');
    const text = await answer.text();
    expect(text.length).toBe(50_000);
    expect(text.slice(0, 1001)).toBe('0'.repeat(1000) + '1');
    await expect(answer.text()).rejects.toThrow(/already read/);
  });

  it('hands a streamed body over piece by piece, all of it, to a reader slower than the upstream', async () => {
    // 4 MB against a read-ahead of 1 MB: the upstream is paused and resumed on the way.
    const answer = await send('/body?pieces=64&size=65536');
    let bytes = 0;
    let pieces = 0;
    for await (const piece of answer.body) {
      bytes += piece.byteLength;
      if (pieces++ % 8 === 0) await new Promise((r) => setTimeout(r, 2));
    }
    expect(bytes).toBe(64 * 65536);
  });

  it('lets the upstream go when the reader stops early', async () => {
    const answer = await send('/never-ends?pieces=1000&size=10&gap=5');
    for await (const piece of answer.body) {
      expect(piece.byteLength).toBeGreaterThan(0);
      break;
    }
    await clientClosed.get('/never-ends');
  });

  it("stops a body mid-way when the call's signal aborts (a CallSignal or an AbortSignal)", async () => {
    for (const [path, signal, abort] of [
      ['/cut-a', new CallSignal(), (s: CallSignal) => s.abort(new Error('client closed'))],
      ['/cut-b', new AbortController(), (c: AbortController) => c.abort(new Error('client closed'))],
    ] as const) {
      const answer = await send(`${path}?pieces=1000&size=10&gap=5`, { signal: signal instanceof AbortController ? signal.signal : signal });
      const reading = (async () => {
        for await (const piece of answer.body) void piece;
      })();
      (abort as (s: typeof signal) => void)(signal);
      await expect(reading).rejects.toThrow('client closed');
      await clientClosed.get(path);
    }
  });

  it('refuses to start when the signal has already aborted', async () => {
    const signal = new CallSignal();
    signal.abort(new Error('deadline'));
    await expect(send('/echo', { signal })).rejects.toThrow('deadline');
  });

  it('turns a late answer into UpstreamTimeout, before the headers and between body pieces', async () => {
    await expect(send('/slow-headers', { headersTimeoutMs: 100 })).rejects.toBeInstanceOf(UpstreamTimeout);
    const answer = await send('/never-ends?pieces=1&size=10', { bodyIdleMs: 100 });
    await expect(answer.text()).rejects.toBeInstanceOf(UpstreamTimeout);
  });

  it('cuts a body larger than the limit', async () => {
    const answer = await send('/big?pieces=100&size=1000&gap=2', { maxBodyBytes: 5000 });
    await expect(answer.text()).rejects.toBeInstanceOf(UpstreamTooLarge);
    await clientClosed.get('/big');
    const small = await send('/body?pieces=5&size=1000', { maxBodyBytes: 5000 });
    expect((await small.text()).length).toBe(5000);
  });
});

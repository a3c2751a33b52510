// Sends a prepared upstream request: over undici keep-alive pools for HTTP providers, in-process
// for the sandbox. Time limits: `headersTimeoutMs` until the upstream answers, `bodyIdleMs` between
// body chunks; the caller's AbortSignal cancels everything (client gone, overall deadline).
import { Agent, request } from 'undici';
import type { PreparedRequest, ProviderAdapter } from '../providers/types.ts';

export interface UpstreamAnswer {
  status: number;
  headers: Record<string, string>;
  body: AsyncIterable<Uint8Array>;
  /** Reads the whole body as text (for errors and non-streamed answers). */
  text(): Promise<string>;
}

const connectionsPerOrigin = 128;
const keepAliveTimeoutMs = 30_000;
export const maxUpstreamBodyBytes = 64 * 1024 * 1024;

const agent = new Agent({ connections: connectionsPerOrigin, keepAliveTimeout: keepAliveTimeoutMs, pipelining: 1 });

export class UpstreamTimeout extends Error {}

export async function sendUpstream(
  adapter: ProviderAdapter,
  prepared: PreparedRequest,
  opts: { signal: AbortSignal; headersTimeoutMs: number; bodyIdleMs: number },
): Promise<UpstreamAnswer> {
  if (adapter.local) {
    const res = await adapter.local.send(prepared, opts.signal);
    return { ...res, text: () => readAll(res.body) };
  }
  try {
    const res = await request(prepared.url, {
      method: prepared.method,
      headers: prepared.headers,
      body: prepared.method === 'GET' ? undefined : prepared.body,
      signal: opts.signal,
      dispatcher: agent,
      headersTimeout: opts.headersTimeoutMs,
      bodyTimeout: opts.bodyIdleMs,
    });
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') headers[k] = v;
    return { status: res.statusCode, headers, body: res.body, text: () => readAll(res.body) };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
      throw new UpstreamTimeout(`upstream did not answer in time (${code})`);
    }
    throw err;
  }
}

async function readAll(body: AsyncIterable<Uint8Array>): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > maxUpstreamBodyBytes) throw new Error('upstream answer too large');
    parts.push(Buffer.from(chunk));
  }
  return Buffer.concat(parts).toString('utf8');
}

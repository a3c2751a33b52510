// Sends PreparedRequests to the mock upstreams the way the gateway does (undici), and feeds
// streamed answers through an adapter's StreamTranslator piece by piece as they arrive.
import { request } from 'undici';
import type { ChatChunk, LocalTransport, PreparedRequest, StreamTranslator } from '../../src/providers/types.ts';

export interface SentAnswer {
  status: number;
  headers: Record<string, string>;
  text: string;
}

export async function send(prepared: PreparedRequest): Promise<SentAnswer> {
  const res = await request(prepared.url, { method: prepared.method, headers: prepared.headers, body: prepared.body });
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') headers[k] = v;
  return { status: res.statusCode, headers, text: await res.body.text() };
}

export interface StreamedAnswer {
  status: number;
  chunks: ChatChunk[];
  /** How many body pieces arrived from the socket. */
  pieces: number;
  /** The body ended with an error (socket destroyed). */
  broken: boolean;
  /** The body of a non-200 answer. */
  errorText?: string;
}

/** Feeds bytes through a translator exactly as the gateway does: decode with stream:true, push, end. */
export async function translateBody(body: AsyncIterable<Uint8Array>, translator: StreamTranslator): Promise<Omit<StreamedAnswer, 'status' | 'errorText'>> {
  const decoder = new TextDecoder();
  const chunks: ChatChunk[] = [];
  let pieces = 0;
  let broken = false;
  try {
    for await (const piece of body) {
      pieces++;
      chunks.push(...translator.push(decoder.decode(piece, { stream: true })));
    }
  } catch {
    broken = true;
  }
  chunks.push(...translator.push(decoder.decode()), ...translator.end());
  return { chunks, pieces, broken };
}

export async function sendStream(prepared: PreparedRequest, translator: StreamTranslator): Promise<StreamedAnswer> {
  const res = await request(prepared.url, { method: prepared.method, headers: prepared.headers, body: prepared.body });
  if (res.statusCode !== 200) return { status: res.statusCode, chunks: [], pieces: 0, broken: false, errorText: await res.body.text() };
  return { status: res.statusCode, ...(await translateBody(res.body, translator)) };
}

export async function sendLocal(transport: LocalTransport, prepared: PreparedRequest, signal = new AbortController().signal): Promise<SentAnswer> {
  const res = await transport.send(prepared, signal);
  const decoder = new TextDecoder();
  let text = '';
  for await (const piece of res.body) text += decoder.decode(piece, { stream: true });
  return { status: res.status, headers: res.headers, text: text + decoder.decode() };
}

/** The text a list of chunks carries, choice 0. */
export function textOf(chunks: ChatChunk[]): string {
  return chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
}

/** Tool calls assembled from stream deltas, choice 0, as a client SDK does. */
export function toolCallsOf(chunks: ChatChunk[]): Array<{ id: string; name: string; arguments: string }> {
  const calls: Array<{ id: string; name: string; arguments: string }> = [];
  for (const chunk of chunks) {
    for (const delta of chunk.choices[0]?.delta.tool_calls ?? []) {
      const call = (calls[delta.index] ??= { id: '', name: '', arguments: '' });
      if (delta.id) call.id = delta.id;
      if (delta.function?.name) call.name += delta.function.name;
      if (delta.function?.arguments) call.arguments += delta.function.arguments;
    }
  }
  return calls;
}

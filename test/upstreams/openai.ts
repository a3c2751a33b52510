// A stand-in for OpenAI's API (and Azure OpenAI's deployment URLs) on 127.0.0.1: the same JSON and
// SSE wire format, deterministic answers from the sandbox engine with usage counted by the
// gateway's tokenizer (so streamed and non-streamed answers report the same usage), and
// switchable failures (errors, delays, slow streams, drops, in-stream errors, missing usage).
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  answerChat,
  chatChunksOf,
  chatCompletionOf,
  embeddingsOf,
  imagesOf,
  openaiErrorBody,
  openaiUsageOf,
  type ChatAnswer,
} from '../../src/providers/sandbox/engine.ts';
import type { ChatRequest, EmbeddingsRequest, ImagesRequest, OpenAIUsage } from '../../src/providers/types.ts';

export const maxMockBodyBytes = 32 * 1024 * 1024;
/** The name that starts every generated reply: `Mock OpenAI reply to: "..."`. */
export const openaiMockName = 'Mock OpenAI';

export interface OpenAIMockBehavior {
  /** Answer the next `count` requests with `status` and an OpenAI error body (or `body` verbatim). */
  fail?: { count: number; status: number; type?: string; code?: string; message?: string; body?: unknown; retryAfterSeconds?: number };
  /** Wait before sending response headers (any answer). */
  headersDelayMs?: number;
  /** Wait before each SSE event. */
  eventDelayMs?: number;
  /** Destroy the socket after writing this many SSE events. */
  dropAfterEvents?: number;
  /** After this many SSE events send `data: {"error":...}` and end the stream (no [DONE]). */
  streamError?: { afterEvents: number; type?: string; code?: string; message?: string };
  /** Report no usage: none in JSON answers, no usage chunk even when include_usage is asked. */
  omitUsage?: boolean;
  /** Report this many prompt tokens as cached (prompt_tokens_details.cached_tokens). */
  cachedTokens?: number;
  /** Add this many reasoning tokens to completion_tokens (completion_tokens_details.reasoning_tokens). */
  reasoningTokens?: number;
  /** Answer with this text instead of the generated one. */
  replyText?: string;
  /** Send a whole SSE stream (up to a `streamError`, if set) in one write with its end, as a short answer often arrives. */
  wholeStream?: boolean;
  /** Send JSON answers chunked, in a few pieces, without a content-length. */
  chunked?: boolean;
  /** Add a `padding` field of this many characters to a non-streamed chat answer (a huge answer without a huge reply). */
  padChars?: number;
}

export interface OpenAIMockOptions {
  /** When set, any other key (Bearer, or api-key on Azure paths) gets a 401. */
  apiKey?: string;
  behavior?: OpenAIMockBehavior;
}

export interface RecordedRequest {
  method: string;
  /** The path without the query. */
  path: string;
  /** The query parameters (e.g. Azure's api-version). */
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (the raw text when it was not JSON). */
  body: unknown;
  /** SSE events written to the socket (streamed answers). */
  eventsWritten: number;
  /** How the exchange ended: the whole answer written, or the connection closed first (either side). Unset while open. */
  end?: 'finished' | 'closed';
}

export interface OpenAIMock {
  /** OpenAI's base URL on the mock, `http://127.0.0.1:<port>/v1`. */
  url: string;
  /** The bare origin, the base URL for Azure (`{origin}/openai/deployments/...`). */
  origin: string;
  port: number;
  requests: RecordedRequest[];
  /** Replaces the behaviour (and restarts its `fail` count). */
  setBehavior(behavior: OpenAIMockBehavior): void;
  close(): Promise<void>;
}

type Loose = Record<string, any>;

class MockHttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

/** Chat parameters OpenAI accepts; like OpenAI, the mock rejects any other. */
const knownChatFields = new Set([
  'model', 'messages', 'stream', 'stream_options', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'n',
  'stop', 'tools', 'tool_choice', 'parallel_tool_calls', 'response_format', 'user', 'seed', 'presence_penalty',
  'frequency_penalty', 'logit_bias', 'logprobs', 'top_logprobs', 'reasoning_effort', 'metadata', 'store', 'service_tier',
  'modalities', 'audio', 'prediction', 'web_search_options', 'verbosity', 'prompt_cache_key', 'safety_identifier',
  'functions', 'function_call',
]);

type Operation = 'chat' | 'embeddings' | 'images' | 'models';

interface Route {
  operation: Operation;
  /** The Azure deployment, for deployment URLs. */
  deployment?: string;
}

function routeOf(method: string, path: string): Route | null {
  const azure = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|embeddings|images\/generations)$/.exec(path);
  const openai = /^\/v1\/(chat\/completions|embeddings|images\/generations|models)$/.exec(path);
  const name = azure?.[2] ?? openai?.[1];
  if (!name) return null;
  const operation: Operation = name === 'chat/completions' ? 'chat' : name === 'images/generations' ? 'images' : (name as Operation);
  if ((operation === 'models') !== (method === 'GET')) return null;
  return azure ? { operation, deployment: decodeURIComponent(azure[1]) } : { operation };
}

export async function startOpenAIMock(options: OpenAIMockOptions = {}): Promise<OpenAIMock> {
  let behavior: OpenAIMockBehavior = options.behavior ?? {};
  let failuresLeft = behavior.fail?.count ?? 0;
  let sequence = 0;
  const requests: RecordedRequest[] = [];

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent || res.destroyed) res.destroy();
      else if (err instanceof MockHttpError) sendError(res, err);
      else sendJson(res, 500, openaiErrorBody(String(err), 'server_error'));
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = `req_mock${String(++sequence).padStart(6, '0')}`;
    res.setHeader('x-request-id', requestId);
    const raw = await readBody(req);
    let body: unknown = raw;
    try {
      body = raw === '' ? undefined : JSON.parse(raw);
    } catch {
      // kept as text: validation answers 400
    }
    const url = new URL(req.url ?? '/', 'http://mock');
    const record: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, body, eventsWritten: 0 };
    requests.push(record);
    res.on('close', () => {
      record.end = res.writableFinished ? 'finished' : 'closed';
    });

    const current = behavior;
    if (current.headersDelayMs) await sleep(current.headersDelayMs);
    if (res.destroyed) return;
    if (failuresLeft > 0 && current.fail) {
      failuresLeft--;
      const { status, type, code, message, retryAfterSeconds } = current.fail;
      if (retryAfterSeconds !== undefined) res.setHeader('retry-after', String(retryAfterSeconds));
      const errorBody = current.fail.body ?? openaiErrorBody(message ?? `Mock failure (${status}).`, type ?? errorTypeFor(status), null, code ?? null);
      sendJson(res, status, errorBody);
      return;
    }
    const route = routeOf(req.method ?? 'GET', url.pathname);
    if (!route) throw new MockHttpError(404, 'invalid_request_error', `Invalid URL (${req.method} ${url.pathname})`);
    authenticate(req, route, url, options.apiKey);
    if (route.operation === 'models') {
      sendJson(res, 200, { object: 'list', data: [{ id: 'gpt-4o-mini', object: 'model', created: 1721172741, owned_by: 'system' }] });
      return;
    }
    if (typeof body !== 'object' || body === null) {
      throw new MockHttpError(400, 'invalid_request_error', 'We could not parse the JSON body of your request.');
    }
    const request = body as Loose;
    const model = route.deployment !== undefined ? (typeof request.model === 'string' ? request.model : route.deployment) : requireModel(request);
    if (route.operation === 'embeddings') {
      validateEmbeddings(request);
      const response = embeddingsOf({ ...(request as EmbeddingsRequest), model });
      sendJson(res, 200, current.omitUsage ? { ...response, usage: undefined } : response);
      return;
    }
    if (route.operation === 'images') {
      if (typeof request.prompt !== 'string' || request.prompt === '') throw new MockHttpError(400, 'invalid_request_error', "Missing required parameter: 'prompt'.", 'prompt');
      sendJson(res, 200, imagesOf({ ...(request as ImagesRequest), model }));
      return;
    }
    validateChat(request);
    const chatRequest = { ...(request as ChatRequest), model };
    const answer = answerChat(chatRequest, { name: openaiMockName, replyText: current.replyText });
    const usage = current.omitUsage ? null : usageOf(answer, current);
    if (chatRequest.stream === true) await stream(res, chatChunksOf(chatRequest, answer, usage), current, record);
    else {
      const completion = chatCompletionOf(chatRequest, answer, usage);
      const padded = current.padChars ? { ...completion, padding: 'x'.repeat(current.padChars) } : completion;
      if (current.chunked) await sendChunked(res, 200, padded);
      else sendJson(res, 200, padded);
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: `${origin}/v1`,
    origin,
    port,
    requests,
    setBehavior(next) {
      behavior = next;
      failuresLeft = next.fail?.count ?? 0;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function usageOf(answer: ChatAnswer, behavior: OpenAIMockBehavior): OpenAIUsage {
  const usage = openaiUsageOf(answer);
  const cached = Math.min(behavior.cachedTokens ?? 0, usage.prompt_tokens);
  const reasoning = behavior.reasoningTokens ?? 0;
  const completion = usage.completion_tokens + reasoning;
  return {
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: completion,
    total_tokens: usage.prompt_tokens + completion,
    prompt_tokens_details: { cached_tokens: cached },
    completion_tokens_details: { reasoning_tokens: reasoning },
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req) {
    bytes += (chunk as Buffer).length;
    if (bytes > maxMockBodyBytes) throw new MockHttpError(413, 'invalid_request_error', 'Request too large.');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function errorTypeFor(status: number): string {
  if (status === 429) return 'rate_limit_exceeded';
  if (status === 401) return 'invalid_request_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The JSON in four pieces with `transfer-encoding: chunked`, so the reader cannot know its length up front. */
async function sendChunked(res: ServerResponse, status: number, body: unknown): Promise<void> {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json' });
  const step = Math.ceil(text.length / 4);
  for (let at = 0; at < text.length; at += step) {
    if (res.destroyed) return;
    if (!res.write(text.slice(at, at + step))) await new Promise((resolve) => res.once('drain', resolve));
    await sleep(1);
  }
  res.end();
}

function sendError(res: ServerResponse, err: MockHttpError): void {
  sendJson(res, err.status, openaiErrorBody(err.message, err.type, err.param, err.code));
}

function authenticate(req: IncomingMessage, route: Route, url: URL, apiKey: string | undefined): void {
  if (route.deployment !== undefined) {
    if (!url.searchParams.get('api-version')) throw new MockHttpError(404, 'invalid_request_error', 'Resource not found', null, '404');
    const key = req.headers['api-key'];
    if (typeof key !== 'string' || key === '' || (apiKey !== undefined && key !== apiKey)) {
      throw new MockHttpError(401, 'invalid_request_error', 'Access denied due to invalid subscription key or wrong API endpoint.', null, '401');
    }
    return;
  }
  const match = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
  if (!match) throw new MockHttpError(401, 'invalid_request_error', "You didn't provide an API key.");
  if (apiKey !== undefined && match[1] !== apiKey) throw new MockHttpError(401, 'invalid_request_error', 'Incorrect API key provided.', null, 'invalid_api_key');
}

function requireModel(request: Loose): string {
  if (typeof request.model !== 'string' || request.model === '') {
    throw new MockHttpError(400, 'invalid_request_error', 'you must provide a model parameter', 'model');
  }
  return request.model;
}

function validateChat(request: Loose): void {
  for (const field of Object.keys(request)) {
    if (!knownChatFields.has(field)) throw new MockHttpError(400, 'invalid_request_error', `Unrecognized request argument supplied: ${field}`);
  }
  if (!Array.isArray(request.messages) || request.messages.length === 0) {
    throw new MockHttpError(400, 'invalid_request_error', "Invalid 'messages': empty array. Expected an array with minimum length 1.", 'messages', 'empty_array');
  }
  if (request.stream_options != null && request.stream !== true) {
    throw new MockHttpError(400, 'invalid_request_error', "The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options');
  }
  request.messages.forEach((m: Loose, i: number) => {
    if (!['system', 'developer', 'user', 'assistant', 'tool'].includes(m?.role)) {
      throw new MockHttpError(400, 'invalid_request_error', `Invalid value for 'messages[${i}].role'.`, `messages[${i}].role`);
    }
  });
}

function validateEmbeddings(request: Loose): void {
  const input = request.input;
  if (!(typeof input === 'string' || (Array.isArray(input) && input.length > 0))) {
    throw new MockHttpError(400, 'invalid_request_error', "'input' is a required property", 'input');
  }
}

/** The `data: {"error": ...}` event a `streamError` ends the stream with. */
function streamErrorEvent(error: NonNullable<OpenAIMockBehavior['streamError']>): string {
  const { type = 'server_error', code = null, message = 'The server had an error while processing your request.' } = error;
  return `data: ${JSON.stringify(openaiErrorBody(message, type, null, code))}\n\n`;
}

async function stream(res: ServerResponse, chunks: unknown[], behavior: OpenAIMockBehavior, record: RecordedRequest): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
  res.flushHeaders();
  const events = [...chunks.map((chunk) => `data: ${JSON.stringify(chunk)}\n\n`), 'data: [DONE]\n\n'];
  if (behavior.wholeStream) {
    const cut = behavior.streamError ? behavior.streamError.afterEvents : events.length;
    let text = events.slice(0, cut).join('');
    if (behavior.streamError) text += streamErrorEvent(behavior.streamError);
    record.eventsWritten += Math.min(cut, events.length);
    res.end(text);
    return;
  }
  for (let i = 0; i < events.length; i++) {
    if (res.destroyed) return;
    if (behavior.dropAfterEvents !== undefined && i >= behavior.dropAfterEvents) {
      res.socket?.destroy();
      return;
    }
    if (behavior.streamError && i >= behavior.streamError.afterEvents) {
      res.end(streamErrorEvent(behavior.streamError));
      return;
    }
    if (behavior.eventDelayMs) await sleep(behavior.eventDelayMs);
    if (res.destroyed) return;
    // Waiting for each write to reach the socket makes a later drop lose only what follows it.
    await new Promise<void>((resolve) => res.write(events[i], () => resolve()));
    record.eventsWritten++;
  }
  res.end();
}

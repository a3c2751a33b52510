// A stand-in for Anthropic's Messages API on 127.0.0.1: the same JSON and SSE wire format, usage
// counted with the gateway's tokenizer (so streamed and non-streamed answers report the same
// usage), deterministic answers, and switchable failures (errors, delays, drops, stream errors).
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { countMessagesTokens, countTokens, decodeTokens, encodeTokens } from '../../src/providers/tokenizer.ts';
import type { ChatMessage, ContentPart } from '../../src/providers/types.ts';
import {
  sseFrame,
  type AnthropicErrorType,
  type AnthropicMessage,
  type AnthropicStopReason,
  type AnthropicTextBlock,
  type AnthropicToolUseBlock,
  type AnthropicUsage,
} from '../../src/providers/anthropic/wire.ts';

export const maxMockBodyBytes = 32 * 1024 * 1024;
/** Words per streamed text_delta, characters per streamed input_json_delta. */
export const wordsPerTextDelta = 3;
export const charsPerJsonDelta = 12;

export interface AnthropicMockBehavior {
  /** Answer the next `count` requests with `status` and an Anthropic error body. */
  fail?: { count: number; status: number; type?: AnthropicErrorType; message?: string; retryAfterSeconds?: number };
  /** Wait before sending response headers (any answer). */
  headersDelayMs?: number;
  /** Wait before each SSE event. */
  eventDelayMs?: number;
  /** Destroy the socket after writing this many SSE events. */
  dropAfterEvents?: number;
  /** After this many SSE events send an `error` event and end the stream. */
  streamError?: { afterEvents: number; type?: AnthropicErrorType; message?: string };
  /** Prompt caching: this many of the input tokens are reported as cache reads / cache writes. */
  cacheReadTokens?: number;
  cacheCreationTokens?: number;
  /** message_delta repeats the input and cache counters (whole-message totals), as newer API versions do. */
  cumulativeDeltaUsage?: boolean;
  /** Answer with this text instead of the generated one. */
  replyText?: string;
}

export interface AnthropicMockOptions {
  /** When set, any other x-api-key gets a 401 authentication_error. */
  apiKey?: string;
  behavior?: AnthropicMockBehavior;
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (the raw text when it was not JSON). */
  body: unknown;
  /** SSE events written to the socket (streamed answers). */
  eventsWritten: number;
  /** How the exchange ended: the whole answer written, or the connection closed first (either side). Unset while open. */
  end?: 'finished' | 'closed';
}

export interface AnthropicMock {
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** Replaces the behaviour (and restarts its `fail` count). */
  setBehavior(behavior: AnthropicMockBehavior): void;
  close(): Promise<void>;
}

type Loose = Record<string, any>;

interface Answer {
  content: Array<AnthropicTextBlock | AnthropicToolUseBlock>;
  stopReason: AnthropicStopReason;
  stopSequence: string | null;
  usage: AnthropicUsage;
}

class MockHttpError extends Error {
  constructor(readonly status: number, readonly type: AnthropicErrorType, message: string) {
    super(message);
  }
}

export async function startAnthropicMock(options: AnthropicMockOptions = {}): Promise<AnthropicMock> {
  let behavior: AnthropicMockBehavior = options.behavior ?? {};
  let failuresLeft = behavior.fail?.count ?? 0;
  let sequence = 0;
  const requests: RecordedRequest[] = [];

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent || res.destroyed) res.destroy();
      else if (err instanceof MockHttpError) sendError(res, err.status, err.type, err.message, 'req_mock_rejected');
      else sendError(res, 500, 'api_error', String(err), 'req_mock_internal');
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const n = ++sequence;
    const requestId = `req_mock${String(n).padStart(6, '0')}`;
    const raw = await readBody(req);
    let body: unknown = raw;
    try {
      body = JSON.parse(raw);
    } catch {
      // kept as text: the validation below answers 400
    }
    const path = (req.url ?? '/').split('?')[0];
    const record: RecordedRequest = { method: req.method ?? 'GET', path, headers: req.headers, body, eventsWritten: 0 };
    requests.push(record);
    res.on('close', () => {
      record.end = res.writableFinished ? 'finished' : 'closed';
    });

    const current = behavior;
    if (current.headersDelayMs) await sleep(current.headersDelayMs);
    if (res.destroyed) return;
    if (failuresLeft > 0 && current.fail) {
      failuresLeft--;
      const { status, type, message, retryAfterSeconds } = current.fail;
      if (retryAfterSeconds !== undefined) res.setHeader('retry-after', String(retryAfterSeconds));
      sendError(res, status, type ?? errorTypeFor(status), message ?? `Mock failure (${status}).`, requestId);
      return;
    }
    try {
      validate(req, path, body, options.apiKey);
      const request = body as Loose;
      const answer = answerFor(request, current);
      const id = `msg_mock${String(n).padStart(6, '0')}`;
      if (request.stream === true) await stream(res, id, request.model, answer, current, requestId, record);
      else sendJson(res, 200, messageOf(id, request.model, answer), requestId);
    } catch (err) {
      if (!(err instanceof MockHttpError)) throw err;
      sendError(res, err.status, err.type, err.message, requestId);
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
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

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req) {
    bytes += (chunk as Buffer).length;
    if (bytes > maxMockBodyBytes) throw new MockHttpError(413, 'request_too_large', 'Request exceeds the maximum allowed size.');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function errorTypeFor(status: number): AnthropicErrorType {
  const byStatus: Record<number, AnthropicErrorType> = {
    400: 'invalid_request_error', 401: 'authentication_error', 402: 'billing_error', 403: 'permission_error',
    404: 'not_found_error', 413: 'request_too_large', 429: 'rate_limit_error', 504: 'timeout_error', 529: 'overloaded_error',
  };
  return byStatus[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
}

function sendJson(res: ServerResponse, status: number, body: unknown, requestId: string): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'request-id': requestId,
    'anthropic-organization-id': 'org_mock',
  });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, type: AnthropicErrorType, message: string, requestId: string): void {
  sendJson(res, status, { type: 'error', error: { type, message }, request_id: requestId }, requestId);
}

/** Top-level fields the Messages API accepts; like Anthropic, the mock rejects any other. */
const knownBodyFields = new Set([
  'model', 'messages', 'max_tokens', 'system', 'stop_sequences', 'stream', 'temperature', 'top_p', 'top_k',
  'tools', 'tool_choice', 'metadata', 'thinking', 'service_tier', 'container', 'mcp_servers', 'output_config',
]);

function validate(req: IncomingMessage, path: string, body: unknown, apiKey: string | undefined): void {
  if (req.method !== 'POST' || path !== '/v1/messages') throw new MockHttpError(404, 'not_found_error', `Not found: ${req.method} ${path}`);
  const key = req.headers['x-api-key'];
  if (typeof key !== 'string' || key === '') throw new MockHttpError(401, 'authentication_error', 'x-api-key header is required');
  if (apiKey !== undefined && key !== apiKey) throw new MockHttpError(401, 'authentication_error', 'invalid x-api-key');
  if (typeof req.headers['anthropic-version'] !== 'string') {
    throw new MockHttpError(400, 'invalid_request_error', 'anthropic-version: header is required');
  }
  if (typeof body !== 'object' || body === null) throw new MockHttpError(400, 'invalid_request_error', 'Request body must be JSON');
  const b = body as Loose;
  for (const field of Object.keys(b)) {
    if (!knownBodyFields.has(field)) throw new MockHttpError(400, 'invalid_request_error', `${field}: Extra inputs are not permitted`);
  }
  if (b.temperature !== undefined && (typeof b.temperature !== 'number' || b.temperature < 0 || b.temperature > 1)) {
    throw new MockHttpError(400, 'invalid_request_error', 'temperature: Input should be less than or equal to 1');
  }
  if (typeof b.model !== 'string') throw new MockHttpError(400, 'invalid_request_error', 'model: Field required');
  if (!Number.isInteger(b.max_tokens) || b.max_tokens < 1) throw new MockHttpError(400, 'invalid_request_error', 'max_tokens: Field required');
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw new MockHttpError(400, 'invalid_request_error', 'messages: at least one message is required');
  b.messages.forEach((m: Loose, i: number) => {
    if (m?.role !== 'user' && m?.role !== 'assistant') throw new MockHttpError(400, 'invalid_request_error', `messages.${i}.role: Input should be 'user' or 'assistant'`);
    const blocks = Array.isArray(m.content) ? m.content : [];
    for (const block of blocks) {
      if (block?.type === 'text' && block.text === '') throw new MockHttpError(400, 'invalid_request_error', `messages.${i}: text content blocks must be non-empty`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Deterministic answers

function blocksOf(content: unknown): Loose[] {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  return Array.isArray(content) ? content : [];
}

function textOf(blocks: Loose[]): string {
  return blocks.filter((b) => b.type === 'text').map((b) => String(b.text)).join('\n');
}

function toolResultText(block: Loose): string {
  return typeof block.content === 'string' ? block.content : textOf(blocksOf(block.content));
}

/** The request as canonical messages, so input tokens are counted the way the gateway counts. */
function countInputTokens(request: Loose): number {
  const messages: ChatMessage[] = [];
  const system = typeof request.system === 'string' ? request.system : textOf(blocksOf(request.system));
  if (system !== '') messages.push({ role: 'system', content: system });
  for (const m of request.messages as Loose[]) {
    const parts: ContentPart[] = [];
    const message: ChatMessage = { role: m.role, content: parts };
    for (const block of blocksOf(m.content)) {
      if (block.type === 'text') parts.push({ type: 'text', text: String(block.text) });
      else if (block.type === 'tool_result') parts.push({ type: 'text', text: toolResultText(block) });
      else if (block.type === 'tool_use') {
        message.tool_calls = [...(message.tool_calls ?? []), { id: block.id, type: 'function', function: { name: block.name, arguments: JSON.stringify(block.input) } }];
      } else parts.push({ type: String(block.type) });
    }
    messages.push(message);
  }
  const toolTokens = Array.isArray(request.tools) && request.tools.length > 0 ? countTokens(JSON.stringify(request.tools)) : 0;
  return countMessagesTokens(messages) + toolTokens;
}

function pickTool(request: Loose, lastUserText: string, lastUserHasResult: boolean): Loose | null {
  const tools = Array.isArray(request.tools) ? (request.tools as Loose[]) : [];
  const choice = request.tool_choice as Loose | undefined;
  if (tools.length === 0 || choice?.type === 'none' || lastUserHasResult) return null;
  if (choice?.type === 'tool') return tools.find((t) => t.name === choice.name) ?? null;
  const weatherTool = tools.find((t) => /weather/i.test(String(t.name))) ?? tools[0];
  if (choice?.type === 'any' || /weather/i.test(lastUserText)) return weatherTool;
  return null;
}

function toolInputFor(tool: Loose, lastUserText: string): Record<string, unknown> {
  const city = /\bin ([A-Z][\p{L}-]+(?: [A-Z][\p{L}-]+)?)/u.exec(lastUserText)?.[1] ?? 'Paris';
  const schema = (tool.input_schema ?? {}) as Loose;
  const properties = Object.keys((schema.properties ?? {}) as Loose);
  const required = Array.isArray(schema.required) ? (schema.required as string[]) : [];
  const input: Record<string, unknown> = { [required[0] ?? properties[0] ?? 'location']: city };
  if (properties.includes('unit')) input.unit = 'celsius';
  return input;
}

function answerFor(request: Loose, behavior: AnthropicMockBehavior): Answer {
  const messages = request.messages as Loose[];
  const lastUser = [...messages].reverse().find((m) => m.role === 'user');
  const lastBlocks = blocksOf(lastUser?.content);
  const lastUserText = textOf(lastBlocks);
  const results = lastBlocks.filter((b) => b.type === 'tool_result');
  const images = lastBlocks.filter((b) => b.type === 'image').length;

  const tool = behavior.replyText === undefined ? pickTool(request, lastUserText, results.length > 0) : null;
  const content: Answer['content'] = [];
  let stopReason: AnthropicStopReason = 'end_turn';
  let stopSequence: string | null = null;
  if (tool) {
    const input = toolInputFor(tool, lastUserText);
    content.push({ type: 'text', text: `I'll look that up with ${tool.name}.` });
    content.push({ type: 'tool_use', id: `toolu_mock${String(messages.length).padStart(4, '0')}`, name: String(tool.name), input });
    stopReason = 'tool_use';
  } else {
    let text = behavior.replyText ?? replyFor(lastUserText, results, images);
    for (const seq of (request.stop_sequences ?? []) as string[]) {
      const at = text.indexOf(seq);
      if (at !== -1 && (stopSequence === null || at < text.indexOf(stopSequence))) stopSequence = seq;
    }
    if (stopSequence !== null) {
      text = text.slice(0, text.indexOf(stopSequence));
      stopReason = 'stop_sequence';
    }
    const tokens = encodeTokens(text);
    if (tokens.length > request.max_tokens) {
      text = decodeTokens(tokens.slice(0, request.max_tokens));
      stopReason = 'max_tokens';
      stopSequence = null;
    }
    if (text !== '') content.push({ type: 'text', text });
  }

  const outputTokens = content.reduce(
    (sum, b) => sum + (b.type === 'text' ? countTokens(b.text) : countTokens(b.name) + countTokens(JSON.stringify(b.input))),
    0,
  );
  const totalInput = countInputTokens(request);
  const cacheRead = Math.min(behavior.cacheReadTokens ?? 0, totalInput);
  const cacheCreation = Math.min(behavior.cacheCreationTokens ?? 0, totalInput - cacheRead);
  return {
    content,
    stopReason,
    stopSequence,
    usage: {
      input_tokens: totalInput - cacheRead - cacheCreation,
      cache_creation_input_tokens: cacheCreation,
      cache_read_input_tokens: cacheRead,
      output_tokens: outputTokens,
    },
  };
}

function replyFor(lastUserText: string, results: Loose[], images: number): string {
  if (results.length > 0) return `The tool returned: ${results.map(toolResultText).join('; ')}. That is all I know.`;
  const quoted = lastUserText.length > 200 ? `${lastUserText.slice(0, 200)}…` : lastUserText;
  const seen = images > 0 ? ` I can see ${images} image${images === 1 ? '' : 's'}.` : '';
  return `Hello from the mock Anthropic upstream! You said: "${quoted}".${seen} Have a good day.`;
}

function messageOf(id: string, model: string, answer: Answer): AnthropicMessage {
  return {
    id,
    type: 'message',
    role: 'assistant',
    model,
    content: answer.content,
    stop_reason: answer.stopReason,
    stop_sequence: answer.stopSequence,
    usage: answer.usage,
  };
}

// ---------------------------------------------------------------------------------------------
// Streaming

function splitWords(text: string): string[] {
  const words = text.split(/(?<=\s)/);
  const pieces: string[] = [];
  for (let i = 0; i < words.length; i += wordsPerTextDelta) pieces.push(words.slice(i, i + wordsPerTextDelta).join(''));
  return pieces;
}

function splitChars(text: string): string[] {
  const pieces: string[] = [];
  for (let i = 0; i < text.length; i += charsPerJsonDelta) pieces.push(text.slice(i, i + charsPerJsonDelta));
  return pieces;
}

/** The events Anthropic sends for an answer, in order. */
export function streamEventsOf(id: string, model: string, answer: Answer, cumulativeDeltaUsage = false): Array<[string, unknown]> {
  const events: Array<[string, unknown]> = [];
  const startUsage = { ...answer.usage, output_tokens: 1 };
  events.push(['message_start', { type: 'message_start', message: { ...messageOf(id, model, answer), content: [], stop_reason: null, stop_sequence: null, usage: startUsage } }]);
  events.push(['ping', { type: 'ping' }]);
  answer.content.forEach((block, index) => {
    if (block.type === 'text') {
      events.push(['content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '' } }]);
      for (const text of splitWords(block.text)) {
        events.push(['content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text } }]);
      }
    } else {
      events.push(['content_block_start', { type: 'content_block_start', index, content_block: { ...block, input: {} } }]);
      for (const partial of ['', ...splitChars(JSON.stringify(block.input))]) {
        events.push(['content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: partial } }]);
      }
    }
    events.push(['content_block_stop', { type: 'content_block_stop', index }]);
  });
  const deltaUsage = cumulativeDeltaUsage ? answer.usage : { output_tokens: answer.usage.output_tokens };
  events.push(['message_delta', { type: 'message_delta', delta: { stop_reason: answer.stopReason, stop_sequence: answer.stopSequence }, usage: deltaUsage }]);
  events.push(['message_stop', { type: 'message_stop' }]);
  return events;
}

async function stream(res: ServerResponse, id: string, model: string, answer: Answer, behavior: AnthropicMockBehavior, requestId: string, record: RecordedRequest): Promise<void> {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'request-id': requestId,
    'anthropic-organization-id': 'org_mock',
  });
  res.flushHeaders();
  const events = streamEventsOf(id, model, answer, behavior.cumulativeDeltaUsage);
  for (let i = 0; i < events.length; i++) {
    if (res.destroyed) return;
    if (behavior.dropAfterEvents !== undefined && i >= behavior.dropAfterEvents) {
      res.socket?.destroy();
      return;
    }
    if (behavior.streamError && i >= behavior.streamError.afterEvents) {
      const { type = 'overloaded_error', message = 'Overloaded' } = behavior.streamError;
      res.end(sseFrame('error', { type: 'error', error: { type, message } }));
      return;
    }
    if (behavior.eventDelayMs) await sleep(behavior.eventDelayMs);
    if (res.destroyed) return;
    // Waiting for each write to reach the socket makes a later drop lose only what follows it.
    await new Promise<void>((resolve) => res.write(sseFrame(events[i][0], events[i][1]), () => resolve()));
    record.eventsWritten++;
  }
  res.end();
}

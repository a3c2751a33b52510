// A stand-in for the Gemini API (generativelanguage v1beta) on 127.0.0.1: generateContent,
// streamGenerateContent (SSE with alt=sse, a JSON array without), embedContent and
// batchEmbedContents, with deterministic answers from the sandbox engine and usage counted by the
// gateway's tokenizer, so streamed and non-streamed answers report the same usageMetadata.
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { answerChat, embeddingVector, type ChatAnswer } from '../../src/providers/sandbox/engine.ts';
import { countTokens } from '../../src/providers/tokenizer.ts';
import type { ChatMessage, ChatRequest, ContentPart, ToolCall, ToolDefinition } from '../../src/providers/types.ts';

export const maxMockBodyBytes = 32 * 1024 * 1024;
/** The name that starts every generated reply: `Mock Gemini reply to: "..."`. */
export const geminiMockName = 'Mock Gemini';
/** Stream pieces (of 1-3 tokens each) per SSE event: Gemini sends larger chunks than OpenAI. */
export const piecesPerEvent = 3;
export const mockEmbeddingDimensions = 8;

export interface GeminiMockBehavior {
  /** Answer the next `count` requests with `status` and a Google error body (or `body` verbatim). */
  fail?: { count: number; status: number; message?: string; body?: unknown };
  /** Wait before sending response headers (any answer). */
  headersDelayMs?: number;
  /** Wait before each SSE event. */
  eventDelayMs?: number;
  /** Destroy the socket after writing this many SSE events. */
  dropAfterEvents?: number;
  /** After this many SSE events send `data: {"error":...}` and end the stream. */
  streamError?: { afterEvents: number; status?: number; message?: string };
  /** Send no usageMetadata at all. */
  omitUsage?: boolean;
  /** Report this many prompt tokens as cachedContentTokenCount. */
  cachedTokens?: number;
  /** Report this many thinking tokens (thoughtsTokenCount). */
  thoughtsTokens?: number;
  /** Answer with this text instead of the generated one. */
  replyText?: string;
}

export interface GeminiMockOptions {
  /** When set, any other key gets a 400 INVALID_ARGUMENT "API key not valid". */
  apiKey?: string;
  behavior?: GeminiMockBehavior;
}

export interface RecordedRequest {
  method: string;
  /** The path without the query, e.g. `/v1beta/models/gemini-2.5-flash:streamGenerateContent`. */
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (the raw text when it was not JSON). */
  body: unknown;
}

export interface GeminiMock {
  /** Gemini's base URL on the mock, `http://127.0.0.1:<port>/v1beta`. */
  url: string;
  origin: string;
  port: number;
  requests: RecordedRequest[];
  /** Replaces the behaviour (and restarts its `fail` count). */
  setBehavior(behavior: GeminiMockBehavior): void;
  close(): Promise<void>;
}

type Loose = Record<string, any>;

const statusNames: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

class MockHttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export function googleErrorBody(status: number, message: string) {
  return { error: { code: status, message, status: statusNames[status] ?? (status >= 500 ? 'INTERNAL' : 'FAILED_PRECONDITION') } };
}

export async function startGeminiMock(options: GeminiMockOptions = {}): Promise<GeminiMock> {
  let behavior: GeminiMockBehavior = options.behavior ?? {};
  let failuresLeft = behavior.fail?.count ?? 0;
  const requests: RecordedRequest[] = [];

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent || res.destroyed) res.destroy();
      else if (err instanceof MockHttpError) sendJson(res, err.status, googleErrorBody(err.status, err.message));
      else sendJson(res, 500, googleErrorBody(500, String(err)));
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req);
    let body: unknown = raw;
    try {
      body = raw === '' ? undefined : JSON.parse(raw);
    } catch {
      // kept as text: validation answers 400
    }
    const url = new URL(req.url ?? '/', 'http://mock');
    requests.push({ method: req.method ?? 'GET', path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, body });

    const current = behavior;
    if (current.headersDelayMs) await sleep(current.headersDelayMs);
    if (res.destroyed) return;
    if (failuresLeft > 0 && current.fail) {
      failuresLeft--;
      const { status, message } = current.fail;
      sendJson(res, status, current.fail.body ?? googleErrorBody(status, message ?? `Mock failure (${status}).`));
      return;
    }
    const match = /^\/v1(?:beta)?\/models\/([^/:]+):(generateContent|streamGenerateContent|embedContent|batchEmbedContents)$/.exec(url.pathname);
    if (req.method !== 'POST' || !match) throw new MockHttpError(404, `Method not found: ${req.method} ${url.pathname}`);
    authenticate(req, url, options.apiKey);
    if (typeof body !== 'object' || body === null) throw new MockHttpError(400, 'Invalid JSON payload received.');
    const [, model, method] = match;
    const request = body as Loose;
    if (method === 'embedContent') {
      sendJson(res, 200, { embedding: embeddingOf(request, model) });
      return;
    }
    if (method === 'batchEmbedContents') {
      if (!Array.isArray(request.requests) || request.requests.length === 0) throw new MockHttpError(400, '* BatchEmbedContentsRequest.requests: requests is required');
      sendJson(res, 200, { embeddings: request.requests.map((r: Loose) => embeddingOf(r, model)) });
      return;
    }
    validateGenerate(request);
    const answer = answerChat(canonicalOf(request, model), { name: geminiMockName, replyText: current.replyText });
    const responseId = randomBytes(9).toString('base64url');
    if (method === 'generateContent') {
      sendJson(res, 200, responseOf(answer, model, responseId, current));
      return;
    }
    const events = streamEventsOf(answer, model, responseId, current);
    if (url.searchParams.get('alt') === 'sse') await stream(res, events, current);
    else sendJson(res, 200, events);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: `${origin}/v1beta`,
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

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req) {
    bytes += (chunk as Buffer).length;
    if (bytes > maxMockBodyBytes) throw new MockHttpError(413, 'Request payload size exceeds the limit.');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function authenticate(req: IncomingMessage, url: URL, apiKey: string | undefined): void {
  const header = req.headers['x-goog-api-key'];
  const key = typeof header === 'string' && header !== '' ? header : url.searchParams.get('key');
  if (!key) throw new MockHttpError(403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.");
  if (apiKey !== undefined && key !== apiKey) throw new MockHttpError(400, 'API key not valid. Please pass a valid API key.');
}

function validateGenerate(request: Loose): void {
  if (!Array.isArray(request.contents) || request.contents.length === 0) {
    throw new MockHttpError(400, '* GenerateContentRequest.contents: contents is not specified');
  }
  request.contents.forEach((content: Loose, i: number) => {
    if (content?.role !== undefined && content.role !== 'user' && content.role !== 'model') {
      throw new MockHttpError(400, `Please use a valid role: user, model. (contents[${i}])`);
    }
    if (!Array.isArray(content?.parts) || content.parts.length === 0) {
      throw new MockHttpError(400, `* GenerateContentRequest.contents[${i}].parts: contents.parts must not be empty.`);
    }
  });
}

function embeddingOf(request: Loose, model: string): { values: number[] } {
  const parts: Loose[] = Array.isArray(request?.content?.parts) ? request.content.parts : [];
  if (parts.length === 0) throw new MockHttpError(400, '* EmbedContentRequest.content: content is not specified');
  if (request.model !== undefined && request.model !== `models/${model}`) {
    throw new MockHttpError(400, `* BatchEmbedContentsRequest.model: model must match the URL (${model}).`);
  }
  const text = parts.map((p) => String(p.text ?? '')).join('\n');
  return { values: embeddingVector(text, request.outputDimensionality ?? mockEmbeddingDimensions) };
}

// ---------------------------------------------------------------------------------------------
// Deterministic answers: the request read back as canonical messages, answered by the engine

function textOfParts(parts: unknown): string {
  return Array.isArray(parts) ? parts.filter((p: Loose) => typeof p?.text === 'string').map((p: Loose) => p.text).join('\n') : '';
}

/** The generateContent body as the canonical request it most likely came from. */
export function canonicalOf(request: Loose, model: string): ChatRequest {
  const messages: ChatMessage[] = [];
  const system = textOfParts(request.systemInstruction?.parts);
  if (system) messages.push({ role: 'system', content: system });
  let callCount = 0;
  for (const content of request.contents as Loose[]) {
    const parts: ContentPart[] = [];
    const toolCalls: ToolCall[] = [];
    const results: ChatMessage[] = [];
    for (const part of content.parts as Loose[]) {
      if (typeof part.text === 'string') parts.push({ type: 'text', text: part.text });
      else if (part.inlineData || part.fileData) parts.push({ type: 'image_url', image_url: { url: part.fileData?.fileUri ?? 'data:' } });
      else if (part.functionCall) {
        toolCalls.push({ id: `call_${callCount++}`, type: 'function', function: { name: part.functionCall.name, arguments: JSON.stringify(part.functionCall.args ?? {}) } });
      } else if (part.functionResponse) {
        results.push({ role: 'tool', tool_call_id: part.functionResponse.name, content: JSON.stringify(part.functionResponse.response) });
      }
    }
    messages.push(...results);
    if (parts.length > 0 || toolCalls.length > 0) {
      const message: ChatMessage = { role: content.role === 'model' ? 'assistant' : 'user', content: parts };
      if (toolCalls.length > 0) message.tool_calls = toolCalls;
      messages.push(message);
    }
  }
  const tools: ToolDefinition[] = [];
  for (const tool of (request.tools ?? []) as Loose[]) {
    for (const f of (tool.functionDeclarations ?? []) as Loose[]) {
      tools.push({ type: 'function', function: { name: f.name, description: f.description, parameters: f.parametersJsonSchema ?? f.parameters } });
    }
  }
  const canonical: ChatRequest = { model, messages };
  if (tools.length > 0) canonical.tools = tools;
  const calling = request.toolConfig?.functionCallingConfig;
  if (calling?.mode === 'NONE') canonical.tool_choice = 'none';
  else if (calling?.mode === 'ANY') {
    const name = calling.allowedFunctionNames?.[0];
    canonical.tool_choice = typeof name === 'string' ? { type: 'function', function: { name } } : 'required';
  }
  const maxTokens = request.generationConfig?.maxOutputTokens;
  if (typeof maxTokens === 'number') canonical.max_tokens = maxTokens;
  return canonical;
}

function usageMetadataOf(answer: ChatAnswer, behavior: GeminiMockBehavior, candidatesTokens = answer.completionTokens): Loose {
  const thoughts = behavior.thoughtsTokens ?? 0;
  const usage: Loose = {
    promptTokenCount: answer.promptTokens,
    candidatesTokenCount: candidatesTokens,
    totalTokenCount: answer.promptTokens + candidatesTokens + thoughts,
    promptTokensDetails: [{ modality: 'TEXT', tokenCount: answer.promptTokens }],
  };
  const cached = Math.min(behavior.cachedTokens ?? 0, answer.promptTokens);
  if (cached > 0) usage.cachedContentTokenCount = cached;
  if (thoughts > 0) usage.thoughtsTokenCount = thoughts;
  return usage;
}

function finishReasonOf(answer: ChatAnswer): string {
  return answer.finishReason === 'length' ? 'MAX_TOKENS' : 'STOP';
}

function answerParts(answer: ChatAnswer): Loose[] {
  if (answer.toolCalls.length > 0) {
    return answer.toolCalls.map((call) => ({ functionCall: { name: call.function.name, args: JSON.parse(call.function.arguments) } }));
  }
  return [{ text: answer.content ?? '' }];
}

function responseOf(answer: ChatAnswer, model: string, responseId: string, behavior: GeminiMockBehavior): Loose {
  const response: Loose = {
    candidates: [{ content: { parts: answerParts(answer), role: 'model' }, finishReason: finishReasonOf(answer), index: 0 }],
    modelVersion: model,
    responseId,
  };
  if (!behavior.omitUsage) response.usageMetadata = usageMetadataOf(answer, behavior);
  return response;
}

/** The GenerateContentResponses a stream sends: text a few pieces at a time, usage on each. */
function streamEventsOf(answer: ChatAnswer, model: string, responseId: string, behavior: GeminiMockBehavior): Loose[] {
  const groups: Loose[][] = [];
  if (answer.toolCalls.length > 0 || answer.pieces.length === 0) groups.push(answerParts(answer));
  for (let i = 0; i < answer.pieces.length; i += piecesPerEvent) {
    groups.push([{ text: answer.pieces.slice(i, i + piecesPerEvent).join('') }]);
  }
  let textSoFar = '';
  return groups.map((parts, i) => {
    const last = i === groups.length - 1;
    for (const part of parts) if (typeof part.text === 'string') textSoFar += part.text;
    const candidate: Loose = { content: { parts, role: 'model' }, index: 0 };
    if (last) candidate.finishReason = finishReasonOf(answer);
    const event: Loose = { candidates: [candidate], modelVersion: model, responseId };
    if (!behavior.omitUsage) {
      event.usageMetadata = usageMetadataOf(answer, behavior, last ? answer.completionTokens : countTokens(textSoFar));
    }
    return event;
  });
}

async function stream(res: ServerResponse, events: Loose[], behavior: GeminiMockBehavior): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
  for (let i = 0; i < events.length; i++) {
    if (res.destroyed) return;
    if (behavior.dropAfterEvents !== undefined && i >= behavior.dropAfterEvents) {
      res.socket?.destroy();
      return;
    }
    if (behavior.streamError && i >= behavior.streamError.afterEvents) {
      const { status = 503, message = 'The model is overloaded. Please try again later.' } = behavior.streamError;
      res.end(`data: ${JSON.stringify(googleErrorBody(status, message))}\r\n\r\n`);
      return;
    }
    if (behavior.eventDelayMs) await sleep(behavior.eventDelayMs);
    if (res.destroyed) return;
    await new Promise<void>((resolve) => res.write(`data: ${JSON.stringify(events[i])}\r\n\r\n`, () => resolve()));
  }
  res.end();
}

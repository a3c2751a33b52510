// The OpenAI wire format, which is also Tollgate's canonical one: requests pass through with the
// upstream model swapped in (and `include_usage` forced on streams), answers come back with the
// client's model name and the usage OpenAI reported. Azure and the sandbox reuse these functions.
import type {
  ChatAdapter,
  ChatChunk,
  ChatRequest,
  ChatResponse,
  EmbeddingsAdapter,
  EmbeddingsRequest,
  EmbeddingsResponse,
  ImagesAdapter,
  ImagesRequest,
  ImagesResponse,
  PreparedRequest,
  ProviderAdapter,
  ProviderType,
  StreamTranslator,
  UpstreamError,
  UpstreamTarget,
  Usage,
} from '../types.ts';
import { SseParser } from '../sse.ts';
import {
  clip,
  count,
  defaultErrorType,
  emptyUsage,
  isRecord,
  isRetryableStatus,
  joinUrl,
  malformedResponse,
  parseJson,
  streamProtocolError,
  stringOr,
} from '../common.ts';

// ---- request bodies ----

/**
 * The upstream body for a chat request: the canonical body with `model` replaced (or removed when
 * `model` is undefined, as Azure wants). Streams always ask for usage, whatever the client asked,
 * so a streamed call is never billed blind; non-streamed bodies drop the stream fields, which
 * OpenAI rejects without `stream: true`.
 */
export function openaiChatBody(req: ChatRequest, model: string | undefined, stream: boolean): Record<string, unknown> {
  const { model: _clientModel, stream: _stream, stream_options: streamOptions, ...rest } = req;
  const body: Record<string, unknown> = model === undefined ? { ...rest } : { model, ...rest };
  if (stream) {
    body.stream = true;
    body.stream_options = { ...(streamOptions ?? {}), include_usage: true };
  }
  return body;
}

/** The upstream body for embeddings or images: canonical, with `model` replaced or removed. */
export function withModel<T extends { model: string }>(req: T, model: string | undefined): Record<string, unknown> {
  const { model: _clientModel, ...rest } = req;
  return model === undefined ? { ...rest } : { model, ...rest };
}

function bearerHeaders(apiKey: string, stream: boolean): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: stream ? 'text/event-stream' : 'application/json',
  };
  // Local OpenAI-compatible servers (Ollama, vLLM) often run without a key.
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  return headers;
}

// ---- usage ----

/**
 * OpenAI usage → Tollgate usage. OpenAI's prompt_tokens include cached tokens, Tollgate's
 * inputTokens do not; completion_tokens include reasoning tokens, and so does outputTokens.
 * DeepSeek reports cache hits as `prompt_cache_hit_tokens`.
 */
export function usageFromOpenAI(raw: unknown): Usage | null {
  if (!isRecord(raw)) return null;
  const promptTokens = count(raw.prompt_tokens);
  const promptDetails = isRecord(raw.prompt_tokens_details) ? raw.prompt_tokens_details : {};
  const completionDetails = isRecord(raw.completion_tokens_details) ? raw.completion_tokens_details : {};
  const cachedTokens = Math.min(promptTokens, count(promptDetails.cached_tokens) || count(raw.prompt_cache_hit_tokens));
  return {
    inputTokens: promptTokens - cachedTokens,
    cachedInputTokens: cachedTokens,
    outputTokens: count(raw.completion_tokens),
    reasoningTokens: count(completionDetails.reasoning_tokens),
    images: 0,
  };
}

// ---- chat ----

export function parseOpenAIChatResponse(body: unknown, requestedModel: string): { response: ChatResponse; usage: Usage | null } {
  if (!isRecord(body) || !Array.isArray(body.choices)) throw malformedResponse('a chat completion without choices');
  const response = { ...body, object: 'chat.completion', model: requestedModel } as ChatResponse;
  return { response, usage: usageFromOpenAI(body.usage) };
}

/**
 * Reads OpenAI chat.completion.chunk events. Chunks come back with the client's model name;
 * chunks that carry nothing canonical (Azure's prompt-filter preamble: no choices, no usage) are
 * dropped; the usage chunk is returned like any other (the gateway forwards it only to clients
 * that asked for it) and remembered.
 */
export class OpenAIStreamTranslator implements StreamTranslator {
  private readonly parser = new SseParser();
  private usageSeen: Usage | null = null;
  private errorSeen: UpstreamError | null = null;
  private output = '';
  private done = false;

  constructor(private readonly requestedModel: string) {}

  push(text: string): ChatChunk[] {
    if (this.done) return [];
    try {
      return this.translate(this.parser.push(text));
    } catch (err) {
      return this.fail(err);
    }
  }

  end(): ChatChunk[] {
    if (this.done) return [];
    try {
      const chunks = this.translate(this.parser.end());
      this.done = true;
      return chunks;
    } catch (err) {
      return this.fail(err);
    }
  }

  usage(): Usage | null {
    return this.usageSeen;
  }

  outputText(): string {
    return this.output;
  }

  error(): UpstreamError | null {
    return this.errorSeen;
  }

  private fail(err: unknown): ChatChunk[] {
    this.errorSeen ??= streamProtocolError(err instanceof Error ? err.message : String(err));
    this.done = true;
    return [];
  }

  private translate(events: Array<{ data: string }>): ChatChunk[] {
    const chunks: ChatChunk[] = [];
    for (const event of events) {
      if (this.done) break;
      if (event.data === '[DONE]') {
        this.done = true;
        break;
      }
      const payload = parseJson(event.data);
      if (!isRecord(payload)) continue; // not JSON: nothing a client could use
      if (payload.error !== undefined && payload.error !== null && !Array.isArray(payload.choices)) {
        this.errorSeen ??= openaiStreamError(payload.error);
        continue;
      }
      const chunk = this.chunk(payload);
      if (chunk) chunks.push(chunk);
    }
    return chunks;
  }

  private chunk(payload: Record<string, unknown>): ChatChunk | null {
    const choices = Array.isArray(payload.choices) ? payload.choices : [];
    const usage = usageFromOpenAI(payload.usage);
    if (usage) this.usageSeen = usage;
    if (choices.length === 0 && !usage) return null;
    for (const choice of choices) {
      if (isRecord(choice) && isRecord(choice.delta)) this.collectOutput(choice.delta);
    }
    return { ...payload, object: 'chat.completion.chunk', model: this.requestedModel, choices } as ChatChunk;
  }

  private collectOutput(delta: Record<string, unknown>): void {
    // Everything the model produced counts, reasoning included (DeepSeek, vLLM name it so).
    for (const key of ['content', 'refusal', 'reasoning_content', 'reasoning'] as const) {
      const value = delta[key];
      if (typeof value === 'string') this.output += value;
    }
    if (!Array.isArray(delta.tool_calls)) return;
    for (const call of delta.tool_calls) {
      if (isRecord(call) && isRecord(call.function) && typeof call.function.arguments === 'string') {
        this.output += call.function.arguments;
      }
    }
  }
}

export function createOpenAIStreamTranslator(requestedModel: string): StreamTranslator {
  return new OpenAIStreamTranslator(requestedModel);
}

/** An error object sent inside a 200 stream; it has no HTTP status, so one is inferred. */
function openaiStreamError(raw: unknown): UpstreamError {
  if (!isRecord(raw)) return streamProtocolError(typeof raw === 'string' ? raw : 'The upstream sent an error in the stream.');
  const type = stringOr(raw.type, stringOr(raw.code, 'api_error'));
  const status = typeof raw.status === 'number' ? raw.status : typeof raw.code === 'number' ? raw.code : inferStatus(type);
  return {
    status,
    type,
    message: clip(stringOr(raw.message, 'The upstream sent an error in the stream.')),
    retryable: isRetryableStatus(status),
  };
}

function inferStatus(type: string): number {
  if (type.includes('rate_limit')) return 429;
  if (type.includes('invalid_request')) return 400;
  return 500;
}

// ---- errors ----

/**
 * A non-2xx answer. Handles OpenAI's `{error:{message,type,code}}` and the shapes of compatible
 * servers: `{error:"text"}`, `{message,type}` (vLLM, Ollama), or plain text.
 */
export function parseOpenAIError(status: number, body: string): UpstreamError {
  const parsed = parseJson(body);
  let message = '';
  let type = '';
  if (isRecord(parsed)) {
    const inner = isRecord(parsed.error) ? parsed.error : parsed;
    if (typeof parsed.error === 'string') message = parsed.error;
    message ||= stringOr(inner.message, '');
    type = stringOr(inner.type, typeof inner.code === 'string' ? inner.code : '');
  } else {
    message = body.trim();
  }
  return {
    status,
    type: type || defaultErrorType(status),
    message: clip(message || `The upstream answered HTTP ${status}.`),
    retryable: isRetryableStatus(status),
  };
}

// ---- embeddings and images ----

export function parseOpenAIEmbeddings(body: unknown, requestedModel: string): { response: EmbeddingsResponse; usage: Usage | null } {
  if (!isRecord(body) || !Array.isArray(body.data)) throw malformedResponse('an embeddings answer without data');
  const response = { ...body, object: 'list', model: requestedModel } as EmbeddingsResponse;
  if (!isRecord(body.usage)) return { response, usage: null };
  return { response, usage: { ...emptyUsage(), inputTokens: count(body.usage.prompt_tokens) } };
}

/** One image is one unit; gpt-image models also report tokens, kept for token-priced routes. */
export function parseOpenAIImages(body: unknown): { response: ImagesResponse; usage: Usage | null } {
  if (!isRecord(body) || !Array.isArray(body.data)) throw malformedResponse('an images answer without data');
  const response = body as unknown as ImagesResponse;
  const tokens = isRecord(body.usage) ? body.usage : {};
  return {
    response,
    usage: {
      ...emptyUsage(),
      inputTokens: count(tokens.input_tokens),
      outputTokens: count(tokens.output_tokens),
      images: body.data.length,
    },
  };
}

/**
 * Turns float embeddings into OpenAI's base64 encoding (little-endian float32), for clients that
 * asked `encoding_format: 'base64'` (the openai SDK's default) when the upstream returned floats.
 */
export function encodeEmbeddingsBase64(response: EmbeddingsResponse): EmbeddingsResponse {
  const data = response.data.map((item) => {
    if (typeof item.embedding === 'string') return item;
    const floats = Float32Array.from(item.embedding);
    return { ...item, embedding: Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString('base64') };
  });
  return { ...response, data };
}

// ---- the adapter ----

function prepared(url: string, headers: Record<string, string>, body: unknown): PreparedRequest {
  return { url, method: 'POST', headers, body: JSON.stringify(body) };
}

export const openaiChat: ChatAdapter = {
  buildRequest(req: ChatRequest, target: UpstreamTarget, stream: boolean): PreparedRequest {
    return prepared(
      joinUrl(target.baseUrl, '/chat/completions'),
      bearerHeaders(target.apiKey, stream),
      openaiChatBody(req, target.upstreamModel, stream),
    );
  },
  parseResponse: parseOpenAIChatResponse,
  createStreamTranslator: createOpenAIStreamTranslator,
};

export const openaiEmbeddings: EmbeddingsAdapter = {
  buildRequest(req: EmbeddingsRequest, target: UpstreamTarget): PreparedRequest {
    return prepared(joinUrl(target.baseUrl, '/embeddings'), bearerHeaders(target.apiKey, false), withModel(req, target.upstreamModel));
  },
  parseResponse: parseOpenAIEmbeddings,
};

export const openaiImages: ImagesAdapter = {
  buildRequest(req: ImagesRequest, target: UpstreamTarget): PreparedRequest {
    return prepared(
      joinUrl(target.baseUrl, '/images/generations'),
      bearerHeaders(target.apiKey, false),
      withModel(req, target.upstreamModel),
    );
  },
  parseResponse: parseOpenAIImages,
};

/** The OpenAI adapter under another type: 'openai-compatible' speaks the same wire format. */
export function createOpenAIAdapter(type: ProviderType = 'openai'): ProviderAdapter {
  return { type, chat: openaiChat, embeddings: openaiEmbeddings, images: openaiImages, parseError: parseOpenAIError };
}

export const openaiAdapter: ProviderAdapter = createOpenAIAdapter('openai');

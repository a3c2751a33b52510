// The built-in `sandbox` provider: OpenAI's wire format answered in-process, with no network and
// no key, so a fresh install (and every test) can make priced, metered calls end to end.
import type { CancelSignal, ChatRequest, EmbeddingsRequest, ImagesRequest, LocalTransport, PreparedRequest, ProviderAdapter, UpstreamTarget } from '../types.ts';
import { isRecord, parseJson } from '../common.ts';
import { openaiChat, openaiEmbeddings, openaiImages, parseOpenAIError } from '../openai/index.ts';
import { answerChat, chatChunksOf, chatCompletionOf, embeddingsOf, imagesOf, openaiErrorBody, sseOf } from './engine.ts';

/** Used when a sandbox provider is configured without a base URL. */
export const sandboxBaseUrl = 'sandbox://local/v1';

const encoder = new TextEncoder();

type LocalResponse = Awaited<ReturnType<LocalTransport['send']>>;

function abortError(signal: CancelSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted.', 'AbortError');
}

function json(status: number, body: unknown): LocalResponse {
  const bytes = encoder.encode(JSON.stringify(body));
  return {
    status,
    headers: { 'content-type': 'application/json' },
    body: (async function* () {
      yield bytes;
    })(),
  };
}

function invalid(message: string, param: string | null = null): LocalResponse {
  return json(400, openaiErrorBody(message, 'invalid_request_error', param));
}

/** Yields one SSE event at a time, giving the event loop a turn between them, until aborted. */
async function* sseBody(events: string[], signal: CancelSignal): AsyncGenerator<Uint8Array> {
  for (const event of events) {
    if (signal.aborted) throw abortError(signal);
    yield encoder.encode(event);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function answerChatRequest(body: Record<string, unknown>, signal: CancelSignal): LocalResponse {
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    return invalid("'messages' must be a non-empty array.", 'messages');
  }
  const req = body as unknown as ChatRequest;
  const answer = answerChat(req);
  if (req.stream !== true) return json(200, chatCompletionOf(req, answer));
  return {
    status: 200,
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' },
    body: sseBody(sseOf(chatChunksOf(req, answer)), signal),
  };
}

function answerEmbeddingsRequest(body: Record<string, unknown>): LocalResponse {
  const input = body.input;
  const valid = typeof input === 'string' || (Array.isArray(input) && input.length > 0);
  if (!valid) return invalid("'input' must be a string or a non-empty array.", 'input');
  return json(200, embeddingsOf(body as unknown as EmbeddingsRequest));
}

function answerImagesRequest(body: Record<string, unknown>): LocalResponse {
  if (typeof body.prompt !== 'string' || body.prompt.length === 0) return invalid("'prompt' is required.", 'prompt');
  return json(200, imagesOf(body as unknown as ImagesRequest));
}

/** Answers PreparedRequests built by the sandbox adapter, exactly as api.openai.com would. */
export const sandboxTransport: LocalTransport = {
  async send(req: PreparedRequest, signal: CancelSignal): Promise<LocalResponse> {
    if (signal.aborted) throw abortError(signal);
    const path = req.url.split('?')[0];
    const body = parseJson(req.body);
    if (!isRecord(body)) return invalid('The request body must be a JSON object.');
    if (typeof body.model !== 'string' || body.model.length === 0) return invalid("'model' is required.", 'model');
    if (path.endsWith('/chat/completions')) return answerChatRequest(body, signal);
    if (path.endsWith('/embeddings')) return answerEmbeddingsRequest(body);
    if (path.endsWith('/images/generations')) return answerImagesRequest(body);
    return json(404, openaiErrorBody(`Unknown sandbox endpoint ${path}.`, 'invalid_request_error'));
  },
};

function withBaseUrl(target: UpstreamTarget): UpstreamTarget {
  return target.baseUrl ? target : { ...target, baseUrl: sandboxBaseUrl };
}

export const sandboxAdapter: ProviderAdapter = {
  type: 'sandbox',
  chat: { ...openaiChat, buildRequest: (req, target, stream) => openaiChat.buildRequest(req, withBaseUrl(target), stream) },
  embeddings: { ...openaiEmbeddings, buildRequest: (req, target) => openaiEmbeddings.buildRequest(req, withBaseUrl(target)) },
  images: { ...openaiImages, buildRequest: (req, target) => openaiImages.buildRequest(req, withBaseUrl(target)) },
  parseError: parseOpenAIError,
  local: sandboxTransport,
};

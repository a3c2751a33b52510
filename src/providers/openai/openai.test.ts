import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startOpenAIMock, type OpenAIMock } from '../../../test/upstreams/openai.ts';
import { send, sendStream, textOf, toolCallsOf } from '../../../test/upstreams/client.ts';
import { AppError } from '../../lib/errors.ts';
import { countMessagesTokens, countTokens } from '../tokenizer.ts';
import type { ChatChunk, ChatRequest, UpstreamTarget } from '../types.ts';
import {
  createOpenAIAdapter,
  encodeEmbeddingsBase64,
  openaiAdapter,
  parseOpenAIError,
  usageFromOpenAI,
} from './index.ts';

const target: UpstreamTarget = { baseUrl: 'https://api.openai.com/v1/', apiKey: 'sk-test', upstreamModel: 'gpt-4o-mini-2024-07-18' };
const weatherTool = {
  type: 'function' as const,
  function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { location: { type: 'string' } } } },
};

function chatRequest(extra: Partial<ChatRequest> = {}): ChatRequest {
  return {
    model: 'public-mini',
    messages: [
      { role: 'system', content: 'Be brief.' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'What is in this picture?' },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'low' } },
        ],
      },
    ],
    ...extra,
  };
}

/** Feeds `text` to a fresh translator in the given pieces and returns everything it produced. */
function translate(pieces: string[]) {
  const translator = openaiAdapter.chat.createStreamTranslator('public-mini');
  const chunks: ChatChunk[] = [];
  for (const piece of pieces) chunks.push(...translator.push(piece));
  chunks.push(...translator.end());
  return { chunks, usage: translator.usage(), output: translator.outputText(), error: translator.error() };
}

/** Splits bytes at `at` and decodes both halves as a streaming decoder would. */
function splitBytes(text: string, at: number): string[] {
  const bytes = new TextEncoder().encode(text);
  const decoder = new TextDecoder();
  return [decoder.decode(bytes.slice(0, at), { stream: true }), decoder.decode(bytes.slice(at), { stream: true }) + decoder.decode()];
}

const upstreamStream = [
  ': keep-alive comment\r\n\r\n',
  'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}\r\n\r\n',
  'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Héllo 🌍"},"finish_reason":null}],"usage":null}\n\n',
  'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}],"usage":null}\n\n',
  'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"location\\":"}}]},"finish_reason":null}],"usage":null}\r\n\r\n',
  'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]},"finish_reason":null}],"usage":null}\n\n',
  'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}\n\n',
  'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":12}}}\n\n',
  'data: [DONE]\n\n',
].join('');

describe('OpenAI chat requests', () => {
  it('swaps the model, keeps everything else, and drops stream fields when not streaming', () => {
    const req = chatRequest({ tools: [weatherTool], tool_choice: 'auto', response_format: { type: 'json_object' }, stream: true, stream_options: { include_usage: true }, temperature: 0.2 });
    const prepared = openaiAdapter.chat.buildRequest(req, target, false);
    expect(prepared.url).toBe('https://api.openai.com/v1/chat/completions');
    expect(prepared.method).toBe('POST');
    expect(prepared.headers.authorization).toBe('Bearer sk-test');
    expect(prepared.headers['content-type']).toBe('application/json');
    const body = JSON.parse(prepared.body);
    expect(body.model).toBe('gpt-4o-mini-2024-07-18');
    expect(body.messages).toEqual(req.messages);
    expect(body.tools).toEqual([weatherTool]);
    expect(body.tool_choice).toBe('auto');
    expect(body.response_format).toEqual({ type: 'json_object' });
    expect(body.temperature).toBe(0.2);
    expect(body).not.toHaveProperty('stream');
    expect(body).not.toHaveProperty('stream_options');
  });

  it('always asks for usage on streams, whatever the client asked', () => {
    for (const streamOptions of [undefined, null, { include_usage: false }, { include_usage: true }]) {
      const prepared = openaiAdapter.chat.buildRequest(chatRequest({ stream: true, stream_options: streamOptions }), target, true);
      const body = JSON.parse(prepared.body);
      expect(body.stream).toBe(true);
      expect(body.stream_options).toEqual({ include_usage: true });
      expect(prepared.headers.accept).toBe('text/event-stream');
    }
  });

  it('sends no authorization header to keyless OpenAI-compatible servers', () => {
    const adapter = createOpenAIAdapter('openai-compatible');
    expect(adapter.type).toBe('openai-compatible');
    const prepared = adapter.chat.buildRequest(chatRequest(), { baseUrl: 'http://localhost:11434/v1', apiKey: '', upstreamModel: 'llama3.2' }, false);
    expect(prepared.url).toBe('http://localhost:11434/v1/chat/completions');
    expect(prepared.headers).not.toHaveProperty('authorization');
  });
});

describe('OpenAI chat responses', () => {
  it('maps usage (cached out of input, reasoning inside output) and rewrites the model', () => {
    const body = {
      id: 'chatcmpl-9',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-4o-mini-2024-07-18',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } }] },
          finish_reason: 'tool_calls',
        },
      ],
      usage: { prompt_tokens: 1200, completion_tokens: 340, total_tokens: 1540, prompt_tokens_details: { cached_tokens: 1024 }, completion_tokens_details: { reasoning_tokens: 256 } },
    };
    const { response, usage } = openaiAdapter.chat.parseResponse(body, 'public-mini');
    expect(response.model).toBe('public-mini');
    expect(response.choices[0].message.tool_calls?.[0].function.arguments).toBe('{"location":"Paris"}');
    expect(response.usage).toEqual(body.usage);
    expect(usage).toEqual({ inputTokens: 176, cachedInputTokens: 1024, outputTokens: 340, reasoningTokens: 256, images: 0 });
  });

  it('reads DeepSeek cache hits and treats a missing usage as unknown', () => {
    expect(usageFromOpenAI({ prompt_tokens: 50, completion_tokens: 5, total_tokens: 55, prompt_cache_hit_tokens: 32 })).toEqual({
      inputTokens: 18,
      cachedInputTokens: 32,
      outputTokens: 5,
      reasoningTokens: 0,
      images: 0,
    });
    const { usage } = openaiAdapter.chat.parseResponse({ id: 'x', choices: [] }, 'm');
    expect(usage).toBeNull();
  });

  it('rejects an answer that is not a chat completion', () => {
    expect(() => openaiAdapter.chat.parseResponse({ hello: 'world' }, 'm')).toThrow(AppError);
    try {
      openaiAdapter.chat.parseResponse('nope', 'm');
    } catch (err) {
      expect((err as AppError).status).toBe(502);
    }
  });
});

describe('OpenAI stream translation', () => {
  const whole = translate([upstreamStream]);

  it('returns chunks with the client model, the usage chunk, the output text and usage', () => {
    expect(whole.error).toBeNull();
    expect(whole.chunks).toHaveLength(7);
    for (const chunk of whole.chunks) {
      expect(chunk.model).toBe('public-mini');
      expect(chunk.object).toBe('chat.completion.chunk');
    }
    expect(whole.chunks[0].choices[0].delta.role).toBe('assistant');
    expect(textOf(whole.chunks)).toBe('Héllo 🌍');
    expect(toolCallsOf(whole.chunks)).toEqual([{ id: 'call_a', name: 'get_weather', arguments: '{"location":"Paris"}' }]);
    expect(whole.chunks[5].choices[0].finish_reason).toBe('tool_calls');
    expect(whole.chunks[6].choices).toEqual([]);
    expect(whole.chunks[6].usage?.prompt_tokens).toBe(120);
    expect(whole.output).toBe('Héllo 🌍{"location":"Paris"}');
    expect(whole.usage).toEqual({ inputTokens: 20, cachedInputTokens: 100, outputTokens: 30, reasoningTokens: 12, images: 0 });
  });

  it('gives the same chunks and usage when split at every byte position', () => {
    const bytes = new TextEncoder().encode(upstreamStream).length;
    for (let at = 0; at <= bytes; at++) {
      const split = translate(splitBytes(upstreamStream, at));
      expect(split.chunks).toEqual(whole.chunks);
      expect(split.usage).toEqual(whole.usage);
      expect(split.output).toBe(whole.output);
    }
  });

  it('gives the same chunks when fed one character at a time', () => {
    const split = translate(Array.from(upstreamStream));
    expect(split.chunks).toEqual(whole.chunks);
    expect(split.usage).toEqual(whole.usage);
  });

  it('captures an error sent inside the stream and keeps what came before', () => {
    const result = translate([
      'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"x","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n',
      'data: {"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}\n\n',
    ]);
    expect(textOf(result.chunks)).toBe('Hi');
    expect(result.usage).toBeNull();
    expect(result.error).toEqual({ status: 500, type: 'server_error', message: 'The server had an error', retryable: true });
    const limited = translate(['data: {"error":{"message":"Slow down","type":"rate_limit_exceeded"}}\n\n']);
    expect(limited.error?.status).toBe(429);
  });

  it('drops the content-free Azure preamble, ignores events after [DONE], delivers an unterminated last event', () => {
    const result = translate([
      'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0}]}\n\n',
      'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"x","choices":[{"index":0,"delta":{"content":"A"},"finish_reason":null}]}\n\n',
      'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"x","choices":[{"index":0,"delta":{"content":"B"},"finish_reason":"stop"}]}',
    ]);
    expect(result.chunks.map((c) => c.choices[0].delta.content)).toEqual(['A', 'B']);
    const afterDone = translate([
      'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"x","choices":[{"index":0,"delta":{"content":"A"},"finish_reason":null}]}\n\ndata: [DONE]\n\n',
      'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"x","choices":[{"index":0,"delta":{"content":"late"},"finish_reason":null}]}\n\n',
    ]);
    expect(textOf(afterDone.chunks)).toBe('A');
  });

  it('counts reasoning text of OpenAI-compatible servers as output', () => {
    const result = translate([
      'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"x","choices":[{"index":0,"delta":{"reasoning_content":"Think. "},"finish_reason":null}]}\n\n',
      'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"x","choices":[{"index":0,"delta":{"content":"Answer"},"finish_reason":"stop"}]}\n\n',
    ]);
    expect(result.output).toBe('Think. Answer');
  });
});

describe('OpenAI errors', () => {
  it('reads the OpenAI error object and marks what may be retried elsewhere', () => {
    const body = JSON.stringify({ error: { message: 'Rate limit reached', type: 'requests', param: null, code: 'rate_limit_exceeded' } });
    expect(parseOpenAIError(429, body)).toEqual({ status: 429, type: 'requests', message: 'Rate limit reached', retryable: true });
    const bad = parseOpenAIError(400, JSON.stringify({ error: { message: "Invalid 'messages'", type: 'invalid_request_error', code: null } }));
    expect(bad).toEqual({ status: 400, type: 'invalid_request_error', message: "Invalid 'messages'", retryable: false });
    for (const status of [408, 409, 429, 500, 502, 503, 529]) expect(parseOpenAIError(status, '').retryable).toBe(true);
    for (const status of [400, 401, 403, 404, 422]) expect(parseOpenAIError(status, '').retryable).toBe(false);
  });

  it('reads the shapes of compatible servers and plain text', () => {
    expect(parseOpenAIError(404, JSON.stringify({ error: 'model "llama9" not found' })).message).toBe('model "llama9" not found');
    const vllm = parseOpenAIError(400, JSON.stringify({ object: 'error', message: 'max_tokens too large', type: 'BadRequestError', code: 400 }));
    expect(vllm).toMatchObject({ type: 'BadRequestError', message: 'max_tokens too large' });
    expect(parseOpenAIError(502, '<html>Bad gateway</html>')).toEqual({ status: 502, type: 'api_error', message: '<html>Bad gateway</html>', retryable: true });
    expect(parseOpenAIError(503, '').message).toBe('The upstream answered HTTP 503.');
    expect(parseOpenAIError(500, 'x'.repeat(10_000)).message.length).toBeLessThan(2100);
  });
});

describe('OpenAI embeddings and images', () => {
  it('builds and parses embeddings', () => {
    const prepared = openaiAdapter.embeddings!.buildRequest({ model: 'public-embed', input: ['a', 'b'], dimensions: 256 }, { ...target, upstreamModel: 'text-embedding-3-small' });
    expect(prepared.url).toBe('https://api.openai.com/v1/embeddings');
    expect(JSON.parse(prepared.body)).toEqual({ model: 'text-embedding-3-small', input: ['a', 'b'], dimensions: 256 });
    const { response, usage } = openaiAdapter.embeddings!.parseResponse(
      { object: 'list', data: [{ object: 'embedding', index: 0, embedding: [0.5, -0.25] }], model: 'text-embedding-3-small', usage: { prompt_tokens: 7, total_tokens: 7 } },
      'public-embed',
    );
    expect(response.model).toBe('public-embed');
    expect(usage).toEqual({ inputTokens: 7, cachedInputTokens: 0, outputTokens: 0, reasoningTokens: 0, images: 0 });
  });

  it('encodes float embeddings as little-endian float32 base64', () => {
    const encoded = encodeEmbeddingsBase64({ object: 'list', data: [{ object: 'embedding', index: 0, embedding: [0.5, -0.25, 1] }], model: 'm', usage: { prompt_tokens: 1, total_tokens: 1 } });
    const buffer = Buffer.from(encoded.data[0].embedding as string, 'base64');
    expect(Array.from(new Float32Array(buffer.buffer, buffer.byteOffset, buffer.byteLength / 4))).toEqual([0.5, -0.25, 1]);
  });

  it('builds images and counts one unit per image returned', () => {
    const prepared = openaiAdapter.images!.buildRequest({ model: 'public-image', prompt: 'a lighthouse', n: 2, size: '1024x1024' }, { ...target, upstreamModel: 'dall-e-3' });
    expect(prepared.url).toBe('https://api.openai.com/v1/images/generations');
    expect(JSON.parse(prepared.body)).toEqual({ model: 'dall-e-3', prompt: 'a lighthouse', n: 2, size: '1024x1024' });
    const { usage } = openaiAdapter.images!.parseResponse({ created: 1, data: [{ url: 'https://x/1.png' }, { url: 'https://x/2.png' }] });
    expect(usage?.images).toBe(2);
    const tokens = openaiAdapter.images!.parseResponse({ created: 1, data: [{ b64_json: 'AAAA' }], usage: { input_tokens: 50, output_tokens: 4160, total_tokens: 4210 } });
    expect(tokens.usage).toEqual({ inputTokens: 50, cachedInputTokens: 0, outputTokens: 4160, reasoningTokens: 0, images: 1 });
  });
});

describe('OpenAI adapter against the mock upstream', () => {
  let mock: OpenAIMock;
  let mockTarget: UpstreamTarget;

  beforeAll(async () => {
    mock = await startOpenAIMock({ apiKey: 'sk-mock' });
    mockTarget = { baseUrl: mock.url, apiKey: 'sk-mock', upstreamModel: 'gpt-4o-mini' };
  });
  afterAll(() => mock.close());
  beforeEach(() => mock.setBehavior({}));

  /** One non-streamed and one streamed call of the same request. */
  async function both(req: ChatRequest) {
    const plain = await send(openaiAdapter.chat.buildRequest(req, mockTarget, false));
    expect(plain.status).toBe(200);
    const parsed = openaiAdapter.chat.parseResponse(JSON.parse(plain.text), req.model);
    const translator = openaiAdapter.chat.createStreamTranslator(req.model);
    const streamed = await sendStream(openaiAdapter.chat.buildRequest({ ...req, stream: true }, mockTarget, true), translator);
    expect(streamed.status).toBe(200);
    return { parsed, streamed, translator };
  }

  it('bills a stream exactly like the same call not streamed', async () => {
    const req = chatRequest({ messages: [{ role: 'user', content: 'Tell me something about lighthouses, please.' }] });
    const { parsed, streamed, translator } = await both(req);
    const text = parsed.response.choices[0].message.content!;
    expect(text).toMatch(/^Mock OpenAI reply to: "Tell me something about lighthouses, ple"\. /);
    expect(textOf(streamed.chunks)).toBe(text);
    expect(translator.outputText()).toBe(text);
    expect(translator.usage()).toEqual(parsed.usage);
    expect(parsed.usage).toEqual({
      inputTokens: countMessagesTokens(req.messages),
      cachedInputTokens: 0,
      outputTokens: countTokens(text),
      reasoningTokens: 0,
      images: 0,
    });
    expect(streamed.chunks.every((c) => c.model === 'public-mini')).toBe(true);
  });

  it('sends the key, the upstream model and include_usage the client did not ask for', async () => {
    await both(chatRequest());
    const [plain, streamed] = mock.requests.slice(-2);
    expect(plain.path).toBe('/v1/chat/completions');
    expect(plain.headers.authorization).toBe('Bearer sk-mock');
    expect(plain.body).toMatchObject({ model: 'gpt-4o-mini' });
    expect(plain.body).not.toHaveProperty('stream_options');
    expect(streamed.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });

  it('bills tool calls, cached and reasoning tokens the same streamed or not', async () => {
    mock.setBehavior({ cachedTokens: 10, reasoningTokens: 64 });
    const req = chatRequest({ messages: [{ role: 'user', content: "What's the weather in Paris?" }], tools: [weatherTool] });
    const { parsed, streamed, translator } = await both(req);
    const calls = parsed.response.choices[0].message.tool_calls!;
    expect(calls).toHaveLength(1);
    expect(calls[0].function).toEqual({ name: 'get_weather', arguments: '{"location":"Paris"}' });
    expect(parsed.response.choices[0].finish_reason).toBe('tool_calls');
    expect(toolCallsOf(streamed.chunks)).toEqual([{ id: calls[0].id, name: 'get_weather', arguments: '{"location":"Paris"}' }]);
    expect(translator.outputText()).toBe('{"location":"Paris"}');
    const prompt = countMessagesTokens(req.messages) + countTokens(JSON.stringify(req.tools));
    expect(parsed.usage).toEqual({ inputTokens: prompt - 10, cachedInputTokens: 10, outputTokens: countTokens('{"location":"Paris"}') + 64, reasoningTokens: 64, images: 0 });
    expect(translator.usage()).toEqual(parsed.usage);
  });

  it('leaves usage unknown when the upstream reports none, with the text to count', async () => {
    mock.setBehavior({ omitUsage: true });
    const { parsed, streamed, translator } = await both(chatRequest());
    expect(parsed.usage).toBeNull();
    expect(translator.usage()).toBeNull();
    expect(translator.outputText()).toBe(textOf(streamed.chunks));
    expect(translator.outputText().length).toBeGreaterThan(0);
  });

  it('turns upstream failures into retryable or final errors', async () => {
    mock.setBehavior({ fail: { count: 1, status: 429, code: 'rate_limit_exceeded', message: 'Rate limit reached for requests' } });
    const limited = await send(openaiAdapter.chat.buildRequest(chatRequest(), mockTarget, false));
    expect(limited.status).toBe(429);
    expect(openaiAdapter.parseError(limited.status, limited.text)).toMatchObject({ status: 429, message: 'Rate limit reached for requests', retryable: true });
    const next = await send(openaiAdapter.chat.buildRequest(chatRequest(), mockTarget, false));
    expect(next.status).toBe(200);
    const wrongKey = await send(openaiAdapter.chat.buildRequest(chatRequest(), { ...mockTarget, apiKey: 'sk-wrong' }, false));
    expect(openaiAdapter.parseError(wrongKey.status, wrongKey.text)).toMatchObject({ status: 401, retryable: false });
  });

  it('reports an error sent mid-stream', async () => {
    mock.setBehavior({ streamError: { afterEvents: 3, message: 'upstream exploded' } });
    const translator = openaiAdapter.chat.createStreamTranslator('public-mini');
    const streamed = await sendStream(openaiAdapter.chat.buildRequest(chatRequest(), mockTarget, true), translator);
    expect(streamed.chunks).toHaveLength(3);
    expect(translator.error()).toMatchObject({ status: 500, type: 'server_error', message: 'upstream exploded' });
    expect(translator.usage()).toBeNull();
  });

  it('keeps the text produced before a dropped connection', async () => {
    mock.setBehavior({ dropAfterEvents: 4 });
    const translator = openaiAdapter.chat.createStreamTranslator('public-mini');
    const streamed = await sendStream(openaiAdapter.chat.buildRequest(chatRequest(), mockTarget, true), translator);
    expect(streamed.broken).toBe(true);
    expect(streamed.chunks).toHaveLength(4);
    expect(translator.usage()).toBeNull();
    expect(translator.outputText()).toBe(textOf(streamed.chunks));
  });

  it('embeds and generates images through the mock', async () => {
    const embedTarget = { ...mockTarget, upstreamModel: 'text-embedding-3-small' };
    const embedded = await send(openaiAdapter.embeddings!.buildRequest({ model: 'public-embed', input: ['hello world', 'bonjour'] }, embedTarget));
    const embeddings = openaiAdapter.embeddings!.parseResponse(JSON.parse(embedded.text), 'public-embed');
    expect(embeddings.response.data).toHaveLength(2);
    expect(embeddings.usage?.inputTokens).toBe(countTokens('hello world') + countTokens('bonjour'));
    const drawn = await send(openaiAdapter.images!.buildRequest({ model: 'public-image', prompt: 'a red fox', n: 3 }, { ...mockTarget, upstreamModel: 'dall-e-2' }));
    const images = openaiAdapter.images!.parseResponse(JSON.parse(drawn.text));
    expect(images.response.data).toHaveLength(3);
    expect(images.usage?.images).toBe(3);
  });
});

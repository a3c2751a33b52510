import Anthropic, { APIError } from '@anthropic-ai/sdk';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAnthropicMock, type AnthropicMock } from '../../test/upstreams/anthropic.ts';
import { AppError } from '../lib/errors.ts';
import { anthropicAdapter, toAnthropicRequest } from '../providers/anthropic/index.ts';
import { SseParser } from '../providers/sse.ts';
import { countMessagesTokens } from '../providers/tokenizer.ts';
import type { ChatChunk, ChatResponse, Usage } from '../providers/types.ts';
import {
  anthropicError,
  anthropicRequestToCanonical,
  anthropicStopReason,
  canonicalResponseToAnthropic,
  createAnthropicStreamEncoder,
} from './anthropic-format.ts';

const pngData = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
const weatherTool = {
  name: 'get_weather',
  description: 'Current weather for a city',
  input_schema: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
};

/** An Anthropic request in the normal form the adapter writes, so the round trip must be exact. */
const anthropicBody = {
  model: 'public-claude',
  max_tokens: 512,
  system: [
    { type: 'text', text: 'You are terse.' },
    { type: 'text', text: 'Use metric units.' },
  ],
  messages: [
    {
      role: 'user',
      content: [
        { type: 'text', text: 'What is in this picture? And the weather in Paris?' },
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: pngData } },
        { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
      ],
    },
    {
      role: 'assistant',
      content: [
        { type: 'text', text: 'A cat. Checking the weather.' },
        { type: 'tool_use', id: 'toolu_01', name: 'get_weather', input: { location: 'Paris' } },
        { type: 'tool_use', id: 'toolu_02', name: 'get_weather', input: { location: 'Lyon' } },
      ],
    },
    {
      role: 'user',
      content: [
        { type: 'tool_result', tool_use_id: 'toolu_01', content: '18°C, cloudy' },
        { type: 'tool_result', tool_use_id: 'toolu_02', content: '21°C, sunny' },
        { type: 'text', text: 'Which is warmer?' },
      ],
    },
  ],
  tools: [weatherTool],
  tool_choice: { type: 'any', disable_parallel_tool_use: true },
  stop_sequences: ['\n\nHuman:', 'END'],
  temperature: 0.2,
  top_p: 0.9,
  metadata: { user_id: 'end-user-7' },
  stream: true,
};

describe('Anthropic request → canonical', () => {
  it('maps system blocks, images, tool use, tool results, tools and options', () => {
    expect(anthropicRequestToCanonical(anthropicBody)).toEqual({
      model: 'public-claude',
      max_tokens: 512,
      messages: [
        { role: 'system', content: [{ type: 'text', text: 'You are terse.' }, { type: 'text', text: 'Use metric units.' }] },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is in this picture? And the weather in Paris?' },
            { type: 'image_url', image_url: { url: `data:image/png;base64,${pngData}` } },
            { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
          ],
        },
        {
          role: 'assistant',
          content: 'A cat. Checking the weather.',
          tool_calls: [
            { id: 'toolu_01', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } },
            { id: 'toolu_02', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Lyon"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'toolu_01', content: '18°C, cloudy' },
        { role: 'tool', tool_call_id: 'toolu_02', content: '21°C, sunny' },
        { role: 'user', content: 'Which is warmer?' },
      ],
      tools: [{ type: 'function', function: { name: 'get_weather', description: 'Current weather for a city', parameters: weatherTool.input_schema } }],
      tool_choice: 'required',
      parallel_tool_calls: false,
      stop: ['\n\nHuman:', 'END'],
      temperature: 0.2,
      top_p: 0.9,
      user: 'end-user-7',
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('round-trips to an Anthropic upstream without losing system, images, tools or stop sequences', () => {
    const back = toAnthropicRequest(anthropicRequestToCanonical(anthropicBody), 'public-claude', true);
    expect(back).toEqual(anthropicBody);
  });

  it('maps string system, tool choices, tool-only turns and images inside tool results', () => {
    const req = anthropicRequestToCanonical({
      model: 'm',
      max_tokens: 10,
      system: 'Be brief.',
      tool_choice: { type: 'tool', name: 'get_weather' },
      tools: [weatherTool],
      messages: [
        { role: 'user', content: 'weather?' },
        { role: 'assistant', content: [{ type: 'thinking', thinking: 'hmm', signature: 's' }, { type: 'tool_use', id: 't1', name: 'get_weather', input: {} }] },
        {
          role: 'user',
          content: [{
            type: 'tool_result',
            tool_use_id: 't1',
            content: [{ type: 'text', text: 'see chart' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: pngData } }],
          }],
        },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't2' }] },
      ],
    });
    expect(req.messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 't1', type: 'function', function: { name: 'get_weather', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 't1', content: 'see chart' },
      // OpenAI tool messages hold text only: the image follows as user content.
      { role: 'user', content: [{ type: 'image_url', image_url: { url: `data:image/png;base64,${pngData}` } }] },
      { role: 'tool', tool_call_id: 't2', content: '' },
    ]);
    expect(req.tool_choice).toEqual({ type: 'function', function: { name: 'get_weather' } });
    expect(req.stream).toBeUndefined();
    expect(anthropicRequestToCanonical({ model: 'm', max_tokens: 1, messages: [], tool_choice: { type: 'auto' } }).tool_choice).toBe('auto');
    expect(anthropicRequestToCanonical({ model: 'm', max_tokens: 1, messages: [], tool_choice: { type: 'none' } }).tool_choice).toBe('none');
  });

  it('rejects malformed bodies with invalid_request_error', () => {
    const attempt = (body: unknown) => {
      try {
        anthropicRequestToCanonical(body);
      } catch (err) {
        expect(err).toBeInstanceOf(AppError);
        return err as AppError;
      }
      throw new Error('expected a rejection');
    };
    expect(attempt({ model: 'm', messages: [] }).param).toBe('max_tokens');
    expect(attempt({ max_tokens: 5, messages: [] }).param).toBe('model');
    expect(attempt({ model: 'm', max_tokens: 5, messages: [{ role: 'system', content: 'x' }] }).param).toBe('messages[0].role');
    expect(attempt({ model: 'm', max_tokens: 5, messages: [], tools: [{ type: 'web_search_20250305', name: 'web_search' }] }).code).toBe('unsupported_tool');
    expect(attempt({ model: 'm', max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'audio' }] }] }).param).toBe('messages[0].content[0]');
    expect(attempt('nope').status).toBe(400);
  });
});

describe('canonical answer → Anthropic message', () => {
  const usage: Usage = { inputTokens: 120, cachedInputTokens: 30, outputTokens: 45, reasoningTokens: 0, images: 0 };
  const response = (message: ChatResponse['choices'][number]['message'], finish: ChatResponse['choices'][number]['finish_reason']): ChatResponse => ({
    id: 'chatcmpl-abc',
    object: 'chat.completion',
    created: 1,
    model: 'gpt-x',
    choices: [{ index: 0, message, finish_reason: finish }],
  });

  it('builds text and tool_use blocks, stop reason and usage', () => {
    const msg = canonicalResponseToAnthropic(
      response(
        {
          role: 'assistant',
          content: 'Let me check.',
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } },
            { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"location":' } },
          ],
        },
        'tool_calls',
      ),
      usage,
      'public-model',
    );
    expect(msg.id).toMatch(/^msg_[0-9a-z]{26}$/);
    expect(msg).toEqual({
      id: msg.id,
      type: 'message',
      role: 'assistant',
      model: 'public-model',
      content: [
        { type: 'text', text: 'Let me check.' },
        { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { location: 'Paris' } },
        { type: 'tool_use', id: 'call_2', name: 'get_weather', input: {} },
      ],
      stop_reason: 'tool_use',
      stop_sequence: null,
      usage: { input_tokens: 120, cache_creation_input_tokens: 0, cache_read_input_tokens: 30, output_tokens: 45 },
    });
  });

  it('keeps an upstream msg_ id or the one given, and maps every finish reason', () => {
    const r = { ...response({ role: 'assistant', content: 'x' }, 'stop'), id: 'msg_upstream' };
    expect(canonicalResponseToAnthropic(r, usage, 'm').id).toBe('msg_upstream');
    expect(canonicalResponseToAnthropic(r, usage, 'm', 'msg_given').id).toBe('msg_given');
    expect(canonicalResponseToAnthropic(response({ role: 'assistant', content: null, refusal: 'I cannot.' }, 'content_filter'), usage, 'm').content)
      .toEqual([{ type: 'text', text: 'I cannot.' }]);
    expect(anthropicStopReason('stop')).toBe('end_turn');
    expect(anthropicStopReason('length')).toBe('max_tokens');
    expect(anthropicStopReason('tool_calls')).toBe('tool_use');
    expect(anthropicStopReason('content_filter')).toBe('refusal');
    expect(anthropicStopReason(null)).toBe('end_turn');
  });
});

describe('Anthropic error bodies', () => {
  it('uses Anthropic error types for each status', () => {
    const cases: Array<[number, string]> = [
      [400, 'invalid_request_error'], [401, 'authentication_error'], [402, 'billing_error'], [403, 'permission_error'],
      [404, 'not_found_error'], [413, 'request_too_large'], [429, 'rate_limit_error'], [500, 'api_error'],
      [502, 'api_error'], [504, 'timeout_error'], [529, 'overloaded_error'],
    ];
    for (const [status, type] of cases) {
      expect(anthropicError(status, null, 'm')).toEqual({ type: 'error', error: { type, message: 'm' } });
    }
    expect(anthropicError(402, 'insufficient_credits', 'Top up').error.type).toBe('billing_error');
    expect(anthropicError(500, 'overloaded_error', 'busy').error.type).toBe('overloaded_error');
    expect(anthropicError(400, 'invalid_request_error', 'bad', 'req_1')).toEqual({ type: 'error', error: { type: 'invalid_request_error', message: 'bad' }, request_id: 'req_1' });
  });
});

// ---------------------------------------------------------------------------------------------
// Stream encoder

function chunkOf(delta: ChatChunk['choices'][number]['delta'], finish: ChatChunk['choices'][number]['finish_reason'] = null): ChatChunk {
  return { id: 'c', object: 'chat.completion.chunk', created: 1, model: 'x', choices: [{ index: 0, delta, finish_reason: finish }] };
}

/** A canonical stream with text then two tool calls, arguments in pieces, and the usage chunk. */
const toolStream: ChatChunk[] = [
  chunkOf({ role: 'assistant', content: '' }),
  chunkOf({ content: 'Checking ' }),
  chunkOf({ content: 'both. ☕' }),
  chunkOf({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '' } }] }),
  chunkOf({ tool_calls: [{ index: 0, function: { arguments: '{"location":' } }] }),
  chunkOf({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }),
  chunkOf({ tool_calls: [{ index: 1, id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"tz":"CET"}' } }] }),
  chunkOf({}, 'tool_calls'),
  { id: 'c', object: 'chat.completion.chunk', created: 1, model: 'x', choices: [], usage: { prompt_tokens: 60, completion_tokens: 25, total_tokens: 85 } },
];
const finalUsage: Usage = { inputTokens: 50, cachedInputTokens: 10, outputTokens: 25, reasoningTokens: 0, images: 0 };

function encodeToolStream(): string {
  const encoder = createAnthropicStreamEncoder('public-model', 'msg_test1');
  return encoder.start(48) + toolStream.map((c) => encoder.push(c)).join('') + encoder.finish(finalUsage);
}

describe('canonical chunks → Anthropic SSE', () => {
  it('writes message_start, indexed blocks, message_delta and message_stop', () => {
    const events = new SseParser().push(encodeToolStream()).map((e) => [e.event, JSON.parse(e.data)]);
    expect(events).toEqual([
      ['message_start', { type: 'message_start', message: { id: 'msg_test1', type: 'message', role: 'assistant', model: 'public-model', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 48, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 0 } } }],
      ['ping', { type: 'ping' }],
      ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
      ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Checking ' } }],
      ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'both. ☕' } }],
      ['content_block_stop', { type: 'content_block_stop', index: 0 }],
      ['content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'tool_use', id: 'call_a', name: 'get_weather', input: {} } }],
      ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '{"location":' } }],
      ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '"Paris"}' } }],
      ['content_block_stop', { type: 'content_block_stop', index: 1 }],
      ['content_block_start', { type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'call_b', name: 'get_time', input: {} } }],
      ['content_block_delta', { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '{"tz":"CET"}' } }],
      ['content_block_stop', { type: 'content_block_stop', index: 2 }],
      ['message_delta', { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { input_tokens: 50, cache_creation_input_tokens: 0, cache_read_input_tokens: 10, output_tokens: 25 } }],
      ['message_stop', { type: 'message_stop' }],
    ]);
  });

  it('starts on the first push when start() was not called, and stops writing after finish or error', () => {
    const encoder = createAnthropicStreamEncoder('m', 'msg_x');
    const first = new SseParser().push(encoder.push(chunkOf({ content: 'hi' })));
    expect(first.map((e) => e.event)).toEqual(['message_start', 'ping', 'content_block_start', 'content_block_delta']);
    expect(encoder.start(5)).toBe('');
    const end = new SseParser().push(encoder.finish(finalUsage, 'length'));
    expect(end.map((e) => e.event)).toEqual(['content_block_stop', 'message_delta', 'message_stop']);
    expect(JSON.parse(end[1].data).delta.stop_reason).toBe('max_tokens');
    expect(encoder.push(chunkOf({ content: 'late' }))).toBe('');
    expect(encoder.error('api_error', 'x')).toBe('');

    const failing = createAnthropicStreamEncoder('m', 'msg_y');
    failing.start(1);
    expect(failing.error('overloaded_error', 'Overloaded')).toBe('event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n');
    expect(createAnthropicStreamEncoder('m').error('upstream_error', 'x')).toContain('"type":"api_error"');
  });
});

// ---------------------------------------------------------------------------------------------
// With the official SDK

type Handler = (req: IncomingMessage, body: any, res: ServerResponse) => Promise<void> | void;

async function serve(handler: Handler): Promise<{ server: Server; client: Anthropic }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      Promise.resolve(handler(req, JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null'), res)).catch((err: unknown) => {
        res.destroy(err as Error);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, client: new Anthropic({ apiKey: 'tg_test_key', baseURL: `http://127.0.0.1:${port}`, maxRetries: 0 }) };
}

function closeServer(server: Server | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

describe('the official Anthropic SDK reads what the encoder writes', () => {
  let fixed: { server: Server; client: Anthropic };
  let reply: { status: number; contentType: string; body: string };
  beforeAll(async () => {
    fixed = await serve((_req, _body, res) => {
      res.writeHead(reply.status, { 'content-type': reply.contentType });
      res.end(reply.body);
    });
  });
  afterAll(() => closeServer(fixed?.server));

  const params = { model: 'public-model', max_tokens: 100, messages: [{ role: 'user' as const, content: 'weather in Paris?' }] };

  it('assembles the final message from the stream', async () => {
    reply = { status: 200, contentType: 'text/event-stream', body: encodeToolStream() };
    const message = await fixed.client.messages.stream(params).finalMessage();
    expect(message.id).toBe('msg_test1');
    expect(message.model).toBe('public-model');
    expect(message.stop_reason).toBe('tool_use');
    expect(message.content).toEqual([
      { type: 'text', text: 'Checking both. ☕' },
      { type: 'tool_use', id: 'call_a', name: 'get_weather', input: { location: 'Paris' } },
      { type: 'tool_use', id: 'call_b', name: 'get_time', input: { tz: 'CET' } },
    ]);
    expect(message.usage).toMatchObject({ input_tokens: 50, output_tokens: 25, cache_read_input_tokens: 10 });
  });

  it('yields the raw events with create({ stream: true })', async () => {
    reply = { status: 200, contentType: 'text/event-stream', body: encodeToolStream() };
    const stream = await fixed.client.messages.create({ ...params, stream: true });
    const types: string[] = [];
    let text = '';
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') text += event.delta.text;
    }
    expect(text).toBe('Checking both. ☕');
    expect(types[0]).toBe('message_start');
    expect(types.at(-2)).toBe('message_delta');
    expect(types.at(-1)).toBe('message_stop');
    expect(types.filter((t) => t === 'content_block_start')).toHaveLength(3);
  });

  it('reads a non-streamed message', async () => {
    const resp: ChatResponse = {
      id: 'chatcmpl-1', object: 'chat.completion', created: 1, model: 'x',
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hi there.' }, finish_reason: 'stop' }],
    };
    reply = { status: 200, contentType: 'application/json', body: JSON.stringify(canonicalResponseToAnthropic(resp, finalUsage, 'public-model', 'msg_plain')) };
    const message = await fixed.client.messages.create(params);
    expect(message.content).toEqual([{ type: 'text', text: 'Hi there.' }]);
    expect(message.stop_reason).toBe('end_turn');
    expect(message.usage).toMatchObject({ input_tokens: 50, output_tokens: 25, cache_read_input_tokens: 10 });
  });

  it('throws the SDK error for an in-stream error event', async () => {
    const encoder = createAnthropicStreamEncoder('public-model', 'msg_err');
    reply = { status: 200, contentType: 'text/event-stream', body: encoder.start(10) + encoder.push(chunkOf({ content: 'par' })) + encoder.error('overloaded_error', 'Overloaded') };
    const error = await fixed.client.messages.stream(params).finalMessage().catch((err: unknown) => err);
    expect(error).toBeInstanceOf(APIError);
    expect((error as APIError).type).toBe('overloaded_error');
    expect((error as APIError).message).toContain('Overloaded');
  });

  it('maps error bodies to the SDK error classes', async () => {
    const cases: Array<[number, string | null, new (...args: any[]) => APIError]> = [
      [400, null, Anthropic.BadRequestError],
      [401, null, Anthropic.AuthenticationError],
      [402, 'insufficient_credits', APIError],
      [403, null, Anthropic.PermissionDeniedError],
      [404, null, Anthropic.NotFoundError],
      [429, null, Anthropic.RateLimitError],
      [529, null, Anthropic.InternalServerError],
    ];
    for (const [status, type, errorClass] of cases) {
      reply = { status, contentType: 'application/json', body: JSON.stringify(anthropicError(status, type, `failed with ${status}`)) };
      const error = (await fixed.client.messages.create(params).catch((err: unknown) => err)) as APIError;
      expect(error).toBeInstanceOf(errorClass);
      expect(error.status).toBe(status);
      expect(error.type).toBe(anthropicError(status, type, '').error.type);
      expect(error.message).toContain(`failed with ${status}`);
    }
  });
});

describe('SDK → front door → Anthropic upstream (mock) → front door → SDK', () => {
  let mock: AnthropicMock;
  let door: { server: Server; client: Anthropic };
  beforeAll(async () => {
    mock = await startAnthropicMock();
    const upstream = { baseUrl: mock.url, apiKey: 'sk-ant-mock', upstreamModel: 'claude-mock-1' };
    // What the gateway's /v1/messages route composes, minus auth and money.
    door = await serve(async (_req, body, res) => {
      const canonical = anthropicRequestToCanonical(body);
      const stream = canonical.stream === true;
      const prepared = anthropicAdapter.chat.buildRequest(canonical, upstream, stream);
      const up = await fetch(prepared.url, { method: prepared.method, headers: prepared.headers, body: prepared.body });
      if (!up.ok) {
        const e = anthropicAdapter.parseError(up.status, await up.text());
        res.writeHead(e.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(anthropicError(e.status, e.type, e.message)));
        return;
      }
      if (!stream) {
        const { response, usage } = anthropicAdapter.chat.parseResponse(await up.json(), canonical.model);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(canonicalResponseToAnthropic(response, usage!, canonical.model)));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const translator = anthropicAdapter.chat.createStreamTranslator(canonical.model);
      const encoder = createAnthropicStreamEncoder(canonical.model);
      res.write(encoder.start(countMessagesTokens(canonical.messages)));
      const decoder = new TextDecoder();
      for await (const piece of up.body as AsyncIterable<Uint8Array>) {
        for (const chunk of translator.push(decoder.decode(piece, { stream: true }))) res.write(encoder.push(chunk));
      }
      for (const chunk of [...translator.push(decoder.decode()), ...translator.end()]) res.write(encoder.push(chunk));
      const error = translator.error();
      res.end(error ? encoder.error(error.type, error.message) : encoder.finish(translator.usage()!));
    });
  });
  afterAll(async () => {
    await closeServer(door?.server);
    await mock?.close();
  });

  const request = {
    model: 'public-claude',
    max_tokens: 256,
    system: [{ type: 'text' as const, text: 'You are a weather bot.' }, { type: 'text' as const, text: 'Be brief.' }],
    messages: [{
      role: 'user' as const,
      content: [
        { type: 'text' as const, text: 'Here is a map. What is the weather in Oslo?' },
        { type: 'image' as const, source: { type: 'base64' as const, media_type: 'image/png' as const, data: pngData } },
      ],
    }],
    tools: [weatherTool as Anthropic.Tool],
    stop_sequences: ['STOP'],
  };

  it('serves streamed and non-streamed calls with the same answer and usage, and forwards the request intact', async () => {
    mock.requests.length = 0;
    const plain = await door.client.messages.create(request);
    const streamed = await door.client.messages.stream(request).finalMessage();

    expect(mock.requests.map((r) => r.body)).toEqual([
      { ...request, model: 'claude-mock-1' },
      { ...request, model: 'claude-mock-1', stream: true },
    ]);
    expect(plain.model).toBe('public-claude');
    expect(plain.stop_reason).toBe('tool_use');
    expect(plain.content).toEqual([
      { type: 'text', text: "I'll look that up with get_weather." },
      { type: 'tool_use', id: expect.stringMatching(/^toolu_/), name: 'get_weather', input: { location: 'Oslo' } },
    ]);
    expect(streamed.content).toEqual(plain.content);
    expect(streamed.stop_reason).toBe(plain.stop_reason);
    expect(streamed.usage).toMatchObject({
      input_tokens: plain.usage.input_tokens,
      output_tokens: plain.usage.output_tokens,
      cache_read_input_tokens: plain.usage.cache_read_input_tokens,
    });
    expect(plain.usage.input_tokens).toBeGreaterThan(100);
    expect(plain.usage.output_tokens).toBeGreaterThan(5);
  });

  it('passes an upstream in-stream error and an upstream HTTP error through in Anthropic form', async () => {
    mock.setBehavior({ streamError: { afterEvents: 3, type: 'overloaded_error', message: 'Overloaded' } });
    const streamError = await door.client.messages.stream(request).finalMessage().catch((err: unknown) => err);
    expect((streamError as APIError).type).toBe('overloaded_error');

    mock.setBehavior({ fail: { count: 1, status: 429, message: 'Number of request tokens has exceeded your rate limit' } });
    const limited = (await door.client.messages.create(request).catch((err: unknown) => err)) as APIError;
    expect(limited).toBeInstanceOf(Anthropic.RateLimitError);
    expect(limited.type).toBe('rate_limit_error');
    mock.setBehavior({});
  });
});

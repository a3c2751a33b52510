import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startAnthropicMock, type AnthropicMock } from '../../../test/upstreams/anthropic.ts';
import { AppError } from '../../lib/errors.ts';
import { countTokens } from '../tokenizer.ts';
import type { ChatChunk, ChatRequest, PreparedRequest, StreamTranslator, UpstreamTarget } from '../types.ts';
import { anthropicAdapter, defaultMaxTokens, finishReasonFromAnthropic, jsonObjectInstruction, messagesUrl } from './index.ts';

const target: UpstreamTarget = { baseUrl: 'https://api.anthropic.com', apiKey: 'sk-ant-test', upstreamModel: 'claude-sonnet-4-5' };
const pngData = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

function body(prepared: PreparedRequest): any {
  return JSON.parse(prepared.body);
}

describe('canonical request → Anthropic Messages', () => {
  const weatherTool = {
    type: 'function' as const,
    function: {
      name: 'get_weather',
      description: 'Current weather for a city',
      parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
    },
  };

  it('maps system, images, tools, tool calls and tool results', () => {
    const req: ChatRequest = {
      model: 'public-claude',
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'developer', content: [{ type: 'text', text: 'Use metric units.' }] },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is in these pictures, and the weather in Paris?' },
            { type: 'image_url', image_url: { url: `data:image/png;base64,${pngData}` } },
            { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg', detail: 'high' } },
          ],
        },
        {
          role: 'assistant',
          content: 'Checking.',
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } },
            { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Lyon"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '18°C, cloudy' },
        { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: '21°C, ' }, { type: 'text', text: 'sunny' }] },
        { role: 'user', content: 'Thanks. Which is warmer?' },
      ],
      tools: [weatherTool],
      tool_choice: 'auto',
      stop: ['\n\nHuman:', 'END'],
      temperature: 0.3,
      top_p: 0.9,
      max_completion_tokens: 300,
      max_tokens: 50,
      user: 'end-user-42',
    };
    const prepared = anthropicAdapter.chat.buildRequest(req, target, false);
    expect(prepared.url).toBe('https://api.anthropic.com/v1/messages');
    expect(prepared.method).toBe('POST');
    expect(prepared.headers).toMatchObject({ 'x-api-key': 'sk-ant-test', 'anthropic-version': '2023-06-01', 'content-type': 'application/json' });
    expect(body(prepared)).toEqual({
      model: 'claude-sonnet-4-5',
      max_tokens: 300,
      system: [
        { type: 'text', text: 'You are terse.' },
        { type: 'text', text: 'Use metric units.' },
      ],
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is in these pictures, and the weather in Paris?' },
            { type: 'image', source: { type: 'base64', media_type: 'image/png', data: pngData } },
            { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
          ],
        },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'Checking.' },
            { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { location: 'Paris' } },
            { type: 'tool_use', id: 'call_2', name: 'get_weather', input: { location: 'Lyon' } },
          ],
        },
        {
          // Both tool results and the next user text merge into one user turn, results first.
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'call_1', content: '18°C, cloudy' },
            { type: 'tool_result', tool_use_id: 'call_2', content: '21°C, sunny' },
            { type: 'text', text: 'Thanks. Which is warmer?' },
          ],
        },
      ],
      tools: [{ name: 'get_weather', description: 'Current weather for a city', input_schema: weatherTool.function.parameters }],
      tool_choice: { type: 'auto' },
      stop_sequences: ['\n\nHuman:', 'END'],
      temperature: 0.3,
      top_p: 0.9,
      metadata: { user_id: 'end-user-42' },
    });
  });

  it('merges consecutive same-role messages and sends a single system text as a string', () => {
    const prepared = anthropicAdapter.chat.buildRequest(
      {
        model: 'm',
        messages: [
          { role: 'system', content: 'Be kind.' },
          { role: 'user', content: 'one' },
          { role: 'user', content: [{ type: 'text', text: 'two' }] },
          { role: 'assistant', content: 'three' },
          { role: 'assistant', content: '' },
        ],
      },
      target,
      true,
    );
    const b = body(prepared);
    expect(b.system).toBe('Be kind.');
    expect(b.messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'one' }, { type: 'text', text: 'two' }] },
      { role: 'assistant', content: 'three' },
    ]);
    expect(b.stream).toBe(true);
    const emptyResult = body(anthropicAdapter.chat.buildRequest(
      { model: 'm', messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '' } }] }, { role: 'tool', tool_call_id: 'c1', content: '' }] },
      target,
      false,
    ));
    expect(emptyResult.messages).toEqual([
      { role: 'assistant', content: [{ type: 'tool_use', id: 'c1', name: 'f', input: {} }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'c1' }] },
    ]);
    expect(b.max_tokens).toBe(defaultMaxTokens);
    expect(prepared.headers.accept).toBe('text/event-stream');
  });

  it('maps tool_choice, parallel_tool_calls, stop strings, temperature range and max_tokens', () => {
    const base: ChatRequest = { model: 'm', messages: [{ role: 'user', content: 'hi' }], tools: [weatherTool] };
    const choice = (extra: Partial<ChatRequest>) => body(anthropicAdapter.chat.buildRequest({ ...base, ...extra }, target, false));
    expect(choice({ tool_choice: 'none' }).tool_choice).toEqual({ type: 'none' });
    expect(choice({ tool_choice: 'required' }).tool_choice).toEqual({ type: 'any' });
    expect(choice({ tool_choice: { type: 'function', function: { name: 'get_weather' } } }).tool_choice).toEqual({ type: 'tool', name: 'get_weather' });
    expect(choice({ tool_choice: 'required', parallel_tool_calls: false }).tool_choice).toEqual({ type: 'any', disable_parallel_tool_use: true });
    expect(choice({ parallel_tool_calls: false }).tool_choice).toEqual({ type: 'auto', disable_parallel_tool_use: true });
    expect(choice({}).tool_choice).toBeUndefined();
    expect(choice({ stop: 'STOP' }).stop_sequences).toEqual(['STOP']);
    expect(choice({ temperature: 1.7 }).temperature).toBe(1);
    expect(choice({ max_tokens: 77 }).max_tokens).toBe(77);
    // No tools, no tool_choice: Anthropic rejects a tool_choice without tools.
    expect(body(anthropicAdapter.chat.buildRequest({ model: 'm', messages: [{ role: 'user', content: 'hi' }], tool_choice: 'auto' }, target, false)).tool_choice).toBeUndefined();
  });

  it('turns JSON mode into a system instruction', () => {
    const b = body(anthropicAdapter.chat.buildRequest(
      { model: 'm', messages: [{ role: 'system', content: 'S' }, { role: 'user', content: 'list' }], response_format: { type: 'json_object' } },
      target,
      false,
    ));
    expect(b.system).toEqual([{ type: 'text', text: 'S' }, { type: 'text', text: jsonObjectInstruction }]);
    const schema = { type: 'object', properties: { a: { type: 'number' } } };
    const s = body(anthropicAdapter.chat.buildRequest(
      { model: 'm', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'n', schema } } },
      target,
      false,
    ));
    expect(s.system).toBe(`${jsonObjectInstruction} The object must conform to this JSON schema: ${JSON.stringify(schema)}`);
  });

  it('uses the api version override and base URLs that already end in /v1', () => {
    const prepared = anthropicAdapter.chat.buildRequest(
      { model: 'm', messages: [{ role: 'user', content: 'hi' }] },
      { ...target, baseUrl: 'http://127.0.0.1:9/v1/', apiVersion: '2024-01-01' },
      false,
    );
    expect(prepared.url).toBe('http://127.0.0.1:9/v1/messages');
    expect(prepared.headers['anthropic-version']).toBe('2024-01-01');
    expect(messagesUrl('https://proxy.example/anthropic')).toBe('https://proxy.example/anthropic/v1/messages');
  });

  it('rejects what Anthropic cannot take, as invalid_request_error', () => {
    const build = (req: Partial<ChatRequest>) => () =>
      anthropicAdapter.chat.buildRequest({ model: 'm', messages: [{ role: 'user', content: 'hi' }], ...req }, target, false);
    const audio = build({ messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'AAA', format: 'wav' } }] }] });
    expect(audio).toThrow(AppError);
    expect(audio).toThrow(/input_audio/);
    expect(build({ n: 2 })).toThrow(/n must be 1/);
    expect(build({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png,abc' } }] }] })).toThrow(/base64/);
    expect(build({ messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{oops' } }] }] })).toThrow(/JSON object/);
    try {
      audio();
    } catch (err) {
      expect((err as AppError).status).toBe(400);
      expect((err as AppError).param).toBe('messages[0].content[0]');
    }
  });
});

describe('Anthropic message → canonical', () => {
  it('concatenates text, maps tool_use, drops thinking and rewrites the model', () => {
    const { response, usage } = anthropicAdapter.chat.parseResponse(
      {
        id: 'msg_01',
        type: 'message',
        role: 'assistant',
        model: 'claude-sonnet-4-5-20250929',
        content: [
          { type: 'thinking', thinking: 'secret reasoning', signature: 'sig' },
          { type: 'text', text: 'Let me ' },
          { type: 'text', text: 'check.' },
          { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { location: 'Paris', days: 2 } },
        ],
        stop_reason: 'tool_use',
        stop_sequence: null,
        usage: { input_tokens: 100, cache_creation_input_tokens: 20, cache_read_input_tokens: 300, output_tokens: 42 },
      },
      'public-claude',
    );
    expect(response.model).toBe('public-claude');
    expect(response.object).toBe('chat.completion');
    expect(response.choices[0].message).toEqual({
      role: 'assistant',
      content: 'Let me check.',
      refusal: null,
      tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris","days":2}' } }],
    });
    expect(response.choices[0].finish_reason).toBe('tool_calls');
    expect(usage).toEqual({ inputTokens: 120, cachedInputTokens: 300, outputTokens: 42, reasoningTokens: 0, images: 0 });
    expect(response.usage).toEqual({
      prompt_tokens: 420,
      completion_tokens: 42,
      total_tokens: 462,
      prompt_tokens_details: { cached_tokens: 300 },
      completion_tokens_details: { reasoning_tokens: 0 },
    });
  });

  it('maps every stop reason', () => {
    expect(finishReasonFromAnthropic('end_turn')).toBe('stop');
    expect(finishReasonFromAnthropic('stop_sequence')).toBe('stop');
    expect(finishReasonFromAnthropic('max_tokens')).toBe('length');
    expect(finishReasonFromAnthropic('tool_use')).toBe('tool_calls');
    expect(finishReasonFromAnthropic('refusal')).toBe('content_filter');
    expect(finishReasonFromAnthropic(null)).toBeNull();
  });

  it('rejects a body that is not a message', () => {
    expect(() => anthropicAdapter.chat.parseResponse({ type: 'error' }, 'm')).toThrow(/content array/);
  });
});

describe('Anthropic errors', () => {
  it('parses error bodies and marks retryable ones', () => {
    const overloaded = anthropicAdapter.parseError(529, JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }));
    expect(overloaded).toEqual({ status: 529, type: 'overloaded_error', message: 'Overloaded', retryable: true });
    const invalid = anthropicAdapter.parseError(400, JSON.stringify({ type: 'error', error: { type: 'invalid_request_error', message: 'max_tokens: Field required' } }));
    expect(invalid).toEqual({ status: 400, type: 'invalid_request_error', message: 'max_tokens: Field required', retryable: false });
    expect(anthropicAdapter.parseError(429, '{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}').retryable).toBe(true);
    expect(anthropicAdapter.parseError(500, '{"type":"error","error":{"type":"api_error","message":"boom"}}').retryable).toBe(true);
    expect(anthropicAdapter.parseError(401, '{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}').retryable).toBe(false);
    const html = anthropicAdapter.parseError(502, '<html>Bad Gateway</html>');
    expect(html).toEqual({ status: 502, type: 'api_error', message: 'Anthropic upstream answered HTTP 502: <html>Bad Gateway</html>', retryable: true });
  });
});

// A stream as Anthropic sends it: thinking, text with multi-byte characters, a tool call, cache usage.
const fixtureEvents: Array<[string, unknown]> = [
  ['message_start', { type: 'message_start', message: { id: 'msg_014p7gG3wDgGV9EUtLvnow3U', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 472, cache_creation_input_tokens: 10, cache_read_input_tokens: 100, output_tokens: 2 } } }],
  ['ping', { type: 'ping' }],
  ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'The user wants weather.' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'EqQBCgIYAhIM' } }],
  ['content_block_stop', { type: 'content_block_stop', index: 0 }],
  ['content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'Okay, café ☕ ' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'checking 🌦…' } }],
  ['content_block_stop', { type: 'content_block_stop', index: 1 }],
  ['content_block_start', { type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'toolu_01T1x1fJ34qAmk2tNTrN7Up6', name: 'get_weather', input: {} } }],
  ['content_block_delta', { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '{"location": "San Fra' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: 'ncisco, CA"}' } }],
  ['content_block_stop', { type: 'content_block_stop', index: 2 }],
  ['message_delta', { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 89 } }],
  ['message_stop', { type: 'message_stop' }],
];
const fixture = fixtureEvents.map(([event, data]) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`).join('');

/** Chunks without their `created` second, which depends on when the translator was made. */
function comparable(chunks: ChatChunk[]): unknown[] {
  return chunks.map(({ created: _created, ...rest }) => rest);
}

function feed(translator: StreamTranslator, pieces: Uint8Array[]): ChatChunk[] {
  const decoder = new TextDecoder();
  const chunks: ChatChunk[] = [];
  for (const piece of pieces) chunks.push(...translator.push(decoder.decode(piece, { stream: true })));
  chunks.push(...translator.push(decoder.decode()), ...translator.end());
  return chunks;
}

describe('Anthropic SSE → canonical chunks', () => {
  const translate = (text: string) => {
    const t = anthropicAdapter.chat.createStreamTranslator('public-claude');
    return { t, chunks: [...t.push(text), ...t.end()] };
  };

  it('emits role, text, tool-call, finish and usage chunks', () => {
    const { t, chunks } = translate(fixture);
    const base = { id: 'msg_014p7gG3wDgGV9EUtLvnow3U', object: 'chat.completion.chunk', model: 'public-claude' };
    expect(comparable(chunks)).toEqual([
      { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { content: 'Okay, café ☕ ' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { content: 'checking 🌦…' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: 'toolu_01T1x1fJ34qAmk2tNTrN7Up6', type: 'function', function: { name: 'get_weather', arguments: '' } }] }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"location": "San Fra' } }] }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: 'ncisco, CA"}' } }] }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] },
      {
        ...base,
        choices: [],
        usage: { prompt_tokens: 582, completion_tokens: 89, total_tokens: 671, prompt_tokens_details: { cached_tokens: 100 }, completion_tokens_details: { reasoning_tokens: 0 } },
      },
    ]);
    expect(t.usage()).toEqual({ inputTokens: 482, cachedInputTokens: 100, outputTokens: 89, reasoningTokens: 0, images: 0 });
    expect(t.outputText()).toBe('Okay, café ☕ checking 🌦…{"location": "San Francisco, CA"}');
    expect(t.error()).toBeNull();
  });

  it('gives the same chunks and usage whatever byte the stream is split at (LF and CRLF)', () => {
    for (const text of [fixture, fixture.replace(/\n/g, '\r\n')]) {
      const bytes = new TextEncoder().encode(text);
      const reference = translate(fixture);
      const expected = comparable(reference.chunks);
      for (let at = 0; at <= bytes.length; at++) {
        const t = anthropicAdapter.chat.createStreamTranslator('public-claude');
        const chunks = feed(t, [bytes.subarray(0, at), bytes.subarray(at)]);
        expect(comparable(chunks), `split at byte ${at}`).toEqual(expected);
        expect(t.usage()).toEqual(reference.t.usage());
        expect(t.outputText()).toBe(reference.t.outputText());
      }
      const oneByOne = anthropicAdapter.chat.createStreamTranslator('public-claude');
      const pieces = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
      expect(comparable(feed(oneByOne, pieces))).toEqual(expected);
    }
  });

  it('never adds message_delta totals to message_start counters', () => {
    const cumulative = fixture.replace('"usage":{"output_tokens":89}', '"usage":{"input_tokens":472,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":89}');
    expect(cumulative).not.toBe(fixture);
    expect(translate(cumulative).t.usage()).toEqual({ inputTokens: 482, cachedInputTokens: 100, outputTokens: 89, reasoningTokens: 0, images: 0 });
  });

  it('records in-stream error events, overloaded ones as retryable', () => {
    const cut = fixture.slice(0, fixture.indexOf('event: content_block_start'));
    const { t, chunks } = translate(`${cut}event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n`);
    expect(chunks).toHaveLength(1);
    expect(t.error()).toEqual({ status: 529, type: 'overloaded_error', message: 'Overloaded', retryable: true });
    expect(t.usage()?.inputTokens).toBe(482);
    const invalid = translate('event: error\ndata: {"type":"error","error":{"type":"invalid_request_error","message":"bad"}}\n\n');
    expect(invalid.t.error()).toEqual({ status: 400, type: 'invalid_request_error', message: 'bad', retryable: false });
    const garbled = translate('event: message_start\ndata: {"type":"message_st\n\n');
    expect(garbled.chunks).toEqual([]);
    expect(garbled.t.error()).toMatchObject({ status: 502, type: 'upstream_error', retryable: false });
  });

  it('treats an unterminated last event at end of stream as complete', () => {
    const t = anthropicAdapter.chat.createStreamTranslator('m');
    const trimmed = fixture.trimEnd();
    const chunks = [...t.push(trimmed)];
    expect(chunks.some((c) => c.usage)).toBe(false);
    const last = t.end();
    expect(last).toHaveLength(1);
    expect(last[0].usage?.completion_tokens).toBe(89);
  });
});

describe('against the mock Anthropic upstream', () => {
  let mock: AnthropicMock;
  let upstream: UpstreamTarget;
  beforeAll(async () => {
    mock = await startAnthropicMock({ apiKey: 'sk-ant-mock' });
    upstream = { baseUrl: mock.url, apiKey: 'sk-ant-mock', upstreamModel: 'claude-mock-1' };
  });
  afterAll(async () => mock?.close());
  beforeEach(() => mock.setBehavior({}));

  const send = (prepared: PreparedRequest, signal?: AbortSignal) =>
    fetch(prepared.url, { method: prepared.method, headers: prepared.headers, body: prepared.body, signal });

  async function nonStreamed(req: ChatRequest) {
    const res = await send(anthropicAdapter.chat.buildRequest(req, upstream, false));
    expect(res.status).toBe(200);
    return anthropicAdapter.chat.parseResponse(await res.json(), req.model);
  }

  async function streamed(req: ChatRequest) {
    const res = await send(anthropicAdapter.chat.buildRequest(req, upstream, true));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const t = anthropicAdapter.chat.createStreamTranslator(req.model);
    const pieces: Uint8Array[] = [];
    let failure: unknown = null;
    try {
      for await (const piece of res.body as AsyncIterable<Uint8Array>) pieces.push(piece);
    } catch (err) {
      failure = err;
    }
    const chunks = feed(t, pieces);
    return { t, chunks, failure };
  }

  /** The answer a client assembles from chunks. */
  function assemble(chunks: ChatChunk[]) {
    let content = '';
    let finish: string | null = null;
    const calls: Array<{ id?: string; name?: string; arguments: string }> = [];
    for (const c of chunks) {
      for (const choice of c.choices) {
        content += choice.delta.content ?? '';
        for (const call of choice.delta.tool_calls ?? []) {
          calls[call.index] ??= { arguments: '' };
          if (call.id) calls[call.index].id = call.id;
          if (call.function?.name) calls[call.index].name = call.function.name;
          calls[call.index].arguments += call.function?.arguments ?? '';
        }
        finish = choice.finish_reason ?? finish;
      }
    }
    return { content, finish, calls };
  }

  const textRequest: ChatRequest = {
    model: 'public-claude',
    messages: [{ role: 'system', content: 'You are a test double.' }, { role: 'user', content: 'Tell me something deterministic, please.' }],
  };

  it('sends the Messages wire format and records it', async () => {
    const { response } = await nonStreamed(textRequest);
    const recorded = mock.requests.at(-1)!;
    expect(recorded.path).toBe('/v1/messages');
    expect(recorded.headers['x-api-key']).toBe('sk-ant-mock');
    expect(recorded.headers['anthropic-version']).toBe('2023-06-01');
    expect(recorded.body).toEqual(body(anthropicAdapter.chat.buildRequest(textRequest, upstream, false)));
    expect(response.choices[0].message.content).toContain('Tell me something deterministic, please.');
    expect(response.choices[0].finish_reason).toBe('stop');
  });

  it('streamed and non-streamed answers give the same text and usage', async () => {
    const plain = await nonStreamed(textRequest);
    const stream = await streamed(textRequest);
    const text = plain.response.choices[0].message.content!;
    expect(stream.failure).toBeNull();
    expect(assemble(stream.chunks)).toEqual({ content: text, finish: 'stop', calls: [] });
    expect(stream.t.usage()).toEqual(plain.usage);
    expect(stream.t.outputText()).toBe(text);
    expect(plain.usage!.outputTokens).toBe(countTokens(text));
    expect(plain.usage!.inputTokens).toBeGreaterThan(10);
    expect(stream.chunks.at(-1)!.usage).toEqual(plain.response.usage);
  });

  it('streamed and non-streamed tool calls match, usage included', async () => {
    const req: ChatRequest = {
      model: 'public-claude',
      messages: [{ role: 'user', content: 'What is the weather in Lisbon today?' }],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] } } }],
    };
    const plain = await nonStreamed(req);
    const message = plain.response.choices[0].message;
    expect(plain.response.choices[0].finish_reason).toBe('tool_calls');
    expect(message.tool_calls).toHaveLength(1);
    expect(JSON.parse(message.tool_calls![0].function.arguments)).toEqual({ city: 'Lisbon', unit: 'celsius' });
    const stream = await streamed(req);
    const assembled = assemble(stream.chunks);
    expect(assembled.finish).toBe('tool_calls');
    expect(assembled.content).toBe(message.content);
    expect(assembled.calls).toEqual([{ id: message.tool_calls![0].id, name: 'get_weather', arguments: message.tool_calls![0].function.arguments }]);
    expect(stream.t.usage()).toEqual(plain.usage);
  });

  it('keeps cache counters exact when message_delta repeats whole-message totals', async () => {
    mock.setBehavior({ cacheReadTokens: 8, cacheCreationTokens: 5, cumulativeDeltaUsage: true });
    const plain = await nonStreamed(textRequest);
    const stream = await streamed(textRequest);
    expect(plain.usage!.cachedInputTokens).toBe(8);
    expect(stream.t.usage()).toEqual(plain.usage);
    mock.setBehavior({});
    const uncached = await nonStreamed(textRequest);
    expect(uncached.usage!.inputTokens).toBe(plain.usage!.inputTokens + 8);
  });

  it('sends nothing the Messages API would reject, whatever OpenAI-only fields the client set', async () => {
    const req: ChatRequest = {
      ...textRequest,
      stream_options: { include_usage: true },
      response_format: { type: 'json_object' },
      parallel_tool_calls: false,
      tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: {} } } }],
      user: 'u-1',
      temperature: 1.5,
      seed: 7,
      presence_penalty: 0.5,
      frequency_penalty: 0.5,
      logprobs: false,
      max_tokens: 64,
    };
    const plain = await nonStreamed(req);
    expect(plain.response.choices[0].finish_reason).toBe('stop');
    const stream = await streamed(req);
    expect(stream.t.usage()).toEqual(plain.usage);
    expect(mock.requests.at(-1)!.body).toMatchObject({ temperature: 1, metadata: { user_id: 'u-1' }, tool_choice: { type: 'auto', disable_parallel_tool_use: true } });
  });

  it('stops at stop sequences and max_tokens like Anthropic', async () => {
    const stop = await nonStreamed({ ...textRequest, stop: ['deterministic'] });
    expect(stop.response.choices[0].message.content).toBe('Hello from the mock Anthropic upstream! You said: "Tell me something ');
    expect(stop.response.choices[0].finish_reason).toBe('stop');
    const short = await nonStreamed({ ...textRequest, max_tokens: 5 });
    expect(short.usage!.outputTokens).toBe(5);
    expect(short.response.choices[0].finish_reason).toBe('length');
  });

  it('turns failures into retryable or final upstream errors', async () => {
    mock.setBehavior({ fail: { count: 2, status: 529 } });
    const prepared = anthropicAdapter.chat.buildRequest(textRequest, upstream, false);
    for (let i = 0; i < 2; i++) {
      const res = await send(prepared);
      expect(res.status).toBe(529);
      expect(anthropicAdapter.parseError(res.status, await res.text())).toMatchObject({ type: 'overloaded_error', retryable: true });
    }
    expect((await send(prepared)).status).toBe(200);

    mock.setBehavior({ fail: { count: 1, status: 429, retryAfterSeconds: 7 } });
    const limited = await send(prepared);
    expect(limited.headers.get('retry-after')).toBe('7');
    expect(anthropicAdapter.parseError(limited.status, await limited.text())).toMatchObject({ status: 429, type: 'rate_limit_error', retryable: true });

    mock.setBehavior({ fail: { count: 1, status: 400, message: 'messages: bad' } });
    const bad = await send(prepared);
    expect(anthropicAdapter.parseError(bad.status, await bad.text())).toEqual({ status: 400, type: 'invalid_request_error', message: 'messages: bad', retryable: false });

    const wrongKey = await send(anthropicAdapter.chat.buildRequest(textRequest, { ...upstream, apiKey: 'nope' }, false));
    expect(anthropicAdapter.parseError(wrongKey.status, await wrongKey.text())).toMatchObject({ status: 401, type: 'authentication_error', retryable: false });
  });

  it('surfaces an in-stream error event with the usage seen before it', async () => {
    mock.setBehavior({ streamError: { afterEvents: 4, type: 'overloaded_error', message: 'Overloaded' } });
    const stream = await streamed(textRequest);
    expect(stream.t.error()).toEqual({ status: 529, type: 'overloaded_error', message: 'Overloaded', retryable: true });
    expect(stream.chunks.some((c) => c.choices[0]?.finish_reason)).toBe(false);
    expect(stream.t.usage()!.inputTokens).toBeGreaterThan(10);
    expect(stream.t.outputText().length).toBeGreaterThan(0);
  });

  it('keeps what arrived when the upstream drops the connection mid-stream', async () => {
    const full = await streamed(textRequest);
    mock.setBehavior({ dropAfterEvents: 5 });
    const cut = await streamed(textRequest);
    expect(cut.failure).not.toBeNull();
    expect(cut.t.error()).toBeNull();
    expect(cut.chunks.some((c) => c.choices[0]?.finish_reason)).toBe(false);
    expect(full.t.outputText().startsWith(cut.t.outputText())).toBe(true);
    expect(cut.t.outputText().length).toBeLessThan(full.t.outputText().length);
    // Input is known from message_start; output is only Anthropic's placeholder until message_delta.
    expect(cut.t.usage()!.inputTokens).toBe(full.t.usage()!.inputTokens);
    expect(cut.t.usage()!.outputTokens).toBe(1);
  });

  it('delays headers and paces events as told', async () => {
    mock.setBehavior({ headersDelayMs: 300 });
    const prepared = anthropicAdapter.chat.buildRequest(textRequest, upstream, false);
    await expect(send(prepared, AbortSignal.timeout(50))).rejects.toThrow();
    const started = Date.now();
    expect((await send(prepared)).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);

    mock.setBehavior({ eventDelayMs: 20 });
    const slowStart = Date.now();
    const slow = await streamed(textRequest);
    expect(slow.failure).toBeNull();
    expect(Date.now() - slowStart).toBeGreaterThanOrEqual(20 * 8);
  });
});

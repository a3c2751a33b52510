import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startGeminiMock, type GeminiMock } from '../../../test/upstreams/gemini.ts';
import { send, sendStream, textOf, toolCallsOf } from '../../../test/upstreams/client.ts';
import { AppError } from '../../lib/errors.ts';
import { countTokens } from '../tokenizer.ts';
import type { ChatChunk, ChatRequest, UpstreamTarget } from '../types.ts';
import { geminiAdapter, parseGeminiError, toGeminiRequest, usageFromGemini } from './index.ts';

const target: UpstreamTarget = { baseUrl: 'https://generativelanguage.googleapis.com/v1beta', apiKey: 'AIza-test', upstreamModel: 'gemini-2.5-flash' };
const weatherTool = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'], additionalProperties: false },
  },
};
const pngData = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

function translate(pieces: string[]) {
  const translator = geminiAdapter.chat.createStreamTranslator('public-flash');
  const chunks: ChatChunk[] = [];
  for (const piece of pieces) chunks.push(...translator.push(piece));
  chunks.push(...translator.end());
  return { chunks, usage: translator.usage(), output: translator.outputText(), error: translator.error() };
}

function splitBytes(text: string, at: number): string[] {
  const bytes = new TextEncoder().encode(text);
  const decoder = new TextDecoder();
  return [decoder.decode(bytes.slice(0, at), { stream: true }), decoder.decode(bytes.slice(at), { stream: true }) + decoder.decode()];
}

describe('canonical request → Gemini generateContent', () => {
  const req: ChatRequest = {
    model: 'public-flash',
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'developer', content: [{ type: 'text', text: 'Use metric units.' }] },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'What is in these pictures, and the weather in Paris?' },
          { type: 'image_url', image_url: { url: `data:image/png;base64,${pngData}` } },
          { type: 'image_url', image_url: { url: 'https://example.com/cat.webp' } },
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
      { role: 'tool', tool_call_id: 'call_1', content: '{"celsius":18}' },
      { role: 'tool', tool_call_id: 'call_2', content: 'sunny, 21°C' },
      { role: 'user', content: 'Which is warmer?' },
    ],
    tools: [weatherTool],
    tool_choice: 'auto',
    max_tokens: 50,
    max_completion_tokens: 300,
    temperature: 0.3,
    top_p: 0.9,
    stop: 'END',
    response_format: { type: 'json_object' },
    user: 'end-user-42',
  };

  it('maps system, images, tools, tool calls, tool results and settings', () => {
    expect(toGeminiRequest(req)).toEqual({
      systemInstruction: { parts: [{ text: 'You are terse.' }, { text: 'Use metric units.' }] },
      contents: [
        {
          role: 'user',
          parts: [
            { text: 'What is in these pictures, and the weather in Paris?' },
            { inlineData: { mimeType: 'image/png', data: pngData } },
            { fileData: { mimeType: 'image/webp', fileUri: 'https://example.com/cat.webp' } },
          ],
        },
        {
          role: 'model',
          parts: [
            { text: 'Checking.' },
            { functionCall: { name: 'get_weather', args: { location: 'Paris' } } },
            { functionCall: { name: 'get_weather', args: { location: 'Lyon' } } },
          ],
        },
        {
          role: 'user',
          parts: [
            { functionResponse: { name: 'get_weather', response: { celsius: 18 } } },
            { functionResponse: { name: 'get_weather', response: { content: 'sunny, 21°C' } } },
            { text: 'Which is warmer?' },
          ],
        },
      ],
      tools: [{ functionDeclarations: [{ name: 'get_weather', description: 'Weather for a city', parametersJsonSchema: weatherTool.function.parameters }] }],
      toolConfig: { functionCallingConfig: { mode: 'AUTO' } },
      generationConfig: { maxOutputTokens: 300, temperature: 0.3, topP: 0.9, stopSequences: ['END'], responseMimeType: 'application/json' },
    });
  });

  it('maps tool_choice and JSON schema output', () => {
    const base: ChatRequest = { model: 'm', messages: [{ role: 'user', content: 'hi' }], tools: [weatherTool] };
    expect(toGeminiRequest({ ...base, tool_choice: 'none' }).toolConfig).toEqual({ functionCallingConfig: { mode: 'NONE' } });
    expect(toGeminiRequest({ ...base, tool_choice: 'required' }).toolConfig).toEqual({ functionCallingConfig: { mode: 'ANY' } });
    expect(toGeminiRequest({ ...base, tool_choice: { type: 'function', function: { name: 'get_weather' } } }).toolConfig).toEqual({
      functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['get_weather'] },
    });
    const schema = { type: 'object', properties: { answer: { type: 'string' } } };
    const json = toGeminiRequest({ ...base, tools: undefined, response_format: { type: 'json_schema', json_schema: { name: 'a', schema } } });
    expect(json.generationConfig).toEqual({ responseMimeType: 'application/json', responseJsonSchema: schema });
    expect(json).not.toHaveProperty('tools');
    expect(toGeminiRequest({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })).toEqual({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] });
  });

  it('refuses what Gemini cannot take', () => {
    const orphan: ChatRequest = { model: 'm', messages: [{ role: 'tool', tool_call_id: 'nowhere', content: 'x' }] };
    expect(() => toGeminiRequest(orphan)).toThrow(AppError);
    const audioFile: ChatRequest = { model: 'm', messages: [{ role: 'user', content: [{ type: 'mystery_part' }] }] };
    expect(() => toGeminiRequest(audioFile)).toThrow(/mystery_part/);
  });

  it('builds generateContent and streamGenerateContent requests with the API key header', () => {
    const plain = geminiAdapter.chat.buildRequest(req, target, false);
    expect(plain.url).toBe('https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent');
    expect(plain.headers['x-goog-api-key']).toBe('AIza-test');
    expect(plain.headers).not.toHaveProperty('authorization');
    const streamed = geminiAdapter.chat.buildRequest(req, { ...target, upstreamModel: 'models/gemini-2.5-pro' }, true);
    expect(streamed.url).toBe('https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse');
    expect(JSON.parse(streamed.body)).toEqual(JSON.parse(plain.body));
  });
});

describe('Gemini responses → canonical', () => {
  it('maps text, thoughts, function calls, finish reasons and usage', () => {
    const body = {
      candidates: [
        {
          content: {
            role: 'model',
            parts: [
              { text: 'Let me think about the user.', thought: true },
              { text: 'Checking both ' },
              { text: 'cities.' },
              { functionCall: { name: 'get_weather', args: { location: 'Paris' } } },
              { functionCall: { name: 'get_weather', args: { location: 'Lyon' } } },
            ],
          },
          finishReason: 'STOP',
          index: 0,
        },
      ],
      usageMetadata: { promptTokenCount: 1000, cachedContentTokenCount: 600, candidatesTokenCount: 40, thoughtsTokenCount: 120, toolUsePromptTokenCount: 10, totalTokenCount: 1170 },
      modelVersion: 'gemini-2.5-flash',
      responseId: 'abc123',
    };
    const { response, usage } = geminiAdapter.chat.parseResponse(body, 'public-flash');
    expect(response.id).toBe('chatcmpl-abc123');
    expect(response.model).toBe('public-flash');
    expect(response.object).toBe('chat.completion');
    const choice = response.choices[0];
    expect(choice.message.content).toBe('Checking both cities.');
    expect(choice.finish_reason).toBe('tool_calls');
    const calls = choice.message.tool_calls!;
    expect(calls.map((c) => c.function)).toEqual([
      { name: 'get_weather', arguments: '{"location":"Paris"}' },
      { name: 'get_weather', arguments: '{"location":"Lyon"}' },
    ]);
    expect(calls[0].id).toMatch(/^call_/);
    expect(calls[0].id).not.toBe(calls[1].id);
    expect(usage).toEqual({ inputTokens: 410, cachedInputTokens: 600, outputTokens: 160, reasoningTokens: 120, images: 0 });
    expect(response.usage).toEqual({
      prompt_tokens: 1010,
      completion_tokens: 160,
      total_tokens: 1170,
      prompt_tokens_details: { cached_tokens: 600 },
      completion_tokens_details: { reasoning_tokens: 120 },
    });
  });

  it('maps finish reasons and blocked prompts', () => {
    const finish = (finishReason: string) =>
      geminiAdapter.chat.parseResponse({ candidates: [{ content: { parts: [{ text: 'x' }] }, finishReason }] }, 'm').response.choices[0].finish_reason;
    expect(finish('STOP')).toBe('stop');
    expect(finish('MAX_TOKENS')).toBe('length');
    expect(finish('SAFETY')).toBe('content_filter');
    expect(finish('RECITATION')).toBe('content_filter');
    expect(finish('OTHER')).toBe('stop');
    const blocked = geminiAdapter.chat.parseResponse({ promptFeedback: { blockReason: 'SAFETY' }, usageMetadata: { promptTokenCount: 12, totalTokenCount: 12 } }, 'm');
    expect(blocked.response.choices).toEqual([{ index: 0, message: { role: 'assistant', content: null }, finish_reason: 'content_filter' }]);
    expect(blocked.usage).toEqual({ inputTokens: 12, cachedInputTokens: 0, outputTokens: 0, reasoningTokens: 0, images: 0 });
    expect(() => geminiAdapter.chat.parseResponse([], 'm')).toThrow(AppError);
    expect(usageFromGemini(undefined)).toBeNull();
  });
});

describe('Gemini stream translation', () => {
  const event = (body: unknown) => `data: ${JSON.stringify(body)}\r\n\r\n`;
  const upstreamStream = [
    event({ candidates: [{ content: { role: 'model', parts: [{ text: 'Pondering…', thought: true }] }, index: 0 }], usageMetadata: { promptTokenCount: 30, totalTokenCount: 30 }, responseId: 'r1' }),
    event({ candidates: [{ content: { role: 'model', parts: [{ text: 'Bonjour ' }] }, index: 0 }], usageMetadata: { promptTokenCount: 30, candidatesTokenCount: 2, thoughtsTokenCount: 9, totalTokenCount: 41 }, responseId: 'r1' }),
    event({ candidates: [{ content: { role: 'model', parts: [{ text: 'le monde 🌍' }, { functionCall: { name: 'get_weather', args: { location: 'Paris' } } }] }, index: 0 }], responseId: 'r1' }),
    event({
      candidates: [{ content: { role: 'model', parts: [{ text: '' }] }, finishReason: 'STOP', index: 0 }],
      usageMetadata: { promptTokenCount: 30, candidatesTokenCount: 11, thoughtsTokenCount: 9, totalTokenCount: 50 },
      responseId: 'r1',
    }),
  ].join('');
  const whole = translate([upstreamStream]);

  it('emits a role first, text and complete tool calls, a finish chunk and a final usage chunk', () => {
    expect(whole.error).toBeNull();
    const deltas = whole.chunks.map((c) => c.choices[0]?.delta);
    expect(deltas[0]).toEqual({ role: 'assistant', content: 'Bonjour ' });
    expect(deltas.slice(1).some((d) => d?.role)).toBe(false);
    expect(textOf(whole.chunks)).toBe('Bonjour le monde 🌍');
    const calls = toolCallsOf(whole.chunks);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ name: 'get_weather', arguments: '{"location":"Paris"}' });
    expect(whole.chunks.filter((c) => c.choices[0]?.finish_reason).map((c) => c.choices[0].finish_reason)).toEqual(['tool_calls']);
    const last = whole.chunks[whole.chunks.length - 1];
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({ prompt_tokens: 30, completion_tokens: 20, total_tokens: 50, prompt_tokens_details: { cached_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 9 } });
    expect(whole.chunks.every((c) => c.id === 'chatcmpl-r1' && c.model === 'public-flash' && c.object === 'chat.completion.chunk')).toBe(true);
    expect(whole.usage).toEqual({ inputTokens: 30, cachedInputTokens: 0, outputTokens: 20, reasoningTokens: 9, images: 0 });
    expect(whole.output).toBe('Pondering…Bonjour le monde 🌍{"location":"Paris"}');
  });

  it('gives the same chunks and usage when split at every byte position', () => {
    const normalize = (chunks: ChatChunk[]) =>
      chunks.map((c) => ({ ...c, created: 0, choices: c.choices.map((ch) => ({ ...ch, delta: { ...ch.delta, tool_calls: ch.delta.tool_calls?.map((t) => ({ ...t, id: 'x' })) } })) }));
    const bytes = new TextEncoder().encode(upstreamStream).length;
    for (let at = 0; at <= bytes; at++) {
      const split = translate(splitBytes(upstreamStream, at));
      expect(normalize(split.chunks)).toEqual(normalize(whole.chunks));
      expect(split.usage).toEqual(whole.usage);
      expect(split.output).toBe(whole.output);
    }
  });

  it('captures an error event inside the stream', () => {
    const result = translate([
      event({ candidates: [{ content: { parts: [{ text: 'Hi' }] }, index: 0 }] }),
      event({ error: { code: 503, message: 'The model is overloaded.', status: 'UNAVAILABLE' } }),
    ]);
    expect(textOf(result.chunks)).toBe('Hi');
    expect(result.error).toEqual({ status: 503, type: 'UNAVAILABLE', message: 'The model is overloaded.', retryable: true });
  });

  it('ends a blocked prompt with content_filter', () => {
    const result = translate([event({ promptFeedback: { blockReason: 'PROHIBITED_CONTENT' }, usageMetadata: { promptTokenCount: 8, totalTokenCount: 8 } })]);
    expect(result.chunks[0].choices[0]).toEqual({ index: 0, delta: { role: 'assistant' }, finish_reason: 'content_filter' });
    expect(result.usage?.inputTokens).toBe(8);
  });
});

describe('Gemini errors', () => {
  it('reads the Google error object', () => {
    const body = JSON.stringify({ error: { code: 429, message: 'Resource has been exhausted (e.g. check quota).', status: 'RESOURCE_EXHAUSTED' } });
    expect(parseGeminiError(429, body)).toEqual({ status: 429, type: 'RESOURCE_EXHAUSTED', message: 'Resource has been exhausted (e.g. check quota).', retryable: true });
    const invalid = parseGeminiError(400, JSON.stringify([{ error: { code: 400, message: 'API key not valid.', status: 'INVALID_ARGUMENT' } }]));
    expect(invalid).toEqual({ status: 400, type: 'INVALID_ARGUMENT', message: 'API key not valid.', retryable: false });
    expect(parseGeminiError(502, 'Bad Gateway')).toEqual({ status: 502, type: 'api_error', message: 'Bad Gateway', retryable: true });
  });
});

describe('Gemini adapter against the mock upstream', () => {
  let mock: GeminiMock;
  let mockTarget: UpstreamTarget;

  beforeAll(async () => {
    mock = await startGeminiMock({ apiKey: 'AIza-mock' });
    mockTarget = { baseUrl: mock.url, apiKey: 'AIza-mock', upstreamModel: 'gemini-2.5-flash' };
  });
  afterAll(() => mock.close());
  beforeEach(() => mock.setBehavior({}));

  async function both(req: ChatRequest) {
    const plain = await send(geminiAdapter.chat.buildRequest(req, mockTarget, false));
    expect(plain.status).toBe(200);
    const parsed = geminiAdapter.chat.parseResponse(JSON.parse(plain.text), req.model);
    const translator = geminiAdapter.chat.createStreamTranslator(req.model);
    const streamed = await sendStream(geminiAdapter.chat.buildRequest(req, mockTarget, true), translator);
    expect(streamed.status).toBe(200);
    return { parsed, streamed, translator };
  }

  it('bills a stream exactly like the same call not streamed', async () => {
    mock.setBehavior({ thoughtsTokens: 42, cachedTokens: 5 });
    const req: ChatRequest = { model: 'public-flash', messages: [{ role: 'system', content: 'Be kind.' }, { role: 'user', content: 'Describe the sea at night in detail.' }] };
    const { parsed, streamed, translator } = await both(req);
    const text = parsed.response.choices[0].message.content!;
    expect(text).toMatch(/^Mock Gemini reply to: "Describe the sea at night in detail\."\. /);
    expect(textOf(streamed.chunks)).toBe(text);
    expect(streamed.chunks.length).toBeGreaterThan(3);
    expect(translator.usage()).toEqual(parsed.usage);
    expect(parsed.usage).toMatchObject({ cachedInputTokens: 5, outputTokens: countTokens(text) + 42, reasoningTokens: 42 });
    const [plainRequest, streamRequest] = mock.requests.slice(-2);
    expect(plainRequest.path).toBe('/v1beta/models/gemini-2.5-flash:generateContent');
    expect(streamRequest.path).toBe('/v1beta/models/gemini-2.5-flash:streamGenerateContent');
    expect(streamRequest.query).toEqual({ alt: 'sse' });
    expect(streamRequest.headers['x-goog-api-key']).toBe('AIza-mock');
    expect(plainRequest.body).toMatchObject({ systemInstruction: { parts: [{ text: 'Be kind.' }] } });
  });

  it('bills tool calls and truncated answers the same streamed or not', async () => {
    const toolReq: ChatRequest = { model: 'public-flash', messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [weatherTool] };
    const tool = await both(toolReq);
    expect(tool.parsed.response.choices[0].finish_reason).toBe('tool_calls');
    expect(tool.parsed.response.choices[0].message.tool_calls?.[0].function).toEqual({ name: 'get_weather', arguments: '{"location":"Paris"}' });
    expect(toolCallsOf(tool.streamed.chunks)).toMatchObject([{ name: 'get_weather', arguments: '{"location":"Paris"}' }]);
    expect(tool.translator.usage()).toEqual(tool.parsed.usage);
    expect(tool.translator.outputText()).toBe('{"location":"Paris"}');

    const shortReq: ChatRequest = { model: 'public-flash', messages: [{ role: 'user', content: 'Write an essay.' }], max_tokens: 5 };
    const short = await both(shortReq);
    expect(short.parsed.response.choices[0].finish_reason).toBe('length');
    expect(short.parsed.usage?.outputTokens).toBe(countTokens(short.parsed.response.choices[0].message.content!));
    expect(short.translator.usage()).toEqual(short.parsed.usage);
  });

  it('continues a tool conversation with the function response', async () => {
    const plain = await send(
      geminiAdapter.chat.buildRequest(
        {
          model: 'public-flash',
          messages: [
            { role: 'user', content: 'What is the weather in Paris?' },
            { role: 'assistant', content: null, tool_calls: [{ id: 'call_9', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } }] },
            { role: 'tool', tool_call_id: 'call_9', content: '{"celsius":18}' },
          ],
          tools: [weatherTool],
        },
        mockTarget,
        false,
      ),
    );
    const { response } = geminiAdapter.chat.parseResponse(JSON.parse(plain.text), 'public-flash');
    expect(response.choices[0].finish_reason).toBe('stop');
    expect(response.choices[0].message.content).toContain('celsius');
  });

  it('leaves usage unknown when none is reported, and reports errors', async () => {
    mock.setBehavior({ omitUsage: true });
    const { parsed, translator, streamed } = await both({ model: 'public-flash', messages: [{ role: 'user', content: 'hello' }] });
    expect(parsed.usage).toBeNull();
    expect(translator.usage()).toBeNull();
    expect(streamed.chunks.some((c) => c.usage)).toBe(false);
    expect(translator.outputText()).toBe(parsed.response.choices[0].message.content);

    mock.setBehavior({ fail: { count: 1, status: 429 } });
    const limited = await send(geminiAdapter.chat.buildRequest({ model: 'm', messages: [{ role: 'user', content: 'x' }] }, mockTarget, false));
    expect(geminiAdapter.parseError(limited.status, limited.text)).toMatchObject({ status: 429, type: 'RESOURCE_EXHAUSTED', retryable: true });
    const wrongKey = await send(geminiAdapter.chat.buildRequest({ model: 'm', messages: [{ role: 'user', content: 'x' }] }, { ...mockTarget, apiKey: 'nope' }, false));
    expect(geminiAdapter.parseError(wrongKey.status, wrongKey.text)).toMatchObject({ status: 400, type: 'INVALID_ARGUMENT', retryable: false });

    mock.setBehavior({ streamError: { afterEvents: 1 } });
    const broken = geminiAdapter.chat.createStreamTranslator('m');
    await sendStream(geminiAdapter.chat.buildRequest({ model: 'm', messages: [{ role: 'user', content: 'a long story please' }] }, mockTarget, true), broken);
    expect(broken.error()).toMatchObject({ status: 503, type: 'UNAVAILABLE', retryable: true });
  });

  it('embeds one text or a batch, leaving usage to the gateway', async () => {
    const embedTarget = { ...mockTarget, upstreamModel: 'text-embedding-004' };
    const single = geminiAdapter.embeddings!.buildRequest({ model: 'public-embed', input: 'hello', dimensions: 4 }, embedTarget);
    expect(single.url).toBe(`${mock.url}/models/text-embedding-004:embedContent`);
    const one = geminiAdapter.embeddings!.parseResponse(JSON.parse((await send(single)).text), 'public-embed');
    expect(one.response.data).toHaveLength(1);
    expect(one.response.data[0].embedding).toHaveLength(4);
    expect(one.usage).toBeNull();
    const batch = geminiAdapter.embeddings!.buildRequest({ model: 'public-embed', input: ['a', 'b', 'c'] }, embedTarget);
    expect(batch.url).toBe(`${mock.url}/models/text-embedding-004:batchEmbedContents`);
    const many = geminiAdapter.embeddings!.parseResponse(JSON.parse((await send(batch)).text), 'public-embed');
    expect(many.response.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(many.response.model).toBe('public-embed');
    expect(() => geminiAdapter.embeddings!.buildRequest({ model: 'm', input: [1, 2, 3] }, embedTarget)).toThrow(AppError);
  });
});

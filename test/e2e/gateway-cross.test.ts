// Every front door against every upstream adapter: the OpenAI SDK and the Anthropic SDK, each
// through OpenAI, Azure OpenAI, Anthropic, Gemini and the in-process sandbox. For each pair, a
// streamed call costs exactly what the same call not streamed costs, says the same thing (text and
// tool calls), and leaves the balance exactly where the charges say.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { startOpenAIMock, type OpenAIMock } from '../upstreams/openai.ts';
import { startAnthropicMock, type AnthropicMock } from '../upstreams/anthropic.ts';
import { startGeminiMock, type GeminiMock } from '../upstreams/gemini.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import * as g from '../helpers/gateway.ts';

const rates = g.fractionalRates;
const keys = { openai: 'sk-openai-mock-0123456789abcdef', anthropic: 'sk-ant-mock-0123456789abcdef', gemini: 'AIza-gemini-mock-0123456789' };
const adapters = ['openai', 'azure-openai', 'anthropic', 'gemini', 'sandbox'] as const;
type AdapterName = (typeof adapters)[number];
const doors = ['openai', 'anthropic'] as const;
type Door = (typeof doors)[number];

/** What each upstream's answers start with, so a test knows which one answered. */
const signature: Record<AdapterName, string> = {
  openai: 'Mock OpenAI reply to',
  'azure-openai': 'Mock OpenAI reply to',
  anthropic: 'Hello from the mock Anthropic upstream',
  gemini: 'Mock Gemini reply to',
  sandbox: 'Sandbox reply to',
};

interface Answer {
  text: string;
  toolCalls: Array<{ name: string; args: unknown }>;
  finish: string | null;
  usage: g.TokenUsage;
  requestId: string;
  /** The x-tollgate-credits-charged header (non-streamed answers only). */
  charged: bigint | null;
}

interface Ask {
  content: string;
  stream: boolean;
  tools?: boolean;
}

const toolSchema = { type: 'object' as const, properties: { location: { type: 'string' } }, required: ['location'] };

async function viaOpenAI(client: OpenAI, model: string, ask: Ask): Promise<Answer> {
  const base = {
    model,
    max_tokens: 300,
    messages: [{ role: 'user' as const, content: ask.content }],
    ...(ask.tools ? { tools: [{ type: 'function' as const, function: { name: 'get_weather', description: 'Weather for a city', parameters: toolSchema } }] } : {}),
  };
  if (!ask.stream) {
    const { data, response } = await client.chat.completions.create(base).withResponse();
    const m = data.choices[0].message;
    const u = data.usage!;
    const cached = u.prompt_tokens_details?.cached_tokens ?? 0;
    return {
      text: m.content ?? '',
      toolCalls: (m.tool_calls ?? []).map((c) => {
        const f = (c as OpenAI.ChatCompletionMessageFunctionToolCall).function;
        return { name: f.name, args: JSON.parse(f.arguments) };
      }),
      finish: data.choices[0].finish_reason,
      usage: { input: u.prompt_tokens - cached, cached, output: u.completion_tokens },
      requestId: response.headers.get('x-request-id')!,
      charged: g.micros(response.headers.get('x-tollgate-credits-charged')!),
    };
  }
  const { data, response } = await client.chat.completions.create({ ...base, stream: true, stream_options: { include_usage: true } }).withResponse();
  let text = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | null = null;
  const calls: Array<{ name: string; args: string }> = [];
  for await (const chunk of data) {
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    text += choice.delta.content ?? '';
    if (choice.finish_reason) finish = choice.finish_reason;
    for (const d of choice.delta.tool_calls ?? []) {
      const call = (calls[d.index] ??= { name: '', args: '' });
      call.name += d.function?.name ?? '';
      call.args += d.function?.arguments ?? '';
    }
  }
  expect(usage, 'the usage chunk asked for').not.toBeNull();
  const cached = usage!.prompt_tokens_details?.cached_tokens ?? 0;
  return {
    text,
    toolCalls: calls.map((c) => ({ name: c.name, args: JSON.parse(c.args) })),
    finish,
    usage: { input: usage!.prompt_tokens - cached, cached, output: usage!.completion_tokens },
    requestId: response.headers.get('x-request-id')!,
    charged: null,
  };
}

async function viaAnthropic(client: Anthropic, model: string, ask: Ask): Promise<Answer> {
  const params: Anthropic.MessageCreateParamsNonStreaming = {
    model,
    max_tokens: 300,
    messages: [{ role: 'user', content: ask.content }],
    ...(ask.tools ? { tools: [{ name: 'get_weather', description: 'Weather for a city', input_schema: toolSchema }] } : {}),
  };
  let message: Anthropic.Message;
  let headers: Headers;
  if (ask.stream) {
    const stream = client.messages.stream(params);
    headers = (await stream.withResponse()).response.headers;
    message = await stream.finalMessage();
  } else {
    const r = await client.messages.create(params).withResponse();
    message = r.data;
    headers = r.response.headers;
  }
  const u = message.usage;
  const charged = headers.get('x-tollgate-credits-charged');
  return {
    text: message.content.map((b) => (b.type === 'text' ? b.text : '')).join(''),
    toolCalls: message.content.flatMap((b) => (b.type === 'tool_use' ? [{ name: b.name, args: b.input }] : [])),
    finish: message.stop_reason,
    usage: { input: u.input_tokens + (u.cache_creation_input_tokens ?? 0), cached: u.cache_read_input_tokens ?? 0, output: u.output_tokens },
    requestId: headers.get('x-request-id')!,
    charged: charged === null ? null : g.micros(charged),
  };
}

describe.each(engines)('every front door × every adapter on %s', (engine) => {
  let s: TestServer;
  let openaiMock: OpenAIMock;
  let anthropicMock: AnthropicMock;
  let geminiMock: GeminiMock;
  const models = {} as Record<AdapterName, string>;
  const upstreamModels: Record<AdapterName, string> = {
    openai: 'gpt-4o-mini',
    'azure-openai': 'gpt4o-deployment',
    anthropic: 'claude-mock-1',
    gemini: 'gemini-2.5-flash',
    sandbox: 'sandbox-1',
  };

  beforeAll(async () => {
    [openaiMock, anthropicMock, geminiMock] = await Promise.all([
      startOpenAIMock({ apiKey: keys.openai }),
      startAnthropicMock({ apiKey: keys.anthropic }),
      startGeminiMock({ apiKey: keys.gemini }),
    ]);
    s = await startTestServer(engine);
    const providers: Record<AdapterName, g.ProviderSpec> = {
      openai: { type: 'openai', baseUrl: openaiMock.url, apiKey: keys.openai },
      'azure-openai': { type: 'azure-openai', baseUrl: openaiMock.origin, apiKey: keys.openai },
      anthropic: { type: 'anthropic', baseUrl: anthropicMock.url, apiKey: keys.anthropic },
      gemini: { type: 'gemini', baseUrl: geminiMock.url, apiKey: keys.gemini },
      sandbox: { type: 'sandbox' },
    };
    for (const adapter of adapters) {
      const provider = await g.addProvider(s, providers[adapter]);
      models[adapter] = (await g.addModel(s, { name: `via-${adapter}`, providerId: provider.id, upstreamModel: upstreamModels[adapter] })).name;
    }
  });
  afterAll(async () => {
    await s?.close();
    await Promise.all([openaiMock?.close(), anthropicMock?.close(), geminiMock?.close()]);
  });

  const tenant = async (credits = '10') => {
    const workspaceId = await g.addWorkspace(s, credits);
    const { key } = await g.addKey(s, workspaceId);
    return {
      workspaceId,
      granted: g.micros(credits),
      call: (door: Door, model: string, ask: Ask) =>
        door === 'openai'
          ? viaOpenAI(new OpenAI({ baseURL: `${s.url}/v1`, apiKey: key, maxRetries: 0 }), model, ask)
          : viaAnthropic(new Anthropic({ baseURL: s.url, apiKey: key, maxRetries: 0 }), model, ask),
    };
  };

  /** The upstream requests a call made (the sandbox is in-process and records none). */
  const recorded = (adapter: AdapterName) =>
    adapter === 'anthropic' ? anthropicMock.requests : adapter === 'gemini' ? geminiMock.requests : adapter === 'sandbox' ? null : openaiMock.requests;

  for (const adapter of adapters) {
    for (const door of doors) {
      it(`${door} SDK → ${adapter}: streamed and non-streamed text cost exactly the same`, async () => {
        const t = await tenant('10');
        const ask = { content: `Please greet the ${door} door through ${adapter}.` };
        const log = recorded(adapter);
        const before = log?.length ?? 0;
        const plain = await t.call(door, models[adapter], { ...ask, stream: false });
        const streamed = await t.call(door, models[adapter], { ...ask, stream: true });
        if (log) {
          const sent = log.slice(before);
          expect(sent).toHaveLength(2);
          if (adapter === 'azure-openai') {
            for (const r of sent) {
              expect(r.path).toBe(`/openai/deployments/${upstreamModels[adapter]}/chat/completions`);
              expect((r as { query: Record<string, string> }).query['api-version']).toMatch(/^\d{4}-\d{2}-\d{2}/);
              expect(r.headers['api-key']).toBe(keys.openai);
            }
            expect(sent[1].body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
          }
          if (adapter === 'openai') expect(sent[1].body).toMatchObject({ model: upstreamModels.openai, stream: true, stream_options: { include_usage: true } });
          if (adapter === 'gemini') {
            expect(sent[0].path).toBe(`/v1beta/models/${upstreamModels.gemini}:generateContent`);
            expect(sent[1].path).toBe(`/v1beta/models/${upstreamModels.gemini}:streamGenerateContent`);
            expect(sent[1].headers['x-goog-api-key']).toBe(keys.gemini);
          }
          if (adapter === 'anthropic') expect(sent.map((r) => (r.body as { stream?: boolean }).stream === true)).toEqual([false, true]);
        }

        expect(plain.text).toContain(signature[adapter]);
        expect(streamed.text).toBe(plain.text);
        expect(streamed.finish).toBe(plain.finish);
        expect(streamed.usage).toEqual(plain.usage);
        expect(plain.usage.input).toBeGreaterThan(0);
        expect(plain.usage.output).toBeGreaterThan(0);

        const charge = g.expectedCharge(rates, plain.usage);
        expect(plain.charged).toBe(charge);
        const plainRecord = await g.settledUsage(s, plain.requestId);
        const streamedRecord = await g.settledUsage(s, streamed.requestId);
        expect(streamedRecord.charge_micros).toBe(charge);
        expect(plainRecord.charge_micros).toBe(charge);
        for (const [record, stream] of [[plainRecord, 0], [streamedRecord, 1]] as const) {
          expect(record).toMatchObject({ endpoint: door === 'openai' ? 'chat.completions' : 'messages', model: models[adapter], status: 'ok', estimated: 0, stream });
        }
        expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - 2n * charge, pending: 0n, consumed: 2n * charge });
      });

      it(`${door} SDK → ${adapter}: tool calls, streamed and not, match and cost the same`, async () => {
        const t = await tenant('10');
        const ask = { content: 'What is the weather in Paris right now?', tools: true };
        const plain = await t.call(door, models[adapter], { ...ask, stream: false });
        const streamed = await t.call(door, models[adapter], { ...ask, stream: true });
        expect(plain.toolCalls).toEqual([{ name: 'get_weather', args: { location: 'Paris' } }]);
        expect(streamed.toolCalls).toEqual(plain.toolCalls);
        expect(plain.finish).toBe(door === 'openai' ? 'tool_calls' : 'tool_use');
        expect(streamed.finish).toBe(plain.finish);
        expect(streamed.text).toBe(plain.text);
        expect(streamed.usage).toEqual(plain.usage);
        const charge = g.expectedCharge(rates, plain.usage);
        expect(plain.charged).toBe(charge);
        expect((await g.settledUsage(s, streamed.requestId)).charge_micros).toBe(charge);
        expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - 2n * charge, pending: 0n });
      });
      if (adapter === 'sandbox') continue;
      it(`${door} SDK → ${adapter}: cached and reasoning tokens are priced the same streamed and not`, async () => {
        const t = await tenant('10');
        // Each upstream's own way of reporting cache reads (and writes) and thinking.
        const cacheRead = 6;
        const restore = () => (adapter === 'anthropic' ? anthropicMock.setBehavior({}) : adapter === 'gemini' ? geminiMock.setBehavior({}) : openaiMock.setBehavior({}));
        if (adapter === 'anthropic') anthropicMock.setBehavior({ cacheReadTokens: cacheRead, cacheCreationTokens: 4, cumulativeDeltaUsage: true });
        else if (adapter === 'gemini') geminiMock.setBehavior({ cachedTokens: cacheRead, thoughtsTokens: 17 });
        else openaiMock.setBehavior({ cachedTokens: cacheRead, reasoningTokens: 17 });
        try {
          const ask = { content: `Cache me through ${adapter}, please.` };
          const plain = await t.call(door, models[adapter], { ...ask, stream: false });
          const streamed = await t.call(door, models[adapter], { ...ask, stream: true });
          expect(plain.usage.cached).toBe(cacheRead);
          expect(streamed.usage).toEqual(plain.usage);
          expect(streamed.text).toBe(plain.text);
          const charge = g.expectedCharge(rates, plain.usage);
          expect(plain.charged).toBe(charge);
          const [plainRecord, streamedRecord] = [await g.settledUsage(s, plain.requestId), await g.settledUsage(s, streamed.requestId)];
          expect(streamedRecord.charge_micros).toBe(charge);
          for (const key of ['input_tokens', 'cached_input_tokens', 'output_tokens', 'reasoning_tokens'] as const) expect(streamedRecord[key], key).toBe(plainRecord[key]);
          expect(plainRecord.cached_input_tokens).toBe(cacheRead);
          if (adapter !== 'anthropic') expect(plainRecord.reasoning_tokens).toBe(17);
          expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - 2n * charge, pending: 0n });
        } finally {
          restore();
        }
      });
    }
  }

  it('keeps the ledger consistent after every pair', async () => {
    expect(await verifyLedger(await g.settledDb(s))).toEqual([]);
  });
});

// The OpenAI front door against the OpenAI upstream, driven by the official `openai` SDK: every
// charge is computed here from the usage the mock reported and the model's rates (fractional
// micro-credits per token, so the once-per-call rounding shows), and every balance is exact.
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { openaiMockName, startOpenAIMock, type OpenAIMock, type RecordedRequest } from '../upstreams/openai.ts';
import { answerChat, embeddingVector, openaiUsageOf } from '../../src/providers/sandbox/engine.ts';
import { countTokens } from '../../src/providers/tokenizer.ts';
import type { ChatRequest } from '../../src/providers/types.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import * as g from '../helpers/gateway.ts';

const upstreamKey = 'sk-mock-upstream-SECRET-0123456789abcdef';
const upstreamModel = 'gpt-4o-mini';
const rates = g.fractionalRates;
/** A phrase that must never be stored or logged: it is in every prompt and, quoted, in every reply. */
const marker = 'zebra-quartz-marmalade';
const prompt: OpenAI.ChatCompletionMessageParam[] = [
  { role: 'system', content: 'You answer in one short sentence.' },
  { role: 'user', content: `Tell me about ${marker} please` },
];
const weatherTool: OpenAI.ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city',
    parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
  },
};

/** What the mock reported for a chat request it received: its own engine, run on the recorded body. */
function mockUsage(recorded: RecordedRequest, extra: { cached?: number; reasoning?: number } = {}): g.TokenUsage {
  const u = openaiUsageOf(answerChat(recorded.body as ChatRequest, { name: openaiMockName }));
  const cached = Math.min(extra.cached ?? 0, u.prompt_tokens);
  const reasoning = extra.reasoning ?? 0;
  return { input: u.prompt_tokens - cached, cached, output: u.completion_tokens + reasoning, reasoning };
}

function mockReply(recorded: RecordedRequest): string {
  return answerChat(recorded.body as ChatRequest, { name: openaiMockName }).content ?? '';
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

const textOf = (chunks: OpenAI.ChatCompletionChunk[]) => chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');

describe.each(engines)('OpenAI SDK → gateway → OpenAI upstream on %s', (engine) => {
  let s: TestServer;
  let mock: OpenAIMock;
  let setup: g.GatewaySetup;
  const logs: string[] = [];
  const customerKeys: string[] = [];

  beforeAll(async () => {
    mock = await startOpenAIMock({ apiKey: upstreamKey });
    s = await startTestServer(engine, { LOG_LEVEL: 'debug' }, { logDestination: { write: (line) => void logs.push(line) } });
    setup = await g.setupGateway(s, { provider: { type: 'openai', baseUrl: mock.url, apiKey: upstreamKey }, upstreamModel });
    customerKeys.push(setup.apiKey);
  });
  afterAll(async () => {
    await s?.close();
    await mock?.close();
  });

  const clientFor = (apiKey: string) => new OpenAI({ baseURL: `${s.url}/v1`, apiKey, maxRetries: 0 });

  /** A workspace of its own with `credits`, and a key for it (on the suite's model unless told). */
  const tenant = async (credits = '10', key: g.KeySpec = {}) => {
    const workspaceId = await g.addWorkspace(s, credits);
    const k = await g.addKey(s, workspaceId, key);
    customerKeys.push(k.key);
    return { workspaceId, keyId: k.id, apiKey: k.key, client: clientFor(k.key), granted: g.micros(credits) };
  };

  /** The mock requests made while `fn` ran. */
  const upstreamDuring = async <T>(fn: () => Promise<T>): Promise<{ result: T; upstream: RecordedRequest[] }> => {
    const before = mock.requests.length;
    const result = await fn();
    return { result, upstream: mock.requests.slice(before) };
  };

  /** A provider and model of their own on the same mock, so failures injected here touch no other test's circuit. */
  const isolatedRoute = async () => {
    const provider = await g.addProvider(s, { type: 'openai', baseUrl: mock.url, apiKey: upstreamKey });
    const model = await g.addModel(s, { providerId: provider.id, upstreamModel });
    return { providerId: provider.id, model: model.name };
  };

  const charged = (headers: Headers) => {
    const value = headers.get('x-tollgate-credits-charged');
    expect(value).not.toBeNull();
    return g.micros(value!);
  };

  it('charges a non-streamed chat exactly: the mock usage at the rates, rounded up once per call', async () => {
    const t = await tenant('10');
    const { result, upstream } = await upstreamDuring(() => t.client.chat.completions.create({ model: setup.model, messages: prompt, max_tokens: 200 }).withResponse());
    const { data, response } = result;

    expect(upstream).toHaveLength(1);
    expect(upstream[0].path).toBe('/v1/chat/completions');
    expect(upstream[0].headers.authorization).toBe(`Bearer ${upstreamKey}`);
    expect(upstream[0].body).toEqual({ model: upstreamModel, messages: prompt, max_tokens: 200 });

    const usage = mockUsage(upstream[0]);
    const charge = g.expectedCharge(rates, usage);
    // The exact amount has a fraction of a micro-credit, and rounding input and output apart would differ.
    expect(g.exactCharge(rates, usage) % 10n ** 18n).not.toBe(0n);
    expect(charge).not.toBe(g.expectedCharge(rates, { input: usage.input, output: 0 }) + g.expectedCharge({ outputPer1M: rates.outputPer1M }, { input: 0, output: usage.output }));

    expect(data.model).toBe(setup.model);
    expect(data.choices[0].message.content).toBe(mockReply(upstream[0]));
    expect(data.choices[0].message.content).toContain(marker);
    expect(data.usage).toMatchObject({ prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output });

    const requestId = response.headers.get('x-request-id');
    expect(requestId).toMatch(/^req_/);
    expect(response.headers.get('x-tollgate-credits-charged')).toBe(g.credits(charge));

    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - charge, pending: 0n, consumed: charge, available: t.granted - charge });
    const record = await g.usageRecord(s, requestId!);
    expect(record).toMatchObject({
      workspace_id: t.workspaceId,
      key_id: t.keyId,
      endpoint: 'chat.completions',
      model: setup.model,
      provider_id: setup.providerId,
      upstream_model: upstreamModel,
      input_tokens: usage.input,
      cached_input_tokens: 0,
      output_tokens: usage.output,
      reasoning_tokens: 0,
      estimated: 0,
      charge_micros: charge,
      status: 'ok',
      error_code: null,
      stream: 0,
    });
  });

  it('streams at exactly the non-streamed cost, always asking the upstream for usage and showing it only when asked', async () => {
    const t = await tenant('10');
    const request = { model: setup.model, messages: prompt, max_tokens: 200 };
    const plain = await upstreamDuring(() => t.client.chat.completions.create(request).withResponse());
    const plainCharge = charged(plain.result.response.headers);
    const usage = mockUsage(plain.upstream[0]);
    expect(plainCharge).toBe(g.expectedCharge(rates, usage));

    // Without include_usage: the gateway asks the upstream for it anyway, and the client sees none.
    const quiet = await upstreamDuring(async () => {
      const { data, response } = await t.client.chat.completions.create({ ...request, stream: true }).withResponse();
      return { chunks: await collect(data), response };
    });
    expect(quiet.upstream).toHaveLength(1);
    expect(quiet.upstream[0].body).toEqual({ ...request, model: upstreamModel, stream: true, stream_options: { include_usage: true } });
    expect(quiet.result.response.headers.get('content-type')).toContain('text/event-stream');
    expect(quiet.result.response.headers.get('x-tollgate-credits-charged')).toBeNull();
    expect(quiet.result.chunks.length).toBeGreaterThan(3);
    expect(quiet.result.chunks.every((c) => c.usage == null && c.choices.length > 0)).toBe(true);
    expect(textOf(quiet.result.chunks)).toBe(plain.result.data.choices[0].message.content);
    expect(quiet.result.chunks.at(-1)!.choices[0].finish_reason).toBe('stop');
    const quietId = quiet.result.response.headers.get('x-request-id')!;
    expect(quietId).toMatch(/^req_/);
    const quietRecord = await g.settledUsage(s, quietId);
    expect(quietRecord).toMatchObject({ charge_micros: plainCharge, input_tokens: usage.input, output_tokens: usage.output, estimated: 0, stream: 1, status: 'ok' });

    // With include_usage: one usage-only chunk, last, with the same numbers as the JSON answer.
    const loud = await upstreamDuring(async () => {
      const { data, response } = await t.client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } }).withResponse();
      return { chunks: await collect(data), response };
    });
    expect(loud.upstream[0].body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    const usageChunks = loud.result.chunks.filter((c) => c.usage);
    expect(usageChunks).toHaveLength(1);
    expect(loud.result.chunks.at(-1)).toBe(usageChunks[0]);
    expect(usageChunks[0].choices).toEqual([]);
    expect(usageChunks[0].usage).toMatchObject({ prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output });
    expect(textOf(loud.result.chunks)).toBe(plain.result.data.choices[0].message.content);
    const loudRecord = await g.settledUsage(s, loud.result.response.headers.get('x-request-id')!);
    expect(loudRecord.charge_micros).toBe(plainCharge);

    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - 3n * plainCharge, pending: 0n, consumed: 3n * plainCharge });
    expect(await g.usageTransfersTotal(s, t.workspaceId)).toBe(3n * plainCharge);
  });

  it('prices cached input and reasoning tokens exactly, streamed and not', async () => {
    const t = await tenant('10');
    const extra = { cached: 9, reasoning: 13 };
    mock.setBehavior({ cachedTokens: extra.cached, reasoningTokens: extra.reasoning });
    try {
      const plain = await upstreamDuring(() => t.client.chat.completions.create({ model: setup.model, messages: prompt }).withResponse());
      const usage = mockUsage(plain.upstream[0], extra);
      const charge = g.expectedCharge(rates, usage);
      expect(charged(plain.result.response.headers)).toBe(charge);
      expect(plain.result.data.usage).toMatchObject({
        prompt_tokens: usage.input + extra.cached,
        prompt_tokens_details: { cached_tokens: extra.cached },
        completion_tokens: usage.output,
        completion_tokens_details: { reasoning_tokens: extra.reasoning },
      });
      const streamed = await t.client.chat.completions.create({ model: setup.model, messages: prompt, stream: true }).withResponse();
      await collect(streamed.data);
      const record = await g.settledUsage(s, streamed.response.headers.get('x-request-id')!);
      expect(record).toMatchObject({ charge_micros: charge, input_tokens: usage.input, cached_input_tokens: extra.cached, output_tokens: usage.output, reasoning_tokens: extra.reasoning });
      expect((await g.balanceOf(s, t.workspaceId)).balance).toBe(t.granted - 2n * charge);
    } finally {
      mock.setBehavior({});
    }
  });

  it('counts the tokens itself, marked estimated, when the upstream reports no usage, streamed or not', async () => {
    const t = await tenant('10');
    const route = await isolatedRoute();
    mock.setBehavior({ omitUsage: true });
    try {
      const plain = await upstreamDuring(() => t.client.chat.completions.create({ model: route.model, messages: prompt }).withResponse());
      const reply = plain.result.data.choices[0].message.content!;
      expect(reply).toBe(mockReply(plain.upstream[0]));
      const counted = { input: mockUsage(plain.upstream[0]).input, output: countTokens(reply) };
      const charge = g.expectedCharge(rates, counted);
      expect(charged(plain.result.response.headers)).toBe(charge);
      const streamed = await t.client.chat.completions.create({ model: route.model, messages: prompt, stream: true }).withResponse();
      expect(textOf(await collect(streamed.data))).toBe(reply);
      for (const id of [plain.result.response.headers.get('x-request-id')!, streamed.response.headers.get('x-request-id')!]) {
        expect(await g.settledUsage(s, id)).toMatchObject({ status: 'ok', estimated: 1, input_tokens: counted.input, output_tokens: counted.output, charge_micros: charge });
      }
      expect((await g.balanceOf(s, t.workspaceId)).balance).toBe(t.granted - 2n * charge);
    } finally {
      mock.setBehavior({});
    }
  });

  it('round-trips tools and tool calls, streamed and not, at equal cost', async () => {
    const t = await tenant('10');
    const ask: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris today?' }];
    const first = await upstreamDuring(() => t.client.chat.completions.create({ model: setup.model, messages: ask, tools: [weatherTool], tool_choice: 'auto' }).withResponse());
    expect(first.upstream[0].body).toEqual({ model: upstreamModel, messages: ask, tools: [weatherTool], tool_choice: 'auto' });
    const message = first.result.data.choices[0].message;
    expect(first.result.data.choices[0].finish_reason).toBe('tool_calls');
    expect(message.tool_calls).toHaveLength(1);
    const call = message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(call.function).toEqual({ name: 'get_weather', arguments: '{"location":"Paris"}' });
    const firstCharge = charged(first.result.response.headers);
    expect(firstCharge).toBe(g.expectedCharge(rates, mockUsage(first.upstream[0])));

    // The same call streamed: the tool call assembled from its deltas is the same, and so is the cost.
    const streamed = await t.client.chat.completions.create({ model: setup.model, messages: ask, tools: [weatherTool], tool_choice: 'auto', stream: true }).withResponse();
    const chunks = await collect(streamed.data);
    const deltas = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
    expect(deltas[0]).toMatchObject({ index: 0, id: call.id, type: 'function', function: { name: 'get_weather' } });
    expect(deltas.map((d) => d.function?.arguments ?? '').join('')).toBe(call.function.arguments);
    expect(chunks.at(-1)!.choices[0].finish_reason).toBe('tool_calls');
    expect((await g.settledUsage(s, streamed.response.headers.get('x-request-id')!)).charge_micros).toBe(firstCharge);

    // The tool's result goes back; the upstream receives the whole conversation as sent.
    const followUp: OpenAI.ChatCompletionMessageParam[] = [...ask, message, { role: 'tool', tool_call_id: call.id, content: '{"temperature_c":21}' }];
    const second = await upstreamDuring(() => t.client.chat.completions.create({ model: setup.model, messages: followUp, tools: [weatherTool] }).withResponse());
    expect(second.upstream[0].body).toEqual(JSON.parse(JSON.stringify({ model: upstreamModel, messages: followUp, tools: [weatherTool] })));
    expect(second.result.data.choices[0].finish_reason).toBe('stop');
    expect(second.result.data.choices[0].message.content).toContain('{"temperature_c":21}');
    const secondCharge = charged(second.result.response.headers);
    expect(secondCharge).toBe(g.expectedCharge(rates, mockUsage(second.upstream[0])));
    expect((await g.balanceOf(s, t.workspaceId)).balance).toBe(t.granted - 2n * firstCharge - secondCharge);
  });

  it('passes JSON mode and image parts through untouched', async () => {
    const t = await tenant('10');
    const json = await upstreamDuring(() =>
      t.client.chat.completions.create({ model: setup.model, messages: [{ role: 'user', content: 'Reply in JSON.' }], response_format: { type: 'json_object' } }),
    );
    expect(json.upstream[0].body).toMatchObject({ response_format: { type: 'json_object' } });
    const schema = { type: 'json_schema' as const, json_schema: { name: 'answer', strict: true, schema: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'], additionalProperties: false } } };
    const structured = await upstreamDuring(() => t.client.chat.completions.create({ model: setup.model, messages: [{ role: 'user', content: 'Structured.' }], response_format: schema }));
    expect(structured.upstream[0].body).toMatchObject({ response_format: schema });

    const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
    const vision: OpenAI.ChatCompletionMessageParam[] = [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'What is in these images?' },
          { type: 'image_url', image_url: { url: `data:image/png;base64,${png}`, detail: 'low' } },
          { type: 'image_url', image_url: { url: 'https://images.example.test/cat.jpg' } },
        ],
      },
    ];
    const seen = await upstreamDuring(() => t.client.chat.completions.create({ model: setup.model, messages: vision }).withResponse());
    expect(seen.upstream[0].body).toEqual({ model: upstreamModel, messages: vision });
    expect(charged(seen.result.response.headers)).toBe(g.expectedCharge(rates, mockUsage(seen.upstream[0])));
  });

  it('serves embeddings, priced by the input tokens the upstream reported', async () => {
    const embedRates = { inputPer1M: '0.0200003' };
    const model = await g.addModel(s, { workload: 'embedding', providerId: setup.providerId, upstreamModel: 'text-embedding-3-small', rates: embedRates });
    const t = await tenant('1');
    const input = ['alpha beta gamma', `delta ${marker}`];
    const { result, upstream } = await upstreamDuring(() => t.client.embeddings.create({ model: model.name, input }).withResponse());
    expect(upstream).toHaveLength(1);
    expect(upstream[0].path).toBe('/v1/embeddings');
    expect(upstream[0].body).toMatchObject({ model: 'text-embedding-3-small', input });
    const tokens = input.reduce((n, text) => n + countTokens(text), 0);
    const charge = g.expectedCharge(embedRates, { input: tokens, output: 0 });
    expect(charged(result.response.headers)).toBe(charge);
    expect(result.data.model).toBe(model.name);
    expect(result.data.usage).toEqual({ prompt_tokens: tokens, total_tokens: tokens });
    expect(result.data.data.map((d) => d.embedding)).toEqual(input.map((text) => embeddingVector(text, 8)));
    expect(await g.usageRecord(s, result.response.headers.get('x-request-id')!)).toMatchObject({ endpoint: 'embeddings', input_tokens: tokens, output_tokens: 0, charge_micros: charge, status: 'ok' });
    expect((await g.balanceOf(s, t.workspaceId)).balance).toBe(t.granted - charge);
  });

  it('serves image generation, priced per image and per request', async () => {
    const imageRates = { perImage: '0.0200001', perRequest: '0.0000003' };
    const model = await g.addModel(s, { workload: 'image', providerId: setup.providerId, upstreamModel: 'gpt-image-1', rates: imageRates });
    const t = await tenant('1');
    const { result, upstream } = await upstreamDuring(() => t.client.images.generate({ model: model.name, prompt: 'A red square', n: 2 }).withResponse());
    expect(upstream[0].path).toBe('/v1/images/generations');
    expect(upstream[0].body).toEqual({ model: 'gpt-image-1', prompt: 'A red square', n: 2 });
    expect(result.data.data).toHaveLength(2);
    expect(result.data.data![0].b64_json).toMatch(/^iVBOR/);
    const charge = g.expectedCharge(imageRates, { input: 0, output: 0, images: 2 });
    expect(charge).toBe(40_001n); // 2 × 20000.1 + 0.3 micro-credits, rounded up once
    expect(charged(result.response.headers)).toBe(charge);
    expect(await g.usageRecord(s, result.response.headers.get('x-request-id')!)).toMatchObject({ endpoint: 'images', images: 2, charge_micros: charge });
    expect((await g.balanceOf(s, t.workspaceId)).balance).toBe(t.granted - charge);
  });

  it('lists only the models the key may call and that have a rate', async () => {
    const embedding = await g.addModel(s, { workload: 'embedding', providerId: setup.providerId, upstreamModel: 'text-embedding-3-large', rates: { inputPer1M: '0.13' } });
    const unpriced = await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'gpt-unpriced', rates: null });
    const halfPriced = await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'gpt-half', rates: { inputPer1M: '1' } });
    const other = await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'gpt-other' });
    const inactive = await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'gpt-old' });
    expect((await s.admin('PATCH', `/api/admin/models/${inactive.id}`, { status: 'inactive' })).status).toBe(200);

    const restricted = await tenant('1', { models: [setup.model, embedding.name, unpriced.name, halfPriced.name, inactive.name] });
    const listed = [];
    for await (const m of restricted.client.models.list()) listed.push(m);
    expect(listed.map((m) => m.id).sort()).toEqual([setup.model, embedding.name].sort());
    expect(listed.find((m) => m.id === setup.model)).toMatchObject({ object: 'model', owned_by: 'tollgate', pricing: { unit: 'credits', ...rates } });

    const open = await tenant('1');
    const all = [];
    for await (const m of open.client.models.list()) all.push(m.id);
    expect(all).toEqual(expect.arrayContaining([setup.model, embedding.name, other.name]));
    for (const hidden of [unpriced.name, halfPriced.name, inactive.name]) expect(all).not.toContain(hidden);

    const noScope = await tenant('1', { scopes: ['chat.completions'] });
    await expect(noScope.client.models.list()).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError);
  });

  it('answers auth, scope and model errors in OpenAI form without calling the upstream', async () => {
    const before = mock.requests.length;
    const t = await tenant('10');
    const expectError = async (promise: Promise<unknown>, errorClass: new (...args: any[]) => APIError, status: number, code: string) => {
      const err = (await promise.catch((e: unknown) => e)) as APIError;
      expect(err, `${status} ${code}`).toBeInstanceOf(errorClass);
      expect(err.status).toBe(status);
      expect(err.code).toBe(code);
      expect(err.headers?.get('x-request-id')).toMatch(/^req_/);
      return err;
    };
    const chat = (client: OpenAI, model = setup.model) => client.chat.completions.create({ model, messages: prompt });

    const forged = `tg_live_${'A'.repeat(32)}`;
    const bad = await expectError(chat(clientFor(forged)), OpenAI.AuthenticationError, 401, 'invalid_api_key');
    expect(bad.type).toBe('authentication_error');
    await expectError(chat(clientFor('not-a-key')), OpenAI.AuthenticationError, 401, 'invalid_api_key');
    const revoked = await tenant('1');
    expect((await s.admin('DELETE', `/api/admin/workspaces/${revoked.workspaceId}/keys/${revoked.keyId}`)).status).toBe(200);
    await expectError(chat(revoked.client), OpenAI.AuthenticationError, 401, 'revoked_api_key');

    const embedOnly = await tenant('1', { scopes: ['embeddings'] });
    const scope = await expectError(chat(embedOnly.client), OpenAI.PermissionDeniedError, 403, 'missing_scope');
    expect(scope.type).toBe('permission_error');
    const otherModel = await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'gpt-secret' });
    const limited = await tenant('1', { models: [otherModel.name] });
    await expectError(chat(limited.client), OpenAI.PermissionDeniedError, 403, 'model_not_allowed');

    const unknown = await expectError(chat(t.client, 'no-such-model'), OpenAI.NotFoundError, 404, 'model_not_found');
    expect(unknown.type).toBe('not_found_error');
    const unpriced = await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'gpt-free', rates: null });
    await expectError(chat(t.client, unpriced.name), OpenAI.NotFoundError, 404, 'model_not_priced');
    await expectError(t.client.chat.completions.create({ model: unpriced.name, messages: prompt, stream: true }), OpenAI.NotFoundError, 404, 'model_not_priced');

    expect(mock.requests.length).toBe(before);
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, pending: 0n });
    expect(await g.usageRecords(s, t.workspaceId)).toEqual([]);
  });

  it('refuses a call the balance cannot cover with a 402 naming the payment link, before any upstream request', async () => {
    const link = 'https://pay.example.test/credits?plan=topup';
    expect((await s.admin('PATCH', '/api/admin/settings', { creditPaymentLink: link })).status).toBe(200);
    const t = await tenant('0.00001');
    const before = mock.requests.length;
    for (const stream of [false, true]) {
      const err = (await t.client.chat.completions.create({ model: setup.model, messages: prompt, stream }).catch((e: unknown) => e)) as APIError;
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect(err.status).toBe(402);
      expect(err.code).toBe('insufficient_credits');
      expect(err.type).toBe('insufficient_quota');
      expect(err.message).toContain(link);
    }
    expect(mock.requests.length).toBe(before);
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, pending: 0n, consumed: 0n });
    expect(await g.pendingHolds(s, t.workspaceId)).toBe(0);

    // Clearing the link (null) takes it out of the message again.
    const cleared = await s.admin('PATCH', '/api/admin/settings', { creditPaymentLink: null });
    expect(cleared.status).toBe(200);
    const err = (await t.client.chat.completions.create({ model: setup.model, messages: prompt }).catch((e: unknown) => e)) as APIError;
    expect(err.status).toBe(402);
    expect(err.message).not.toContain(link);
  });

  it('answers malformed and oversized bodies with a 400 and a 413, and keeps serving', async () => {
    const t = await tenant('10');
    const post = (body: string, contentType = 'application/json') =>
      fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${t.apiKey}`, 'content-type': contentType }, body });
    const before = mock.requests.length;
    for (const [body, code] of [
      ['{"model": "x", "messages": [', 'invalid_json'],
      ['[1, 2]', 'invalid_body'],
      ['"just a string"', 'invalid_body'],
      [JSON.stringify({ model: setup.model }), 'invalid_messages'],
      [JSON.stringify({ model: setup.model, messages: prompt, max_tokens: -3 }), 'invalid_max_tokens'],
      [JSON.stringify({ model: setup.model, messages: prompt, stream: 'yes' }), 'invalid_stream'],
    ] as const) {
      const r = await post(body);
      expect(r.status, body).toBe(400);
      expect(r.headers.get('x-request-id')).toMatch(/^req_/);
      const json = (await r.json()) as { error: { type: string; code: string; message: string } };
      expect(json.error, body).toMatchObject({ type: 'invalid_request_error', code });
      expect(typeof json.error.message).toBe('string');
    }
    const huge = JSON.stringify({ model: setup.model, messages: [{ role: 'user', content: 'x'.repeat(21 * 1024 * 1024) }] });
    const big = await post(huge);
    expect(big.status).toBe(413);
    expect(((await big.json()) as any).error).toMatchObject({ type: 'invalid_request_error', code: 'body_too_large' });
    expect(mock.requests.length).toBe(before);

    const ok = await t.client.chat.completions.create({ model: setup.model, messages: prompt });
    expect(ok.choices[0].message.content).toContain(marker);
  });

  it('turns an upstream 500 into a 502, charges nothing and releases the hold', async () => {
    const t = await tenant('10');
    const route = await isolatedRoute();
    for (const stream of [false, true]) {
      mock.setBehavior({ fail: { count: 1, status: 500, message: 'The server had an error' } });
      const err = (await t.client.chat.completions.create({ model: route.model, messages: prompt, stream }).catch((e: unknown) => e)) as APIError;
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      expect(err.status).toBe(502);
      expect(err.code).toBe('upstream_error');
      const record = await g.usageRecord(s, err.headers!.get('x-request-id')!);
      expect(record).toMatchObject({ status: 'upstream_error', error_code: 'upstream_error', charge_micros: 0n, transfer_id: null, stream: stream ? 1 : 0 });
    }
    mock.setBehavior({});
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, pending: 0n, available: t.granted, consumed: 0n });
    expect(await g.pendingHolds(s, t.workspaceId)).toBe(0);
  });

  it('turns an upstream timeout into a 504 and charges nothing', async () => {
    const t = await tenant('10');
    const route = await isolatedRoute();
    expect((await s.admin('PATCH', `/api/admin/providers/${route.providerId}`, { timeoutMs: 1000 })).status).toBe(200);
    mock.setBehavior({ headersDelayMs: 4000 });
    try {
      for (const stream of [false, true]) {
        const err = (await t.client.chat.completions.create({ model: route.model, messages: prompt, stream }).catch((e: unknown) => e)) as APIError;
        expect(err).toBeInstanceOf(OpenAI.APIError);
        expect(err.status).toBe(504);
        expect(err.code).toBe('upstream_timeout');
        expect(await g.usageRecord(s, err.headers!.get('x-request-id')!)).toMatchObject({ status: 'upstream_error', error_code: 'upstream_timeout', charge_micros: 0n });
      }
    } finally {
      mock.setBehavior({});
      expect((await s.admin('PATCH', `/api/admin/providers/${route.providerId}`, { timeoutMs: 60_000 })).status).toBe(200);
    }
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, pending: 0n, consumed: 0n });
    // The provider answers again once it is fast.
    const ok = await t.client.chat.completions.create({ model: route.model, messages: prompt }).withResponse();
    expect((await g.balanceOf(s, t.workspaceId)).balance).toBe(t.granted - charged(ok.response.headers));
  });

  it('reads balance and usage with a usage.read key, and refuses them without one', async () => {
    const t = await tenant('10', { scopes: ['chat.completions', 'usage.read'] });
    const a = await t.client.chat.completions.create({ model: setup.model, messages: prompt }).withResponse();
    const b = await t.client.chat.completions.create({ model: setup.model, messages: prompt, stream: true }).withResponse();
    await collect(b.data);
    const charges = [charged(a.response.headers), (await g.settledUsage(s, b.response.headers.get('x-request-id')!)).charge_micros];

    const get = (path: string, key = t.apiKey) => fetch(`${s.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
    const balance = (await (await get('/v1/balance')).json()) as any;
    expect(balance).toMatchObject({ object: 'balance', workspaceId: t.workspaceId, balance: g.credits(t.granted - charges[0] - charges[1]), pending: '0' });
    const usage = (await (await get('/v1/usage')).json()) as any;
    expect(usage.data.map((r: any) => r.id).sort()).toEqual([a.response.headers.get('x-request-id'), b.response.headers.get('x-request-id')].sort());
    for (const r of usage.data) {
      expect(r).toMatchObject({ object: 'usage_record', keyId: t.keyId, endpoint: 'chat.completions', model: setup.model, status: 'ok', estimated: false });
      expect(JSON.stringify(r)).not.toContain(marker);
    }
    expect(usage.data.map((r: any) => g.micros(r.credits)).reduce((x: bigint, y: bigint) => x + y, 0n)).toBe(charges[0] + charges[1]);
    // The calling key's own counters: what it spent and how many calls it made.
    expect(usage.key).toMatchObject({ id: t.keyId, object: 'api_key', spend: g.credits(charges[0] + charges[1]), requests: 2 });
    expect(JSON.stringify(usage.key)).not.toMatch(/hash/);

    const chatOnly = await tenant('1', { scopes: ['chat.completions'] });
    for (const path of ['/v1/balance', '/v1/usage']) {
      const r = await get(path, chatOnly.apiKey);
      expect(r.status).toBe(403);
      expect(((await r.json()) as any).error.code).toBe('missing_scope');
    }
  });

  it('stores metadata only: no prompt or completion text in any column of any table, and no secret in any log or response', async () => {
    const t = await tenant('10');
    const r = await t.client.chat.completions.create({ model: setup.model, messages: prompt });
    const reply = r.choices[0].message.content!;
    expect(reply).toContain(marker);

    const db = await g.settledDb(s);
    const forbidden = [marker, 'You answer in one short sentence.', 'This answer is deterministic', '{"temperature_c":21}', upstreamKey, ...customerKeys];
    const tables = await db.introspection.getTables();
    expect(tables.map((x) => x.name)).toContain('usage_records');
    let rowsSearched = 0;
    for (const table of tables) {
      const rows = await db.selectFrom(table.name as 'usage_records').selectAll().execute();
      for (const row of rows) {
        rowsSearched++;
        const text = g.rowText(row as unknown as Record<string, unknown>);
        for (const needle of forbidden) expect(text.includes(needle), `${table.name} holds '${needle.slice(0, 20)}'`).toBe(false);
      }
    }
    expect(rowsSearched).toBeGreaterThan(20);
    expect((await g.usageRecords(s, t.workspaceId))[0].route_summary).toBeTypeOf('string');

    // Provider credentials never come back from any API.
    const views = [
      await s.admin('GET', '/api/admin/providers'),
      await s.admin('GET', `/api/admin/providers/${setup.providerId}`),
      await s.admin('GET', `/api/admin/providers/${setup.providerId}/credentials`),
      await s.admin('GET', '/api/admin/models'),
      await s.admin('GET', `/api/admin/workspaces/${t.workspaceId}/keys`),
    ].map((x) => JSON.stringify(x.body));
    views.push(JSON.stringify(await t.client.models.list()));
    for (const view of views) {
      expect(view.includes(upstreamKey)).toBe(false);
      for (const key of customerKeys) expect(view.includes(key)).toBe(false);
    }

    // The log saw every request (debug level) and none of their secrets or text.
    await new Promise((resolve) => setImmediate(resolve));
    expect(logs.length).toBeGreaterThan(10);
    const logText = logs.join('');
    expect(logText).toContain('/v1/chat/completions');
    for (const needle of forbidden) expect(logText.includes(needle), `the log holds '${needle.slice(0, 20)}'`).toBe(false);
    expect(await verifyLedger(db)).toEqual([]);
  });
});

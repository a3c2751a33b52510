// The Anthropic front door (`POST /v1/messages`) against the Anthropic upstream, driven by the
// official `@anthropic-ai/sdk`: streamed and not, with tools, charged exactly what the usage the
// mock reported costs at the model's rates, and every failure in Anthropic's error format.
import Anthropic, { APIError } from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { startAnthropicMock, type AnthropicMock, type RecordedRequest } from '../upstreams/anthropic.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import * as g from '../helpers/gateway.ts';

const upstreamKey = 'sk-ant-mock-upstream-SECRET-0123456789';
const upstreamModel = 'claude-mock-1';
const rates = g.fractionalRates;
const weatherTool: Anthropic.Tool = {
  name: 'get_weather',
  description: 'Current weather for a city',
  input_schema: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
};

describe.each(engines)('Anthropic SDK → gateway → Anthropic upstream on %s', (engine) => {
  let s: TestServer;
  let mock: AnthropicMock;
  let setup: g.GatewaySetup;

  beforeAll(async () => {
    mock = await startAnthropicMock({ apiKey: upstreamKey });
    s = await startTestServer(engine);
    setup = await g.setupGateway(s, { provider: { type: 'anthropic', baseUrl: mock.url, apiKey: upstreamKey }, upstreamModel });
  });
  afterAll(async () => {
    await s?.close();
    await mock?.close();
  });

  const clientFor = (apiKey: string) => new Anthropic({ baseURL: s.url, apiKey, maxRetries: 0 });
  const tenant = async (credits = '10', key: g.KeySpec = {}) => {
    const workspaceId = await g.addWorkspace(s, credits);
    const k = await g.addKey(s, workspaceId, key);
    return { workspaceId, keyId: k.id, apiKey: k.key, client: clientFor(k.key), granted: g.micros(credits) };
  };
  const upstreamDuring = async <T>(fn: () => Promise<T>): Promise<{ result: T; upstream: RecordedRequest[] }> => {
    const before = mock.requests.length;
    const result = await fn();
    return { result, upstream: mock.requests.slice(before) };
  };

  /**
   * What the mock reports for a request it received: the same body sent to it again directly
   * (not streamed), its usage read from its own answer.
   */
  const mockUsage = async (recorded: RecordedRequest): Promise<{ usage: g.TokenUsage; message: Anthropic.Message }> => {
    const { stream: _stream, ...body } = recorded.body as Record<string, unknown>;
    const r = await fetch(`${mock.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': upstreamKey, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(r.status).toBe(200);
    const message = (await r.json()) as Anthropic.Message;
    mock.requests.pop();
    const u = message.usage;
    return { usage: { input: u.input_tokens + (u.cache_creation_input_tokens ?? 0), cached: u.cache_read_input_tokens ?? 0, output: u.output_tokens }, message };
  };

  const request = (extra: Partial<Anthropic.MessageCreateParamsNonStreaming> = {}): Anthropic.MessageCreateParamsNonStreaming => ({
    model: setup.model,
    max_tokens: 300,
    system: 'You are a terse assistant.',
    messages: [{ role: 'user', content: 'Say hello to the quokka colony.' }],
    ...extra,
  });

  it('charges a non-streamed message exactly and answers in Anthropic form', async () => {
    const t = await tenant('10');
    const { result, upstream } = await upstreamDuring(() => t.client.messages.create(request()).withResponse());
    expect(upstream).toHaveLength(1);
    expect(upstream[0].path).toBe('/v1/messages');
    expect(upstream[0].headers['x-api-key']).toBe(upstreamKey);
    expect(typeof upstream[0].headers['anthropic-version']).toBe('string');
    expect(upstream[0].body).toMatchObject({ model: upstreamModel, max_tokens: 300, messages: [{ role: 'user', content: 'Say hello to the quokka colony.' }] });
    expect(JSON.stringify((upstream[0].body as any).system)).toContain('You are a terse assistant.');

    const { usage, message: direct } = await mockUsage(upstream[0]);
    const charge = g.expectedCharge(rates, usage);
    expect(g.exactCharge(rates, usage) % 10n ** 18n).not.toBe(0n);

    const { data, response } = result;
    expect(data).toMatchObject({ type: 'message', role: 'assistant', model: setup.model, stop_reason: 'end_turn', content: direct.content });
    expect(data.id).toMatch(/^msg_/);
    expect(data.usage).toMatchObject({ input_tokens: usage.input, output_tokens: usage.output });
    const requestId = response.headers.get('x-request-id');
    expect(requestId).toMatch(/^req_/);
    expect(response.headers.get('x-tollgate-credits-charged')).toBe(g.credits(charge));
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - charge, pending: 0n, consumed: charge });
    expect(await g.usageRecord(s, requestId!)).toMatchObject({
      workspace_id: t.workspaceId,
      key_id: t.keyId,
      endpoint: 'messages',
      model: setup.model,
      provider_id: setup.providerId,
      upstream_model: upstreamModel,
      input_tokens: usage.input,
      output_tokens: usage.output,
      estimated: 0,
      charge_micros: charge,
      status: 'ok',
      stream: 0,
    });
  });

  it('streams a message with messages.stream() at exactly the non-streamed cost', async () => {
    const t = await tenant('10');
    const plain = await upstreamDuring(() => t.client.messages.create(request()).withResponse());
    const { usage } = await mockUsage(plain.upstream[0]);
    const charge = g.expectedCharge(rates, usage);
    expect(g.micros(plain.result.response.headers.get('x-tollgate-credits-charged')!)).toBe(charge);

    const streamed = await upstreamDuring(async () => {
      const stream = t.client.messages.stream(request());
      const events: string[] = [];
      stream.on('streamEvent', (e) => void events.push(e.type));
      const { response } = await stream.withResponse();
      return { message: await stream.finalMessage(), response, events };
    });
    expect(streamed.upstream[0].body).toMatchObject({ model: upstreamModel, stream: true });
    const { message, response, events } = streamed.result;
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    expect(events[0]).toBe('message_start');
    expect(events).toContain('content_block_delta');
    expect(events.slice(-2)).toEqual(['message_delta', 'message_stop']);
    expect(message.content).toEqual(plain.result.data.content);
    expect(message.stop_reason).toBe(plain.result.data.stop_reason);
    expect(message.model).toBe(setup.model);
    expect(message.usage).toMatchObject({ input_tokens: usage.input, output_tokens: usage.output });
    const record = await g.settledUsage(s, response.headers.get('x-request-id')!);
    expect(record).toMatchObject({ endpoint: 'messages', charge_micros: charge, input_tokens: usage.input, output_tokens: usage.output, estimated: 0, stream: 1, status: 'ok' });
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - 2n * charge, pending: 0n });
  });

  it('round-trips tool use, streamed and not, at equal cost', async () => {
    const t = await tenant('10');
    const ask = request({ messages: [{ role: 'user', content: 'What is the weather in Oslo?' }], tools: [weatherTool] });
    const first = await upstreamDuring(() => t.client.messages.create(ask).withResponse());
    expect((first.upstream[0].body as any).tools).toEqual([weatherTool]);
    const msg = first.result.data;
    expect(msg.stop_reason).toBe('tool_use');
    expect(msg.content).toEqual([
      { type: 'text', text: "I'll look that up with get_weather." },
      { type: 'tool_use', id: expect.stringMatching(/^toolu_/), name: 'get_weather', input: { location: 'Oslo' } },
    ]);
    const { usage } = await mockUsage(first.upstream[0]);
    const firstCharge = g.expectedCharge(rates, usage);
    expect(g.micros(first.result.response.headers.get('x-tollgate-credits-charged')!)).toBe(firstCharge);

    const stream = t.client.messages.stream(ask);
    const { response } = await stream.withResponse();
    const streamed = await stream.finalMessage();
    expect(streamed.content).toEqual(msg.content);
    expect(streamed.stop_reason).toBe('tool_use');
    expect((await g.settledUsage(s, response.headers.get('x-request-id')!)).charge_micros).toBe(firstCharge);

    const toolUse = msg.content.find((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use')!;
    const followUp = request({
      tools: [weatherTool],
      messages: [
        ...ask.messages,
        { role: 'assistant', content: msg.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: toolUse.id, content: '12 degrees and drizzle' }] },
      ],
    });
    const second = await upstreamDuring(() => t.client.messages.create(followUp).withResponse());
    const sentBack = (second.upstream[0].body as any).messages;
    expect(sentBack[1]).toMatchObject({ role: 'assistant', content: expect.arrayContaining([expect.objectContaining({ type: 'tool_use', id: toolUse.id, name: 'get_weather', input: { location: 'Oslo' } })]) });
    expect(sentBack[2]).toMatchObject({ role: 'user', content: [expect.objectContaining({ type: 'tool_result', tool_use_id: toolUse.id })] });
    expect(second.result.data.stop_reason).toBe('end_turn');
    expect(second.result.data.content).toEqual([{ type: 'text', text: expect.stringContaining('12 degrees and drizzle') }]);
    const secondCharge = g.expectedCharge(rates, (await mockUsage(second.upstream[0])).usage);
    expect(g.micros(second.result.response.headers.get('x-tollgate-credits-charged')!)).toBe(secondCharge);
    expect((await g.balanceOf(s, t.workspaceId)).balance).toBe(t.granted - 2n * firstCharge - secondCharge);
  });

  it('answers auth, scope, model and credit errors with the SDK error classes, without calling the upstream', async () => {
    const link = 'https://pay.example.test/anthropic-topup';
    expect((await s.admin('PATCH', '/api/admin/settings', { creditPaymentLink: link })).status).toBe(200);
    const before = mock.requests.length;
    const t = await tenant('10');
    const expectError = async (promise: Promise<unknown>, errorClass: new (...args: any[]) => APIError, status: number, type: string) => {
      const err = (await promise.catch((e: unknown) => e)) as APIError;
      expect(err, `${status} ${type}`).toBeInstanceOf(errorClass);
      expect(err.status).toBe(status);
      expect(err.type).toBe(type);
      expect(err.headers?.get('x-request-id')).toMatch(/^req_/);
      expect((err.error as any)?.type).toBe('error');
      return err;
    };

    await expectError(clientFor(`tg_live_${'B'.repeat(32)}`).messages.create(request()), Anthropic.AuthenticationError, 401, 'authentication_error');
    await expectError(clientFor('sk-ant-whatever').messages.stream(request()).finalMessage(), Anthropic.AuthenticationError, 401, 'authentication_error');

    const chatOnly = await tenant('1', { scopes: ['chat.completions'] });
    const scope = await expectError(chatOnly.client.messages.create(request()), Anthropic.PermissionDeniedError, 403, 'permission_error');
    expect(scope.message).toContain("'messages'");
    const other = await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'claude-other' });
    const limited = await tenant('1', { models: [other.name] });
    await expectError(limited.client.messages.create(request()), Anthropic.PermissionDeniedError, 403, 'permission_error');

    await expectError(t.client.messages.create(request({ model: 'claude-nonexistent' })), Anthropic.NotFoundError, 404, 'not_found_error');
    const unpriced = await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'claude-free', rates: null });
    await expectError(t.client.messages.create(request({ model: unpriced.name })), Anthropic.NotFoundError, 404, 'not_found_error');

    const poor = await tenant('0.00002');
    const broke = await expectError(poor.client.messages.create(request()), APIError, 402, 'billing_error');
    expect(broke.message).toContain(link);
    const brokeStream = await expectError(poor.client.messages.stream(request()).finalMessage(), APIError, 402, 'billing_error');
    expect(brokeStream.message).toContain(link);

    expect(mock.requests.length).toBe(before);
    for (const w of [t, poor]) expect(await g.balanceOf(s, w.workspaceId)).toMatchObject({ balance: w.granted, pending: 0n, consumed: 0n });
  });

  it('answers malformed requests with a 400 in Anthropic form', async () => {
    const t = await tenant('10');
    const post = (body: string) =>
      fetch(`${s.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': t.apiKey, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' }, body });
    for (const body of ['{"model":', '[]', JSON.stringify({ model: setup.model, messages: [{ role: 'user', content: 'hi' }] })]) {
      const r = await post(body);
      expect(r.status, body).toBe(400);
      expect(await r.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: expect.any(String) } });
    }
    const missing = (await t.client.messages.create({ model: setup.model, messages: [{ role: 'user', content: 'hi' }] } as any).catch((e: unknown) => e)) as APIError;
    expect(missing).toBeInstanceOf(Anthropic.BadRequestError);
    expect(missing.message).toContain('max_tokens');
    const big = await post(JSON.stringify({ ...request(), messages: [{ role: 'user', content: 'y'.repeat(21 * 1024 * 1024) }] }));
    expect(big.status).toBe(413);
    expect(await big.json()).toMatchObject({ type: 'error', error: { type: 'request_too_large' } });
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, pending: 0n });
  });

  it('turns upstream failures and timeouts into 502 and 504 in Anthropic form, charging nothing', async () => {
    const t = await tenant('10');
    // Routes of their own on the same mock, so the failures injected here touch no other circuit.
    const isolated = async () => {
      const provider = await g.addProvider(s, { type: 'anthropic', baseUrl: mock.url, apiKey: upstreamKey });
      return { providerId: provider.id, model: (await g.addModel(s, { providerId: provider.id, upstreamModel })).name };
    };
    const failing = await isolated();
    const slow = await isolated();
    for (const stream of [false, true]) {
      for (const status of [500, 529]) {
        mock.setBehavior({ fail: { count: 1, status } });
        const call = stream ? t.client.messages.stream(request({ model: failing.model })).finalMessage() : t.client.messages.create(request({ model: failing.model }));
        const err = (await call.catch((e: unknown) => e)) as APIError;
        expect(err).toBeInstanceOf(Anthropic.InternalServerError);
        expect(err.status).toBe(502);
        expect(err.type).toBe('api_error');
        expect(await g.usageRecord(s, err.headers!.get('x-request-id')!)).toMatchObject({ status: 'upstream_error', charge_micros: 0n, transfer_id: null });
      }
    }
    expect((await s.admin('PATCH', `/api/admin/providers/${slow.providerId}`, { timeoutMs: 1000 })).status).toBe(200);
    mock.setBehavior({ headersDelayMs: 4000 });
    try {
      const err = (await t.client.messages.create(request({ model: slow.model })).catch((e: unknown) => e)) as APIError;
      expect(err.status).toBe(504);
      expect(err.type).toBe('timeout_error');
    } finally {
      mock.setBehavior({});
      expect((await s.admin('PATCH', `/api/admin/providers/${slow.providerId}`, { timeoutMs: 60_000 })).status).toBe(200);
    }
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, pending: 0n, consumed: 0n });
    expect(await g.pendingHolds(s, t.workspaceId)).toBe(0);
    expect(await verifyLedger(await g.settledDb(s))).toEqual([]);
  });
});

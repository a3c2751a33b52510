// Routing through the real gateway, configured through the admin API, against several mock
// upstreams (each its own provider), driven with the official `openai` SDK: fallback on every
// failure kind and never on a request error, stream fallback only before the first byte, the
// circuit breaker, provider status and resale filters, workspace data policies (403, never a
// silent non-compliant route), priorities and weights, aliases, price books per workspace, and a
// key budget under concurrent calls. Every charge is computed here from what the serving mock
// produced, and every failed attempt is shown to cost nothing.
import net from 'node:net';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { startOpenAIMock, type OpenAIMock, type OpenAIMockBehavior, type RecordedRequest } from '../upstreams/openai.ts';
import { startAnthropicMock } from '../upstreams/anthropic.ts';
import { answerChat, openaiUsageOf, promptTokensOf } from '../../src/providers/sandbox/engine.ts';
import { countTokens } from '../../src/providers/tokenizer.ts';
import type { ChatRequest } from '../../src/providers/types.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import * as g from '../helpers/gateway.ts';

const upstreamKey = 'sk-mock-routing-0123456789abcdef';
const upstreamModel = 'gpt-4o-mini';
const rates = g.fractionalRates;
const prompt: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Which provider answers this call?' }];
const promptTokens = promptTokensOf({ messages: prompt as ChatRequest['messages'] });

interface Upstream {
  label: string;
  mock: OpenAIMock;
  /** Every answer of this upstream is this text, so a reply tells who served it. */
  reply: string;
  /** Sets a behaviour, keeping the upstream's own reply text. */
  set(behavior: OpenAIMockBehavior): void;
  calls(): number;
}

/** A port nothing listens on: connecting to it is refused. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

const textOf = (chunks: OpenAI.ChatCompletionChunk[]) => chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');

describe.each(engines)('routing and fallback on %s', (engine) => {
  let s: TestServer;
  const closers: Array<() => Promise<void>> = [];
  let serial = 0;
  const unique = (prefix: string) => `${prefix}-${engine}-${++serial}`;

  beforeAll(async () => {
    s = await startTestServer(engine);
  });
  afterAll(async () => {
    await s?.close();
    await Promise.all(closers.map((close) => close()));
  });

  const upstream = async (label: string, replyText?: string): Promise<Upstream> => {
    const reply = replyText ?? `Served by upstream ${label}.`;
    const mock = await startOpenAIMock({ apiKey: upstreamKey, behavior: { replyText: reply } });
    closers.push(() => mock.close());
    return { label, mock, reply, set: (b) => mock.setBehavior({ replyText: reply, ...b }), calls: () => mock.requests.length };
  };

  /** The usage an upstream reported for a request it answered (its own engine, on the recorded body). */
  const usageOf = (u: Upstream, recorded: RecordedRequest): g.TokenUsage => {
    const usage = openaiUsageOf(answerChat(recorded.body as ChatRequest, { replyText: u.reply }));
    return { input: usage.prompt_tokens, output: usage.completion_tokens };
  };

  interface ProviderOpts {
    regions?: string[];
    retention?: 'zero' | 'standard';
    status?: 'active' | 'inactive';
    resale?: 'approved' | 'pending';
    timeoutMs?: number;
  }

  /** A provider of its own (so its circuit is its own) in front of `u`, or of `baseUrl`. */
  const provider = async (target: Upstream | string, opts: ProviderOpts = {}) => {
    const baseUrl = typeof target === 'string' ? target : target.mock.url;
    const r = await s.admin('POST', '/api/admin/providers', { name: unique('provider'), type: 'openai', baseUrl, apiKey: upstreamKey, ...opts });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return { id: r.body.id as string, credentialId: r.body.credentials[0].id as string };
  };

  interface RouteSpec {
    providerId: string;
    priority?: number;
    weight?: number;
    region?: string | null;
  }

  /** A model routed as given; returns its name, id, default rate id and route id per provider. */
  const model = async (routes: RouteSpec[], opts: { rates?: g.Rates; name?: string } = {}) => {
    const r = await s.admin('POST', '/api/admin/models', {
      name: opts.name ?? unique('model'),
      workload: 'text',
      routes: routes.map((route) => ({ upstreamModel, ...route })),
      rates: opts.rates ?? rates,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const routeOf = new Map<string, string>(r.body.routes.map((route: { id: string; providerId: string }) => [route.providerId, route.id]));
    return { name: r.body.name as string, id: r.body.id as string, rateId: r.body.rateId as string, routeOf: (providerId: string) => routeOf.get(providerId)! };
  };

  const clientFor = (apiKey: string) => new OpenAI({ baseURL: `${s.url}/v1`, apiKey, maxRetries: 0, timeout: 20_000 });

  const tenant = async (credits = '10', key: Record<string, unknown> = {}) => {
    const workspaceId = await g.addWorkspace(s, credits);
    const r = await s.admin('POST', `/api/admin/workspaces/${workspaceId}/keys`, { name: unique('key'), ...key });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return { workspaceId, keyId: r.body.id as string, apiKey: r.body.key as string, client: clientFor(r.body.key), granted: g.micros(credits) };
  };
  type Tenant = Awaited<ReturnType<typeof tenant>>;

  /** A non-streamed call: the answer, its request id and what it was charged. */
  const chat = async (t: Tenant, name: string, extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}) => {
    const { data, response } = await t.client.chat.completions.create({ model: name, messages: prompt, ...extra }).withResponse();
    const charged = response.headers.get('x-tollgate-credits-charged');
    expect(charged).not.toBeNull();
    return { data, requestId: response.headers.get('x-request-id')!, charged: g.micros(charged!) };
  };

  /** A streamed call read to the end. */
  const stream = async (t: Tenant, name: string) => {
    const { data, response } = await t.client.chat.completions.create({ model: name, messages: prompt, stream: true }).withResponse();
    const chunks = await collect(data);
    const requestId = response.headers.get('x-request-id')!;
    return { text: textOf(chunks), chunks, requestId, record: await settledUsage(requestId) };
  };

  /** The usage record with `attempts` as a number (a bigint on some engines). */
  const usageRecord = async (requestId: string) => {
    const row = await g.usageRecord(s, requestId);
    return row && { ...row, attempts: Number(row.attempts) };
  };
  const settledUsage = async (requestId: string) => {
    const row = await g.settledUsage(s, requestId);
    return { ...row, attempts: Number(row.attempts) };
  };

  const failure = async (promise: Promise<unknown>) => {
    const err = await promise.then(
      () => {
        throw new Error('expected the call to fail');
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(APIError);
    return err as APIError;
  };

  const audit = async (requestId: string) => {
    const r = await s.admin('GET', `/api/admin/requests/${requestId}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body;
  };

  const circuitOf = async (credentialId: string) => {
    const r = await s.admin('GET', '/api/admin/routing/health');
    expect(r.status).toBe(200);
    return r.body.data.find((c: { credentialId: string }) => c.credentialId === credentialId) ?? null;
  };

  /** Only `charge` (or nothing) left the workspace, and no hold is pending. */
  const expectCharged = async (t: Tenant, charge: bigint) => {
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - charge, consumed: charge, pending: 0n, available: t.granted - charge });
    expect(await g.usageTransfersTotal(s, t.workspaceId)).toBe(charge);
    expect(await g.pendingHolds(s, t.workspaceId)).toBe(0);
  };

  /** Two upstreams behind a model: A first (priority 1), B as its fallback (priority 2). */
  const primaryAndBackup = async (aOpts: ProviderOpts = {}, aTarget?: string) => {
    const a = await upstream('A');
    const b = await upstream('B');
    const pa = await provider(aTarget ?? a, aOpts);
    const pb = await provider(b);
    const m = await model([
      { providerId: pa.id, priority: 1 },
      { providerId: pb.id, priority: 2 },
    ]);
    return { a, b, pa, pb, m };
  };

  it('keeps a plain route decision short and shows it in full: first route, first attempt, nothing skipped', async () => {
    const { b, pa, m } = await primaryAndBackup();
    const t = await tenant('10');
    const call = await chat(t, m.name);
    const row = await (await g.settledDb(s)).selectFrom('usage_records').select('route_summary').where('id', '=', call.requestId).executeTakeFirstOrThrow();
    const stored = JSON.parse(row.route_summary!);
    expect(stored).toEqual({ plain: 1, order: 'priority', credentialId: pa.credentialId, status: 200, error: null, latencyMs: expect.any(Number) });
    expect((await audit(call.requestId)).routeDecision).toEqual({
      asked: m.name,
      chosen: { model: m.name, routeId: m.routeOf(pa.id), providerId: pa.id, order: 'priority' },
      policy: { allowedRegions: null, zeroRetention: false },
      priceBookId: null,
      attempts: [{ model: m.name, routeId: m.routeOf(pa.id), providerId: pa.id, credentialId: pa.credentialId, status: 200, error: null, latencyMs: stored.latencyMs }],
      fallbacks: [],
      skipped: [],
    });
    expect(b.calls()).toBe(0);
  });

  describe('fallback', () => {
    const kinds: Array<{ kind: string; arrange: (a: Upstream) => Promise<{ aOpts?: ProviderOpts; aTarget?: string }>; attempt: { status: number | null; error: string } }> = [
      { kind: 'HTTP 500', arrange: async (a) => (a.set({ fail: { count: 2, status: 500 } }), {}), attempt: { status: 500, error: 'server_error' } },
      { kind: 'HTTP 503', arrange: async (a) => (a.set({ fail: { count: 2, status: 503 } }), {}), attempt: { status: 503, error: 'server_error' } },
      { kind: 'HTTP 429', arrange: async (a) => (a.set({ fail: { count: 2, status: 429 } }), {}), attempt: { status: 429, error: 'rate_limit_exceeded' } },
      // The operator's credential refused: not the request's fault, so the next route is tried.
      { kind: 'HTTP 401', arrange: async (a) => (a.set({ fail: { count: 2, status: 401 } }), {}), attempt: { status: 401, error: 'invalid_request_error' } },
      {
        kind: 'connection refused',
        arrange: async () => ({ aTarget: `http://127.0.0.1:${await closedPort()}/v1` }),
        attempt: { status: null, error: 'connection_error' },
      },
      {
        // undici checks header timeouts about once a second: the 1 s limit fires between 1 and 2 s.
        kind: 'timeout',
        arrange: async (a) => (a.set({ headersDelayMs: 3500 }), { aOpts: { timeoutMs: 1000 } }),
        attempt: { status: null, error: 'timeout' },
      },
    ];

    it.each(kinds)('falls back from A to B on $kind, streamed or not: B answers, charged once at the rate, A costs nothing', async ({ arrange, attempt }) => {
      const a = await upstream('A');
      const b = await upstream('B');
      const { aOpts, aTarget } = await arrange(a);
      const pa = await provider(aTarget ?? a, aOpts);
      const pb = await provider(b);
      const m = await model([
        { providerId: pa.id, priority: 1 },
        { providerId: pb.id, priority: 2 },
      ]);
      const t = await tenant('10');

      const plain = await chat(t, m.name);
      expect(plain.data.choices[0].message.content).toBe(b.reply);
      const plainUsage = usageOf(b, b.mock.requests[0]);
      expect(plain.charged).toBe(g.expectedCharge(rates, plainUsage));
      expect(plain.data.usage).toMatchObject({ prompt_tokens: plainUsage.input, completion_tokens: plainUsage.output });

      const streamed = await stream(t, m.name);
      expect(streamed.text).toBe(b.reply);
      const streamedUsage = usageOf(b, b.mock.requests[1]);
      expect(streamed.record.charge_micros).toBe(g.expectedCharge(rates, streamedUsage));

      // A was tried once per call (nothing listens in the refused case); B answered each call once.
      expect(a.calls()).toBe(aTarget ? 0 : 2);
      expect(b.calls()).toBe(2);
      await expectCharged(t, plain.charged + streamed.record.charge_micros);

      for (const [requestId, isStream] of [
        [plain.requestId, false],
        [streamed.requestId, true],
      ] as const) {
        const record = await usageRecord(requestId);
        expect(record).toMatchObject({ status: 'ok', provider_id: pb.id, route_id: m.routeOf(pb.id), rate_id: m.rateId, attempts: 2, stream: isStream ? 1 : 0, estimated: 0 });
        const view = await audit(requestId);
        expect(view).toMatchObject({ attempts: 2, providerId: pb.id, status: 'ok' });
        expect(view.routeDecision).toMatchObject({
          asked: m.name,
          chosen: { model: m.name, routeId: m.routeOf(pb.id), providerId: pb.id, order: 'priority' },
          attempts: [
            { model: m.name, routeId: m.routeOf(pa.id), providerId: pa.id, credentialId: pa.credentialId, ...attempt },
            { model: m.name, routeId: m.routeOf(pb.id), providerId: pb.id, credentialId: pb.credentialId, status: 200, error: null },
          ],
          fallbacks: [{ from: m.routeOf(pa.id), reason: attempt.error }],
          skipped: [],
        });
      }
      // Each failure counted against A's credential (two, below the breaker's five).
      expect(await circuitOf(pa.credentialId)).toMatchObject({ providerId: pa.id, state: 'closed', recentFailures: 2, lastError: attempt.status ? `HTTP ${attempt.status} ${attempt.error}` : attempt.error });
    });

    it('falls back across upstream formats: an overloaded Anthropic provider, then an OpenAI one', async () => {
      const anthropic = await startAnthropicMock({ apiKey: upstreamKey, behavior: { fail: { count: 1, status: 529, type: 'overloaded_error' } } });
      closers.push(() => anthropic.close());
      const b = await upstream('B');
      const pa = await s.admin('POST', '/api/admin/providers', { name: unique('anthropic'), type: 'anthropic', baseUrl: anthropic.url, apiKey: upstreamKey });
      expect(pa.status).toBe(201);
      const pb = await provider(b);
      const m = await model([
        { providerId: pa.body.id, priority: 1 },
        { providerId: pb.id, priority: 2 },
      ]);
      const t = await tenant('10');
      const call = await chat(t, m.name);
      expect(call.data.choices[0].message.content).toBe(b.reply);
      expect(call.charged).toBe(g.expectedCharge(rates, usageOf(b, b.mock.requests[0])));
      expect(anthropic.requests).toHaveLength(1);
      expect((await audit(call.requestId)).routeDecision.attempts).toMatchObject([
        { providerId: pa.body.id, status: 529, error: 'overloaded_error' },
        { providerId: pb.id, status: 200, error: null },
      ]);
      await expectCharged(t, call.charged);
    });

    it('does not fall back on a 400: the client gets the 400, B is never called, nothing is charged', async () => {
      const { a, b, pa, m } = await primaryAndBackup();
      const t = await tenant('10');
      for (const streamed of [false, true]) {
        a.set({ fail: { count: 1, status: 400, message: "Invalid value for 'temperature'." } });
        const err = await failure(t.client.chat.completions.create({ model: m.name, messages: prompt, stream: streamed }));
        expect(err).toBeInstanceOf(OpenAI.BadRequestError);
        expect(err.status).toBe(400);
        expect(err.code).toBe('upstream_rejected');
        expect(err.message).toContain("Invalid value for 'temperature'.");
        const requestId = err.headers!.get('x-request-id')!;
        expect(await usageRecord(requestId)).toMatchObject({ status: 'upstream_error', error_code: 'upstream_rejected', charge_micros: 0n, attempts: 1, transfer_id: null });
        expect((await audit(requestId)).routeDecision).toMatchObject({ chosen: null, attempts: [{ providerId: pa.id, status: 400, error: 'invalid_request_error' }], fallbacks: [] });
      }
      expect(a.calls()).toBe(2);
      expect(b.calls()).toBe(0);
      await expectCharged(t, 0n);
      // A request error says nothing about the provider's health.
      expect(await circuitOf(pa.credentialId)).toBeNull();
    });

    it('falls back on a 403 without counting it against the credential: a request can cause one', async () => {
      const { a, b, pa, pb, m } = await primaryAndBackup();
      const t = await tenant('10');
      a.set({ fail: { count: 6, status: 403, message: 'The caller does not have permission.' } });
      for (let i = 0; i < 6; i++) {
        const call = await chat(t, m.name);
        expect(call.data.choices[0].message.content).toBe(b.reply);
        expect((await audit(call.requestId)).routeDecision.attempts).toMatchObject([
          { providerId: pa.id, status: 403 },
          { providerId: pb.id, status: 200, error: null },
        ]);
      }
      expect(a.calls()).toBe(6);
      // Six 403s, more than the breaker's five failures: A's circuit never opened, it never counted.
      expect(await circuitOf(pa.credentialId)).toBeNull();
    });

    it('answers a clean error, charging nothing, when every route fails', async () => {
      const { a, b, m } = await primaryAndBackup();
      const t = await tenant('10');
      a.set({ fail: { count: 2, status: 500 } });
      b.set({ fail: { count: 2, status: 503 } });
      for (const streamed of [false, true]) {
        const err = await failure(t.client.chat.completions.create({ model: m.name, messages: prompt, stream: streamed }));
        expect(err.status).toBe(502);
        expect(err.code).toBe('upstream_error');
        expect(await usageRecord(err.headers!.get('x-request-id')!)).toMatchObject({ status: 'upstream_error', charge_micros: 0n, attempts: 2 });
      }
      expect([a.calls(), b.calls()]).toEqual([2, 2]);
      await expectCharged(t, 0n);
    });
  });

  describe('streams', () => {
    it.each([
      { how: 'an error event before any content', behavior: { streamError: { afterEvents: 0 } }, error: 'stream error server_error' },
      { how: 'a dropped connection before any content', behavior: { dropAfterEvents: 0 }, error: 'stream cut' },
    ])('falls back transparently when A answers 200 then fails with $how', async ({ behavior, error }) => {
      const { a, b, pa, pb, m } = await primaryAndBackup();
      a.set(behavior);
      const t = await tenant('10');
      const streamed = await stream(t, m.name);
      expect(streamed.text).toBe(b.reply);
      expect(streamed.chunks.at(-1)!.choices[0].finish_reason).toBe('stop');
      const charge = g.expectedCharge(rates, usageOf(b, b.mock.requests[0]));
      expect(streamed.record).toMatchObject({ status: 'ok', provider_id: pb.id, charge_micros: charge, attempts: 2, estimated: 0 });
      expect([a.calls(), b.calls()]).toEqual([1, 1]);
      expect((await audit(streamed.requestId)).routeDecision).toMatchObject({
        chosen: { providerId: pb.id },
        attempts: [
          { providerId: pa.id, status: 200, error },
          { providerId: pb.id, status: 200, error: null },
        ],
        fallbacks: [{ from: m.routeOf(pa.id), reason: error }],
      });
      expect(await circuitOf(pa.credentialId)).toMatchObject({ state: 'closed', recentFailures: 1, lastError: error });
      await expectCharged(t, charge);
    });

    it('gets a clean error, not a hung response, when the stream fell back and the backup fails too', async () => {
      const { a, b, m } = await primaryAndBackup();
      a.set({ streamError: { afterEvents: 0 } });
      b.set({ fail: { count: 1, status: 500 } });
      const t = await tenant('10');
      const err = await failure(t.client.chat.completions.create({ model: m.name, messages: prompt, stream: true }));
      expect(err.status).toBe(502);
      expect(err.code).toBe('upstream_error');
      expect(err.headers!.get('x-request-id')).toMatch(/^req_/);
      expect(await usageRecord(err.headers!.get('x-request-id')!)).toMatchObject({ status: 'upstream_error', charge_micros: 0n, attempts: 2 });
      expect([a.calls(), b.calls()]).toEqual([1, 1]);
      await expectCharged(t, 0n);
    });

    for (const wholeStream of [false, true]) {
      it(`does not fall back once content was produced for the client: an error event, billed for the output produced only (${wholeStream ? 'all in one write with the end' : 'event by event'})`, async () => {
        const { a, b, pa, m } = await primaryAndBackup();
        // Events: the role chunk, then two pieces of content, then the error.
        a.set({ wholeStream, streamError: { afterEvents: 3, message: 'The model crashed.' } });
        const t = await tenant('10');
        const { data, response } = await t.client.chat.completions.create({ model: m.name, messages: prompt, stream: true }).withResponse();
        const chunks: OpenAI.ChatCompletionChunk[] = [];
        const err = await failure(
          (async () => {
            for await (const chunk of data) chunks.push(chunk);
          })(),
        );
        expect(err.message).toContain('The model crashed.');
        const received = textOf(chunks);
        expect(received.length).toBeGreaterThan(0);
        expect(a.reply.startsWith(received)).toBe(true);
        expect(received).not.toBe(a.reply);

        const requestId = response.headers.get('x-request-id')!;
        const record = await settledUsage(requestId);
        const produced = { input: promptTokens, output: countTokens(received) };
        const charge = g.expectedCharge(rates, produced);
        expect(record).toMatchObject({
          status: 'upstream_error',
          error_code: 'upstream_stream_error',
          provider_id: pa.id,
          input_tokens: produced.input,
          output_tokens: produced.output,
          estimated: 1,
          charge_micros: charge,
          attempts: 1,
        });
        expect(b.calls()).toBe(0);
        await expectCharged(t, charge);
      });
    }
  });

  it('opens the circuit of a failing provider after 5 failures, shows why, and then skips it without calling it', async () => {
    const { a, b, pa, pb, m } = await primaryAndBackup();
    a.set({ fail: { count: 1000, status: 503 } });
    const t = await tenant('10');
    let total = 0n;
    for (let i = 0; i < 5; i++) {
      const call = await chat(t, m.name);
      expect(call.data.choices[0].message.content).toBe(b.reply);
      total += call.charged;
    }
    expect(a.calls()).toBe(5);
    const circuit = await circuitOf(pa.credentialId);
    expect(circuit).toMatchObject({ object: 'circuit', providerId: pa.id, state: 'open', recentFailures: 5, recentRequests: 5, lastError: 'HTTP 503 server_error' });
    expect(circuit.reason).toBe('5 consecutive failures (last: HTTP 503 server_error)');
    expect(Date.parse(circuit.retryAt) - Date.parse(circuit.openedAt)).toBe(30_000);
    expect(await circuitOf(pb.credentialId)).toMatchObject({ state: 'closed', recentFailures: 0, recentRequests: 5 });

    for (const streamed of [false, true]) {
      const requestId = streamed ? (await stream(t, m.name)).requestId : (await chat(t, m.name)).requestId;
      const record = await usageRecord(requestId);
      expect(record).toMatchObject({ status: 'ok', provider_id: pb.id, attempts: 1 });
      total += record!.charge_micros;
      expect((await audit(requestId)).routeDecision).toMatchObject({
        attempts: [{ providerId: pb.id, status: 200 }],
        fallbacks: [],
        skipped: [{ model: m.name, routeId: m.routeOf(pa.id), providerId: pa.id, reason: 'circuit_open' }],
      });
    }
    // A was not called again; B served every call; the customer paid for B's answers only.
    expect(a.calls()).toBe(5);
    expect(b.calls()).toBe(7);
    await expectCharged(t, total);
  });

  it('never chooses an inactive provider or one not approved for resale, and lists them in the audit', async () => {
    const off = await upstream('off');
    const pending = await upstream('pending');
    const ok = await upstream('ok');
    const pOff = await provider(off, { status: 'inactive' });
    const pPending = await provider(pending, { resale: 'pending' });
    const pOk = await provider(ok);
    const m = await model([
      { providerId: pOff.id, priority: 1 },
      { providerId: pPending.id, priority: 1 },
      { providerId: pOk.id, priority: 2 },
    ]);
    const t = await tenant('10');
    let total = 0n;
    for (let i = 0; i < 4; i++) {
      const call = await chat(t, m.name);
      expect(call.data.choices[0].message.content).toBe(ok.reply);
      total += call.charged;
      const decision = (await audit(call.requestId)).routeDecision;
      expect(decision.attempts).toHaveLength(1);
      expect(decision.skipped).toEqual([
        { model: m.name, routeId: m.routeOf(pOff.id), providerId: pOff.id, reason: 'inactive' },
        { model: m.name, routeId: m.routeOf(pPending.id), providerId: pPending.id, reason: 'resale_pending' },
      ]);
    }
    expect([off.calls(), pending.calls(), ok.calls()]).toEqual([0, 0, 4]);

    // A model that only a pending provider could serve is unavailable, and nothing is called or held.
    const only = await model([{ providerId: pPending.id }]);
    const err = await failure(t.client.chat.completions.create({ model: only.name, messages: prompt }));
    expect(err.status).toBe(503);
    expect(err.code).toBe('no_route');
    expect(pending.calls()).toBe(0);

    // Approving it makes it routable (the catalog is reloaded on change).
    expect((await s.admin('PATCH', `/api/admin/providers/${pPending.id}`, { resale: 'approved' })).status).toBe(200);
    const approved = await chat(t, only.name);
    expect(approved.data.choices[0].message.content).toBe(pending.reply);
    await expectCharged(t, total + approved.charged);
  });

  describe('workspace data policy', () => {
    it('serves a workspace restricted to a region only from compliant routes, and answers 403 naming the policy when none is', async () => {
      const us = await upstream('US');
      const eu = await upstream('EU');
      const pUs = await provider(us, { regions: ['us'] });
      const pEu = await provider(eu, { regions: ['eu'] });
      const m = await model([
        { providerId: pUs.id, priority: 1 },
        { providerId: pEu.id, priority: 2 },
      ]);
      const t = await tenant('10');
      const before = await chat(t, m.name);
      expect(before.data.choices[0].message.content).toBe(us.reply);

      const patched = await s.admin('PATCH', `/api/admin/workspaces/${t.workspaceId}`, { policy: { allowedRegions: ['eu'] } });
      expect(patched.status, JSON.stringify(patched.body)).toBe(200);
      let total = before.charged;
      for (let i = 0; i < 3; i++) {
        const call = await chat(t, m.name);
        expect(call.data.choices[0].message.content).toBe(eu.reply);
        total += call.charged;
        const decision = (await audit(call.requestId)).routeDecision;
        expect(decision).toMatchObject({
          policy: { allowedRegions: ['eu'], zeroRetention: false },
          chosen: { providerId: pEu.id },
          attempts: [{ providerId: pEu.id }],
          skipped: [{ routeId: m.routeOf(pUs.id), providerId: pUs.id, reason: 'region_not_allowed' }],
        });
      }
      // Even when the compliant route fails, the call never falls back to the non-compliant one.
      eu.set({ fail: { count: 1, status: 503 } });
      const failed = await failure(t.client.chat.completions.create({ model: m.name, messages: prompt }));
      expect(failed.status).toBe(502);
      expect([us.calls(), eu.calls()]).toEqual([1, 4]);

      // No route complies: a 403 that names the policy, and no upstream is called.
      await s.admin('PATCH', `/api/admin/workspaces/${t.workspaceId}`, { policy: { allowedRegions: ['ap'] } });
      for (const streamed of [false, true]) {
        const err = await failure(t.client.chat.completions.create({ model: m.name, messages: prompt, stream: streamed }));
        expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
        expect(err.status).toBe(403);
        expect(err.code).toBe('no_compliant_route');
        expect(err.message).toContain('allowed regions: ap');
        expect(await usageRecord(err.headers!.get('x-request-id')!)).toBeUndefined();
      }
      expect([us.calls(), eu.calls()]).toEqual([1, 4]);
      await expectCharged(t, total);
    });

    it("checks a route's own region before its provider's", async () => {
      const multi = await upstream('multi');
      const p = await provider(multi, { regions: ['us', 'eu'] });
      const pinned = await model([{ providerId: p.id, region: 'us' }]);
      const open = await model([{ providerId: p.id }]);
      const t = await tenant('10');
      await s.admin('PATCH', `/api/admin/workspaces/${t.workspaceId}`, { policy: { allowedRegions: ['eu'] } });
      const err = await failure(t.client.chat.completions.create({ model: pinned.name, messages: prompt }));
      expect(err.code).toBe('no_compliant_route');
      expect((await chat(t, open.name)).data.choices[0].message.content).toBe(multi.reply);
      expect(multi.calls()).toBe(1);
    });

    it('serves a zero-retention workspace only from zero-retention providers, and answers 403 when there are none', async () => {
      const keeps = await upstream('keeps');
      const forgets = await upstream('forgets');
      const pKeeps = await provider(keeps, { retention: 'standard' });
      const pForgets = await provider(forgets, { retention: 'zero' });
      const mixed = await model([
        { providerId: pKeeps.id, priority: 1 },
        { providerId: pForgets.id, priority: 2 },
      ]);
      const standardOnly = await model([{ providerId: pKeeps.id }]);
      const t = await tenant('10');
      const patched = await s.admin('PATCH', `/api/admin/workspaces/${t.workspaceId}`, { policy: { zeroRetention: true } });
      expect(patched.status, JSON.stringify(patched.body)).toBe(200);

      const call = await chat(t, mixed.name);
      expect(call.data.choices[0].message.content).toBe(forgets.reply);
      expect((await audit(call.requestId)).routeDecision).toMatchObject({
        policy: { allowedRegions: null, zeroRetention: true },
        skipped: [{ providerId: pKeeps.id, reason: 'retention_not_zero' }],
      });
      const err = await failure(t.client.chat.completions.create({ model: standardOnly.name, messages: prompt }));
      expect(err.status).toBe(403);
      expect(err.code).toBe('no_compliant_route');
      expect(err.message).toContain('zero data retention required');
      expect([keeps.calls(), forgets.calls()]).toEqual([0, 1]);
      await expectCharged(t, call.charged);
    });
  });

  it('prefers priority 1 while it is healthy and splits it 3:1 by weight over 200 calls', async () => {
    const heavy = await upstream('heavy');
    const light = await upstream('light');
    const backup = await upstream('backup');
    const pHeavy = await provider(heavy);
    const pLight = await provider(light);
    const pBackup = await provider(backup);
    const m = await model([
      { providerId: pHeavy.id, priority: 1, weight: 3 },
      { providerId: pLight.id, priority: 1, weight: 1 },
      { providerId: pBackup.id, priority: 2, weight: 1000 },
    ]);
    const t = await tenant('100');
    const n = 200;
    const served = new Map<string, number>();
    for (let batch = 0; batch < n / 10; batch++) {
      const calls = await Promise.all(Array.from({ length: 10 }, () => chat(t, m.name)));
      for (const call of calls) {
        const text = call.data.choices[0].message.content!;
        served.set(text, (served.get(text) ?? 0) + 1);
      }
    }
    const heavyCount = served.get(heavy.reply) ?? 0;
    const lightCount = served.get(light.reply) ?? 0;
    expect(heavyCount + lightCount).toBe(n);
    expect(backup.calls()).toBe(0);
    // Heavy is drawn first with probability 3/4: Binomial(200, 0.75) has mean 150 and standard
    // deviation sqrt(200·0.75·0.25) ≈ 6.1. Within ±30 (about 5σ) fails by chance with p < 10⁻⁶.
    expect(Math.abs(heavyCount - 150)).toBeLessThanOrEqual(30);
    expect([heavy.calls(), light.calls()]).toEqual([heavyCount, lightCount]);
    const decision = (await audit((await chat(t, m.name)).requestId)).routeDecision;
    expect(decision.chosen.order).toBe('weighted');
    expect((await g.usageRecords(s, t.workspaceId)).every((r) => r.status === 'ok' && Number(r.attempts) === 1)).toBe(true);
  });

  it('serves an alias from its first model, falls back to the next, prices each at the serving model, and lists it', async () => {
    const a = await upstream('A');
    const b = await upstream('B');
    const pa = await provider(a);
    const pb = await provider(b);
    const ratesA = { inputPer1M: '1.5', outputPer1M: '6' };
    const ratesB = { inputPer1M: '7.25', outputPer1M: '30.5' };
    const modelA = await model([{ providerId: pa.id }], { rates: ratesA });
    const modelB = await model([{ providerId: pb.id }], { rates: ratesB });
    const smartName = unique('smart');
    const created = await s.admin('POST', '/api/admin/models', { name: smartName, workload: 'text', aliasOf: [modelA.name, modelB.name] });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const t = await tenant('10');

    const listed = (await (await fetch(`${s.url}/v1/models`, { headers: { authorization: `Bearer ${t.apiKey}` } })).json()) as { data: any[] };
    expect(listed.data.find((x) => x.id === smartName)).toMatchObject({ object: 'model', alias_of: [modelA.name, modelB.name], pricing: { unit: 'credits', ...ratesA } });
    expect(listed.data.find((x) => x.id === modelA.name)).not.toHaveProperty('alias_of');
    const sdkList = await t.client.models.list();
    expect(sdkList.data.map((x) => x.id)).toEqual(expect.arrayContaining([smartName, modelA.name, modelB.name]));

    const first = await chat(t, smartName);
    expect(first.data.model).toBe(smartName);
    expect(first.data.choices[0].message.content).toBe(a.reply);
    const firstCharge = g.expectedCharge(ratesA, usageOf(a, a.mock.requests[0]));
    expect(first.charged).toBe(firstCharge);
    expect(await usageRecord(first.requestId)).toMatchObject({ model: smartName, provider_id: pa.id, rate_id: modelA.rateId, attempts: 1 });

    a.set({ fail: { count: 1, status: 500 } });
    const second = await chat(t, smartName);
    expect(second.data.choices[0].message.content).toBe(b.reply);
    const secondCharge = g.expectedCharge(ratesB, usageOf(b, b.mock.requests[0]));
    expect(second.charged).toBe(secondCharge);
    expect(secondCharge).not.toBe(g.expectedCharge(ratesA, usageOf(b, b.mock.requests[0])));
    expect(await usageRecord(second.requestId)).toMatchObject({ model: smartName, provider_id: pb.id, rate_id: modelB.rateId, attempts: 2 });
    expect((await audit(second.requestId)).routeDecision).toMatchObject({
      asked: smartName,
      chosen: { model: modelB.name, providerId: pb.id },
      attempts: [
        { model: modelA.name, providerId: pa.id, status: 500 },
        { model: modelB.name, providerId: pb.id, status: 200 },
      ],
    });
    expect([a.calls(), b.calls()]).toEqual([2, 1]);
    await expectCharged(t, firstCharge + secondCharge);
  });

  it("charges each workspace its own price book's rate for the same model, and shows each its own prices", async () => {
    const u = await upstream('books');
    const p = await provider(u);
    const m = await model([{ providerId: p.id }], { rates });
    const partnerRates = { inputPer1M: '0.75', outputPer1M: '3.0000009' };
    const book = await s.admin('POST', '/api/admin/price-books', { name: unique('partners') });
    expect(book.status, JSON.stringify(book.body)).toBe(201);
    const bookRate = await s.admin('POST', `/api/admin/models/${m.id}/rates`, { priceBookId: book.body.id, rates: partnerRates });
    expect(bookRate.status, JSON.stringify(bookRate.body)).toBe(201);
    // A book with no rate for this model: its workspaces pay the model's default rate.
    const emptyBook = await s.admin('POST', '/api/admin/price-books', { name: unique('empty') });

    const partner = await tenant('10');
    const regular = await tenant('10');
    const other = await tenant('10');
    expect((await s.admin('PATCH', `/api/admin/workspaces/${partner.workspaceId}`, { priceBookId: book.body.id })).status).toBe(200);
    expect((await s.admin('PATCH', `/api/admin/workspaces/${other.workspaceId}`, { priceBookId: emptyBook.body.id })).status).toBe(200);

    const expectations: Array<[Tenant, g.Rates, string]> = [
      [partner, partnerRates, bookRate.body.id],
      [regular, rates, m.rateId],
      [other, rates, m.rateId],
    ];
    for (const [t, expected, rateId] of expectations) {
      const before = u.calls();
      const call = await chat(t, m.name);
      const charge = g.expectedCharge(expected, usageOf(u, u.mock.requests[before]));
      expect(call.charged).toBe(charge);
      expect(await usageRecord(call.requestId)).toMatchObject({ workspace_id: t.workspaceId, rate_id: rateId, charge_micros: charge });
      await expectCharged(t, charge);
      const listed = (await t.client.models.list()).data.find((x) => x.id === m.name) as unknown as { pricing: Record<string, string> };
      expect(listed.pricing).toEqual({ unit: 'credits', ...expected });
    }
    // Same usage, different books: the partner really paid less.
    expect((await g.balanceOf(s, partner.workspaceId)).consumed).toBeLessThan((await g.balanceOf(s, regular.workspaceId)).consumed);
  });

  it('never lets concurrent calls spend more than a key budget: the rest get 402 key_budget_exceeded', async () => {
    // A reply longer than the output allowance, cut to it: every admitted call costs exactly its hold.
    const u = await upstream('budget', 'word '.repeat(200).trim());
    const p = await provider(u);
    const flat = { inputPer1M: '1', outputPer1M: '1' }; // 1 micro-credit per token
    const m = await model([{ providerId: p.id }], { rates: flat });
    const maxTokens = 40;
    const hold = g.expectedCharge(flat, { input: promptTokens, output: maxTokens });
    // Three full calls, and 10 micro-credits over: too little for even a strict call (its input plus
    // 16 output tokens), so at most three calls can ever be admitted.
    const budget = 3n * hold + 10n;
    const t = await tenant('10', { budget: { period: 'day', credits: g.credits(budget) } });

    const n = 20;
    const results = await Promise.allSettled(Array.from({ length: n }, () => chat(t, m.name, { max_tokens: maxTokens })));
    const admitted = results.filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<Awaited<ReturnType<typeof chat>>>).value);
    const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as APIError);
    expect(admitted.length + refused.length).toBe(n);
    expect(admitted.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    for (const err of refused) {
      expect(err).toBeInstanceOf(APIError);
      expect(err.status).toBe(402);
      expect(err.code).toBe('key_budget_exceeded');
    }
    const spent = admitted.reduce((sum, call) => sum + call.charged, 0n);
    for (const call of admitted) expect(call.charged).toBe(hold);
    expect(spent).toBeLessThanOrEqual(budget);
    expect(admitted.length).toBeLessThanOrEqual(3);
    expect(u.calls()).toBe(admitted.length);

    const db = await g.settledDb(s);
    expect(await verifyLedger(db)).toEqual([]);
    const counters = await db.selectFrom('budget_counters').selectAll().where('key_id', '=', t.keyId).execute();
    expect(counters).toHaveLength(1);
    expect(BigInt(counters[0].posted_micros as bigint)).toBe(spent);
    expect(BigInt(counters[0].pending_micros as bigint)).toBe(0n);
    await expectCharged(t, spent);
    const view = (await s.admin('GET', `/api/admin/workspaces/${t.workspaceId}/keys/${t.keyId}`)).body;
    expect(view.budgetUsage).toMatchObject({ period: 'day', credits: g.credits(budget), spent: g.credits(spent), pending: '0', remaining: g.credits(budget - spent) });
    expect(view.spend).toBe(g.credits(spent));
    expect(view.requests).toBe(admitted.length);
  });
});

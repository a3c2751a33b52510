// The money path under stress: clients that leave mid-stream, upstreams that drop, fail inside a
// stream or fail before producing anything, many concurrent calls against a balance that covers a
// few, and the strict near-limit admission. What is billed is always the input plus the output
// actually produced (counted), never error text; nothing is billed when nothing was produced; and
// the total charged never exceeds what was available.
import OpenAI, { APIError } from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { openaiMockName, startOpenAIMock, type OpenAIMock } from '../upstreams/openai.ts';
import { startAnthropicMock, wordsPerTextDelta, type AnthropicMock } from '../upstreams/anthropic.ts';
import { answerChat, promptTokensOf } from '../../src/providers/sandbox/engine.ts';
import { countTokens } from '../../src/providers/tokenizer.ts';
import type { ChatRequest } from '../../src/providers/types.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import * as g from '../helpers/gateway.ts';
import pg from 'pg';

const upstreamKey = 'sk-mock-billing-0123456789abcdef';
const rates = g.fractionalRates;
/** Expensive rates for the concurrency and strict tests, so a few calls exhaust a balance. */
const dearRates = { inputPer1M: '1000.0000003', outputPer1M: '3000.0000007' };
/** A long answer (about 400 tokens), so a cut stream has produced far less than the whole. */
const longReply = Array.from({ length: 40 }, (_, i) => `Sentence ${i + 1} of the long answer, told slowly.`).join(' ');
const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Tell me a long story.' }];
const inputTokens = promptTokensOf({ messages: messages as ChatRequest['messages'] });

/** The content pieces the OpenAI mock streams for `longReply` (one SSE event each, after the role chunk). */
const openaiPieces = answerChat({ model: 'm', messages: messages as ChatRequest['messages'] }, { name: openaiMockName, replyText: longReply }).pieces;
/** The text deltas the Anthropic mock streams for `longReply` (after message_start, ping and content_block_start). */
const anthropicPieces = (() => {
  const words = longReply.split(/(?<=\s)/);
  const pieces: string[] = [];
  for (let i = 0; i < words.length; i += wordsPerTextDelta) pieces.push(words.slice(i, i + wordsPerTextDelta).join(''));
  return pieces;
})();
const fullTokens = countTokens(longReply);
/** Token counts of the first k pieces joined, for every k. */
const prefixCounts = (pieces: string[]) => pieces.map((_, k) => countTokens(pieces.slice(0, k).join('')));

// Every call is admitted against a balance lease by default (one ledger hold per call when they
// are turned off): the same exact billing either way.
const modes = [...engines.map((engine) => ({ engine, leases: 'on' })), { engine: 'sqlite' as const, leases: 'off' }];

describe.each(modes)('billing under disconnects, failures and concurrency on $engine, balance leases $leases', ({ engine, leases }) => {
  let s: TestServer;
  let mock: OpenAIMock;
  let anthropicMock: AnthropicMock;
  let setup: g.GatewaySetup;
  let claude: string;
  let dear: string;

  beforeAll(async () => {
    mock = await startOpenAIMock({ apiKey: upstreamKey });
    anthropicMock = await startAnthropicMock({ apiKey: upstreamKey });
    s = await startTestServer(engine, { BALANCE_LEASES: leases === 'on' ? 'true' : 'false' });
    setup = await g.setupGateway(s, { provider: { type: 'openai-compatible', baseUrl: mock.url, apiKey: upstreamKey }, upstreamModel: 'gpt-4o-mini' });
    const anthropicProvider = await g.addProvider(s, { type: 'anthropic', baseUrl: anthropicMock.url, apiKey: upstreamKey });
    claude = (await g.addModel(s, { providerId: anthropicProvider.id, upstreamModel: 'claude-mock-1' })).name;
    dear = (await g.addModel(s, { providerId: setup.providerId, upstreamModel: 'gpt-dear', rates: dearRates })).name;
    expect(fullTokens).toBeGreaterThan(300);
  });
  afterAll(async () => {
    await s?.close();
    await mock?.close();
    await anthropicMock?.close();
  });

  const tenant = async (credits: string) => {
    const workspaceId = await g.addWorkspace(s, credits);
    const { key } = await g.addKey(s, workspaceId);
    return {
      workspaceId,
      granted: g.micros(credits),
      openai: new OpenAI({ baseURL: `${s.url}/v1`, apiKey: key, maxRetries: 0 }),
      anthropic: new Anthropic({ baseURL: s.url, apiKey: key, maxRetries: 0 }),
    };
  };

  /** A provider and model of their own on the OpenAI mock, so the failures a test injects touch no other test's circuit. */
  const isolatedModel = async () => {
    const provider = await g.addProvider(s, { type: 'openai-compatible', baseUrl: mock.url, apiKey: upstreamKey });
    return (await g.addModel(s, { providerId: provider.id, upstreamModel: 'gpt-4o-mini' })).name;
  };

  /** Streams a call the upstream cuts short: the text the client received and the error it got. */
  const streamUntilError = async (t: Awaited<ReturnType<typeof tenant>>, model: string) => {
    const { data, response } = await t.openai.chat.completions.create({ model, messages, stream: true }).withResponse();
    let received = '';
    const err = await (async () => {
      for await (const chunk of data) received += chunk.choices[0]?.delta.content ?? '';
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    return { received, message: (err as APIError).message, requestId: response.headers.get('x-request-id')! };
  };

  /** The call is recorded as failed with `errorCode`, billed for its input and the output produced (counted), and nothing stays pending. */
  const expectBilledForProduced = async (t: Awaited<ReturnType<typeof tenant>>, requestId: string, errorCode: string, produced: string) => {
    const record = await g.settledUsage(s, requestId);
    expect(record).toMatchObject({ status: 'upstream_error', error_code: errorCode, estimated: 1, input_tokens: inputTokens, output_tokens: countTokens(produced) });
    const charge = g.expectedCharge(rates, { input: inputTokens, output: countTokens(produced) });
    expect(record.charge_micros).toBe(charge);
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - charge, pending: 0n });
  };

  it('bills a client that disconnects mid-stream for the input and the output produced so far, and cancels the upstream', async () => {
    const t = await tenant('10');
    mock.setBehavior({ replyText: longReply, eventDelayMs: 100 });
    try {
      const controller = new AbortController();
      const before = mock.requests.length;
      const { data, response } = await t.openai.chat.completions.create({ model: setup.model, messages, stream: true }, { signal: controller.signal }).withResponse();
      let received = '';
      let pieces = 0;
      try {
        for await (const chunk of data) {
          const text = chunk.choices[0]?.delta.content ?? '';
          if (text) {
            received += text;
            if (++pieces === 6) {
              controller.abort();
              break;
            }
          }
        }
      } catch (err) {
        expect(err).toBeInstanceOf(OpenAI.APIUserAbortError);
      }
      expect(received).toBe(openaiPieces.slice(0, 6).join(''));

      const upstream = mock.requests[before];
      await g.eventually(() => upstream.end !== undefined, 'the upstream connection ends');
      expect(upstream.end).toBe('closed');
      const roleChunk = 1;
      const totalEvents = roleChunk + openaiPieces.length + 3; // + finish chunk, usage chunk, [DONE]
      expect(upstream.eventsWritten).toBeLessThan(totalEvents / 2);

      const record = await g.settledUsage(s, response.headers.get('x-request-id')!);
      expect(record).toMatchObject({ status: 'client_disconnected', error_code: 'client_disconnected', estimated: 1, stream: 1, input_tokens: inputTokens });
      // Exactly the tokens of the pieces the gateway read: at least what the client got, at most what the mock wrote.
      const counts = prefixCounts(openaiPieces);
      const candidates = counts.slice(pieces, upstream.eventsWritten - roleChunk + 1);
      expect(candidates).toContain(record.output_tokens);
      expect(record.output_tokens).toBeGreaterThanOrEqual(countTokens(received));
      expect(record.output_tokens).toBeLessThan(fullTokens / 2);
      const charge = g.expectedCharge(rates, { input: inputTokens, output: record.output_tokens });
      expect(record.charge_micros).toBe(charge);
      expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - charge, pending: 0n, consumed: charge });
    } finally {
      mock.setBehavior({});
    }
    // The gateway carries on.
    const after = await t.openai.chat.completions.create({ model: setup.model, messages });
    expect(after.choices[0].message.content).toContain('Mock OpenAI reply to');
  });

  it('bills an Anthropic client that disconnects mid-stream the same way', async () => {
    const t = await tenant('10');
    anthropicMock.setBehavior({ replyText: longReply, eventDelayMs: 100 });
    try {
      const before = anthropicMock.requests.length;
      const stream = t.anthropic.messages.stream({ model: claude, max_tokens: 2000, messages: [{ role: 'user', content: 'Tell me a long story.' }] });
      const { response } = await stream.withResponse();
      let received = '';
      let pieces = 0;
      await new Promise<void>((resolve) => {
        stream.on('text', (text) => {
          if (pieces >= 5) return; // anything already parsed when the client gave up
          received += text;
          if (++pieces === 5) {
            stream.abort();
            resolve();
          }
        });
        stream.on('error', () => resolve());
        stream.on('abort', () => resolve());
      });
      await stream.done().catch(() => undefined);
      expect(received).toBe(anthropicPieces.slice(0, 5).join(''));

      const upstream = anthropicMock.requests[before];
      await g.eventually(() => upstream.end !== undefined, 'the upstream connection ends');
      expect(upstream.end).toBe('closed');
      const preamble = 3; // message_start, ping, content_block_start
      expect(upstream.eventsWritten).toBeLessThan((preamble + anthropicPieces.length) / 2);

      // The input is what the upstream reported in message_start: its own count of the request.
      const direct = (await (
        await fetch(`${anthropicMock.url}/v1/messages`, {
          method: 'POST',
          headers: { 'x-api-key': upstreamKey, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
          body: JSON.stringify({ ...(upstream.body as object), stream: false }),
        })
      ).json()) as Anthropic.Message;
      anthropicMock.requests.pop();

      const record = await g.settledUsage(s, response.headers.get('x-request-id')!);
      expect(record).toMatchObject({ endpoint: 'messages', status: 'client_disconnected', estimated: 1, input_tokens: direct.usage.input_tokens });
      expect(prefixCounts(anthropicPieces).slice(pieces, upstream.eventsWritten - preamble + 1)).toContain(record.output_tokens);
      expect(record.output_tokens).toBeLessThan(fullTokens / 2);
      const charge = g.expectedCharge(rates, { input: direct.usage.input_tokens, output: record.output_tokens });
      expect(record.charge_micros).toBe(charge);
      expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - charge, pending: 0n });
    } finally {
      anthropicMock.setBehavior({});
    }
  });

  it('charges nothing when a client leaves a non-streamed call before the upstream answered', async () => {
    const t = await tenant('10');
    mock.setBehavior({ headersDelayMs: 3000 });
    try {
      const controller = new AbortController();
      const before = mock.requests.length;
      const call = t.openai.chat.completions.create({ model: setup.model, messages }, { signal: controller.signal }).catch((e: unknown) => e);
      await g.eventually(() => mock.requests.length > before, 'the upstream is called');
      controller.abort();
      expect(await call).toBeInstanceOf(OpenAI.APIUserAbortError);
      const upstream = mock.requests[before];
      await g.eventually(() => upstream.end !== undefined, 'the upstream connection ends');
      expect(upstream.end).toBe('closed');
      await g.eventually(async () => (await g.usageRecords(s, t.workspaceId)).length === 1, 'the call is recorded');
      expect((await g.usageRecords(s, t.workspaceId))[0]).toMatchObject({ status: 'upstream_error', charge_micros: 0n, transfer_id: null });
      expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, pending: 0n });
    } finally {
      mock.setBehavior({});
    }
  });

  it('bills an upstream that drops the socket mid-stream for the input and produced output, and tells the client', async () => {
    const t = await tenant('10');
    const model = await isolatedModel();
    const dropAfter = 20;
    mock.setBehavior({ replyText: longReply, dropAfterEvents: dropAfter });
    try {
      const { received, message, requestId } = await streamUntilError(t, model);
      expect(message).toContain('closed the stream before it ended');
      // Every piece the upstream wrote before the drop reached the client.
      const produced = openaiPieces.slice(0, dropAfter - 1).join('');
      expect(received).toBe(produced);
      await expectBilledForProduced(t, requestId, 'upstream_stream_cut', produced);
    } finally {
      mock.setBehavior({});
    }
    expect((await t.openai.chat.completions.create({ model, messages })).choices[0].finish_reason).toBe('stop');
  });

  for (const wholeStream of [false, true]) {
    it(`bills an in-stream upstream error for the output produced before it, and passes the error on (${wholeStream ? 'all in one write with the end' : 'event by event'})`, async () => {
      const t = await tenant('10');
      const model = await isolatedModel();
      const errorAfter = 10;
      mock.setBehavior({ replyText: longReply, wholeStream, streamError: { afterEvents: errorAfter, message: 'The server had an error while processing your request.' } });
      try {
        const { received, message, requestId } = await streamUntilError(t, model);
        expect(message).toContain('The server had an error while processing your request.');
        const produced = openaiPieces.slice(0, errorAfter - 1).join('');
        expect(received).toBe(produced);
        await expectBilledForProduced(t, requestId, 'upstream_stream_error', produced);
      } finally {
        mock.setBehavior({});
      }
    });
  }

  it('delivers a stream that arrives whole with its end, and bills it as the same call unstreamed', async () => {
    const t = await tenant('10');
    const model = await isolatedModel();
    mock.setBehavior({ replyText: longReply, wholeStream: true });
    try {
      const { data, response } = await t.openai.chat.completions.create({ model, messages, stream: true, stream_options: { include_usage: true } }).withResponse();
      let received = '';
      let finish: string | null = null;
      let usage: OpenAI.CompletionUsage | null | undefined = null;
      for await (const chunk of data) {
        received += chunk.choices[0]?.delta.content ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
        if (chunk.usage) usage = chunk.usage;
      }
      expect(received).toBe(longReply);
      expect(finish).toBe('stop');
      expect(usage?.completion_tokens).toBe(fullTokens);
      const streamed = await g.settledUsage(s, response.headers.get('x-request-id')!);
      const plain = await t.openai.chat.completions.create({ model, messages }).withResponse();
      const unstreamed = await g.settledUsage(s, plain.response.headers.get('x-request-id')!);
      expect(streamed).toMatchObject({ status: 'ok', estimated: 0, output_tokens: fullTokens });
      expect(streamed.charge_micros).toBe(unstreamed.charge_micros);
      expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - 2n * streamed.charge_micros, pending: 0n });
    } finally {
      mock.setBehavior({});
    }
  });

  it('reads a non-streamed answer of unknown length like one that says its length, and refuses one over 64 MiB without charging', async () => {
    const t = await tenant('10');
    const model = await isolatedModel();
    const ask = () => t.openai.chat.completions.create({ model, messages, max_tokens: 50 }).withResponse();
    try {
      const sized = await ask();
      mock.setBehavior({ chunked: true });
      const chunked = await ask();
      expect(chunked.data.choices[0].message.content).toBe(sized.data.choices[0].message.content);
      expect(chunked.response.headers.get('x-tollgate-credits-charged')).toBe(sized.response.headers.get('x-tollgate-credits-charged'));
      const charged = g.micros(sized.response.headers.get('x-tollgate-credits-charged')!);
      expect(charged).toBeGreaterThan(0n);
      // Over the limit, whether it says so up front or only as it arrives: a 502, nothing charged.
      const before = await g.balanceOf(s, t.workspaceId);
      for (const chunkedHuge of [false, true]) {
        mock.setBehavior({ chunked: chunkedHuge, padChars: 64 * 1024 * 1024 + 1 });
        const err = (await ask().catch((e: unknown) => e)) as APIError;
        expect(err, `chunked: ${chunkedHuge}`).toBeInstanceOf(OpenAI.APIError);
        expect(err.status).toBe(502);
        const record = await g.settledUsage(s, err.headers!.get('x-request-id')!);
        expect(record).toMatchObject({ status: 'upstream_error', error_code: 'upstream_read_failed', charge_micros: 0n, transfer_id: null });
      }
      expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: before.balance, pending: 0n });
      expect(before.balance).toBe(t.granted - 2n * charged);
    } finally {
      mock.setBehavior({});
    }
  });

  it('charges nothing (voids the hold) when the upstream fails before producing any output', async () => {
    const t = await tenant('10');
    const model = await isolatedModel();
    const cases: Array<{ behavior: Parameters<OpenAIMock['setBehavior']>[0]; headWritten: boolean }> = [
      { behavior: { streamError: { afterEvents: 0 } }, headWritten: false },
      { behavior: { dropAfterEvents: 0 }, headWritten: false },
      { behavior: { streamError: { afterEvents: 1 } }, headWritten: true }, // after the role chunk, before any content
      { behavior: { dropAfterEvents: 1 }, headWritten: true },
    ];
    for (const { behavior, headWritten } of cases) {
      mock.setBehavior({ ...behavior, replyText: longReply });
      let requestId: string;
      if (headWritten) {
        const { data, response } = await t.openai.chat.completions.create({ model, messages, stream: true }).withResponse();
        requestId = response.headers.get('x-request-id')!;
        const err = await (async () => {
          for await (const chunk of data) expect(chunk.choices[0]?.delta.content ?? '').toBe('');
        })().catch((e: unknown) => e);
        expect(err, JSON.stringify(behavior)).toBeInstanceOf(OpenAI.APIError);
      } else {
        const err = (await t.openai.chat.completions.create({ model, messages, stream: true }).catch((e: unknown) => e)) as APIError;
        expect(err, JSON.stringify(behavior)).toBeInstanceOf(OpenAI.InternalServerError);
        expect(err.status).toBe(502);
        requestId = err.headers!.get('x-request-id')!;
      }
      const record = await g.settledUsage(s, requestId);
      expect(record, JSON.stringify(behavior)).toMatchObject({ status: 'upstream_error', charge_micros: 0n, transfer_id: null, output_tokens: 0 });
    }
    // The Anthropic upstream reports the input in message_start, then drops before any text.
    anthropicMock.setBehavior({ dropAfterEvents: 2 });
    try {
      const err = await t.anthropic.messages.stream({ model: claude, max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] }).finalMessage().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.APIError);
    } finally {
      anthropicMock.setBehavior({});
      mock.setBehavior({});
    }
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, pending: 0n, consumed: 0n });
    expect(await g.pendingHolds(s, t.workspaceId)).toBe(0);
    const records = await g.usageRecords(s, t.workspaceId);
    expect(records).toHaveLength(cases.length + 1);
    expect(records.every((r) => r.charge_micros === 0n && r.status === 'upstream_error')).toBe(true);
  });

  it('answers before the settlement commits, and a call near the limit right after still gets its whole allowance', async () => {
    // A balance that covers one call's worst case (1,000 output tokens) and a half: each next call
    // comes while the last one's settlement may not have committed, still reserving that worst
    // case. Its hold queues behind the settlement (same account, same commit lane), so it sees
    // the credits the last call did not use rather than going strict or refusing.
    const worst = g.expectedCharge(dearRates, { input: inputTokens, output: 1000 });
    const t = await tenant(g.credits(worst + worst / 2n));
    const ask = { model: dear, messages, max_tokens: 1000 };
    mock.setBehavior({ replyText: 'Short.' });
    try {
      const charges: bigint[] = [];
      for (let i = 0; i < 3; i++) {
        const before = mock.requests.length;
        const { response } = await t.openai.chat.completions.create(ask).withResponse();
        charges.push(g.micros(response.headers.get('x-tollgate-credits-charged')!));
        expect((mock.requests[before].body as { max_tokens?: number }).max_tokens, `call ${i + 1}`).toBe(1000);
      }
      const charged = charges.reduce((a, b) => a + b, 0n);
      expect(charges[0]).toBe(g.expectedCharge(dearRates, { input: inputTokens, output: countTokens('Short.') }));
      expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - charged, pending: 0n, consumed: charged });
      expect(await g.usageTransfersTotal(s, t.workspaceId)).toBe(charged);
    } finally {
      mock.setBehavior({});
    }
  });

  // PostgreSQL only: a table lock held by another connection blocks the settlement without
  // blocking this process (SQLite's lock would stall the thread in its busy handler).
  if (engine === 'postgres' && leases === 'on') it('answers a call while the store cannot take its settlement, and settles it once it can', async () => {
    const t = await tenant('10');
    // The first call creates the workspace's balance lease; the next is admitted from it in memory.
    const first = await t.openai.chat.completions.create({ model: setup.model, messages }).withResponse();
    const firstCharge = g.micros(first.response.headers.get('x-tollgate-credits-charged')!);
    const locker = new pg.Client({ connectionString: s.config.databaseUrl });
    await locker.connect();
    try {
      await g.settledDb(s);
      await locker.query('begin');
      // Blocks every write to the accounts table (a settlement updates the workspace's account).
      await locker.query('lock table accounts in share row exclusive mode');
      const { response } = await t.openai.chat.completions.create({ model: setup.model, messages }).withResponse();
      const charge = g.micros(response.headers.get('x-tollgate-credits-charged')!);
      const requestId = response.headers.get('x-request-id')!;
      expect(charge).toBeGreaterThan(0n);
      expect(s.running.ctx.settlements.has(t.workspaceId)).toBe(true);
      const committed = await locker.query('select count(*)::int as n from usage_records where id = $1', [requestId]);
      expect(committed.rows[0].n).toBe(0);
      await locker.query('rollback');
      expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted - firstCharge - charge, pending: 0n });
      expect(await g.usageRecord(s, requestId)).toMatchObject({ status: 'ok', charge_micros: charge });
      expect(s.running.ctx.settlements.has(t.workspaceId)).toBe(false);
    } finally {
      await locker.end();
    }
  });

  it('gives the credits back at once when the provider adapter refuses a request after admission', async () => {
    const t = await tenant('10');
    // Anthropic's format has no `n`: the adapter refuses it while building the upstream request.
    const err = (await t.openai.chat.completions.create({ model: claude, messages, n: 2 }).catch((e: unknown) => e)) as APIError;
    expect(err).toBeInstanceOf(APIError);
    expect(err.status).toBe(400);
    expect(await g.pendingHolds(s, t.workspaceId)).toBe(0);
    expect(s.running.ctx.settlements.inFlight).toBe(0);
    expect((await g.usageRecords(s, t.workspaceId)).map((r) => r.status)).toEqual(['upstream_error']);
    expect(await g.balanceOf(s, t.workspaceId)).toMatchObject({ balance: t.granted, consumed: 0n });
  });

  it('never charges more than was available when many concurrent calls race for a balance that covers a few', async () => {
    const maxTokens = 20;
    const worst = g.expectedCharge(dearRates, { input: inputTokens, output: maxTokens });
    // Five worst cases, and then enough for the input and 18 output tokens: whatever order the
    // calls race in, five are admitted whole, one more near the limit with 18 tokens, the rest 402.
    const tail = g.expectedCharge(dearRates, { input: inputTokens, output: 18 });
    const granted = 5n * worst + tail;
    const strictTokens = g.affordableOutput(dearRates, inputTokens, tail);
    expect(strictTokens).toBe(18);
    const t = await tenant(g.credits(granted));
    const before = mock.requests.length;
    mock.setBehavior({ replyText: longReply, headersDelayMs: 150 });
    const calls = 40;
    let results: Array<{ status: number; charge: bigint; requestId: string | null }>;
    try {
      results = await Promise.all(
        Array.from({ length: calls }, async (_, i) => {
          const stream = i % 2 === 1;
          try {
            if (!stream) {
              const { response } = await t.openai.chat.completions.create({ model: dear, messages, max_tokens: maxTokens }).withResponse();
              return { status: 200, charge: g.micros(response.headers.get('x-tollgate-credits-charged')!), requestId: response.headers.get('x-request-id') };
            }
            const { data, response } = await t.openai.chat.completions.create({ model: dear, messages, max_tokens: maxTokens, stream: true }).withResponse();
            for await (const _chunk of data) void _chunk;
            const requestId = response.headers.get('x-request-id')!;
            return { status: 200, charge: (await g.settledUsage(s, requestId)).charge_micros, requestId };
          } catch (err) {
            if (!(err instanceof OpenAI.APIError)) throw err;
            return { status: err.status ?? -1, charge: 0n, requestId: null };
          }
        }),
      );
    } finally {
      mock.setBehavior({});
    }
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 402);
    expect(ok.length + refused.length, JSON.stringify(results.map((r) => r.status))).toBe(calls);
    expect(ok.length).toBe(6);
    expect(refused.length).toBe(calls - 6);

    const charged = ok.reduce((sum, r) => sum + r.charge, 0n);
    expect(charged).toBeLessThanOrEqual(granted);
    for (const r of ok) expect(r.charge).toBeLessThanOrEqual(worst);
    const b = await g.balanceOf(s, t.workspaceId);
    expect(b.balance).toBeGreaterThanOrEqual(0n);
    expect(b.pending).toBe(0n);
    expect(b.consumed).toBe(charged);
    expect(granted - b.balance).toBe(charged);
    expect(await g.usageTransfersTotal(s, t.workspaceId)).toBe(charged);
    expect(await g.pendingHolds(s, t.workspaceId)).toBe(0);

    // One upstream request per admitted call, none for a refused one; each asked for no more than max_tokens.
    const upstream = mock.requests.slice(before);
    expect(upstream).toHaveLength(ok.length);
    expect(upstream.map((r) => (r.body as { max_tokens: number }).max_tokens).sort()).toEqual([strictTokens, maxTokens, maxTokens, maxTokens, maxTokens, maxTokens]);
    expect(charged).toBe(5n * worst + g.expectedCharge(dearRates, { input: inputTokens, output: strictTokens }));
    const records = await g.usageRecords(s, t.workspaceId);
    expect(records.map((r) => r.id).sort()).toEqual(ok.map((r) => r.requestId).sort());
    for (const r of records) expect(r.charge_micros).toBe(g.expectedCharge(dearRates, { input: r.input_tokens, output: r.output_tokens }));
    expect(await verifyLedger(await g.settledDb(s))).toEqual([]);
  });

  it('admits a call near the limit with the output it can pay for, sends that limit upstream, and never overdraws', async () => {
    const link = 'https://pay.example.test/strict';
    expect((await s.admin('PATCH', '/api/admin/settings', { creditPaymentLink: link })).status).toBe(200);
    mock.setBehavior({ replyText: longReply });
    const asks: Array<{ door: 'openai' | 'anthropic'; max_tokens?: number; max_completion_tokens?: number; stream?: boolean }> = [
      { door: 'openai', max_tokens: 1000 },
      { door: 'openai', max_completion_tokens: 1000, stream: true },
      { door: 'openai' }, // no limit asked: the model's default allowance, reduced all the same
      { door: 'anthropic', max_tokens: 1000 },
      { door: 'anthropic', max_tokens: 1000, stream: true },
    ];
    try {
      for (const { door, ...ask } of asks) {
        const what = JSON.stringify({ door, ...ask });
        const t = await tenant('0.2');
        const available = (await g.balanceOf(s, t.workspaceId)).available;
        const full = g.expectedCharge(dearRates, { input: inputTokens, output: ask.max_tokens ?? ask.max_completion_tokens ?? 4096 });
        expect(full, 'the whole allowance is not affordable').toBeGreaterThan(available);
        const affordable = g.affordableOutput(dearRates, inputTokens, available);
        expect(affordable).toBeGreaterThanOrEqual(16);

        const before = mock.requests.length;
        let requestId: string;
        if (door === 'openai') {
          const { data, response } = await t.openai.chat.completions.create({ model: dear, messages, ...ask } as OpenAI.ChatCompletionCreateParamsNonStreaming).withResponse();
          if (ask.stream) for await (const _chunk of data as unknown as AsyncIterable<unknown>) void _chunk;
          else expect(data.choices[0].finish_reason).toBe('length');
          requestId = response.headers.get('x-request-id')!;
        } else {
          const params = { model: dear, max_tokens: ask.max_tokens!, messages: [{ role: 'user' as const, content: 'Tell me a long story.' }] };
          if (ask.stream) {
            const stream = t.anthropic.messages.stream(params);
            requestId = (await stream.withResponse()).response.headers.get('x-request-id')!;
            expect((await stream.finalMessage()).stop_reason).toBe('max_tokens');
          } else {
            const { data, response } = await t.anthropic.messages.create(params).withResponse();
            expect(data.stop_reason).toBe('max_tokens');
            requestId = response.headers.get('x-request-id')!;
          }
        }
        const sent = mock.requests[before].body as { max_tokens?: number; max_completion_tokens?: number };
        // The reduced allowance replaces the limit the client asked for, in the field it used.
        if (ask.max_completion_tokens !== undefined) {
          expect(sent.max_completion_tokens, what).toBe(affordable);
          expect(sent.max_tokens, what).toBeUndefined();
        } else {
          expect(sent.max_tokens, what).toBe(affordable);
        }
        const record = await g.settledUsage(s, requestId);
        expect(record, what).toMatchObject({ status: 'ok', input_tokens: inputTokens, output_tokens: affordable });
        const charge = g.expectedCharge(dearRates, { input: inputTokens, output: affordable });
        expect(record.charge_micros).toBe(charge);
        expect(charge).toBeLessThanOrEqual(available);
        const after = await g.balanceOf(s, t.workspaceId);
        expect(after).toMatchObject({ balance: available - charge, pending: 0n });
        expect(after.balance).toBeGreaterThanOrEqual(0n);

        // What is left pays for less than the smallest strict allowance: a 402, and no upstream call.
        expect(g.affordableOutput(dearRates, inputTokens, after.available)).toBeLessThan(16);
        const count = mock.requests.length;
        const err = (await (door === 'openai'
          ? t.openai.chat.completions.create({ model: dear, messages, max_tokens: 1000 })
          : t.anthropic.messages.create({ model: dear, max_tokens: 1000, messages: [{ role: 'user', content: 'Tell me a long story.' }] })
        ).catch((e: unknown) => e)) as { status?: number; message: string };
        expect(err.status).toBe(402);
        expect(err.message).toContain(link);
        expect(mock.requests.length).toBe(count);
        expect((await g.balanceOf(s, t.workspaceId)).balance).toBe(after.balance);
      }
    } finally {
      mock.setBehavior({});
    }
    expect(await verifyLedger(await g.settledDb(s))).toEqual([]);
  });
});

describe('SETTLE_BEFORE_ANSWER=true', () => {
  let s: TestServer;
  let mock: OpenAIMock;
  let setup: g.GatewaySetup;

  beforeAll(async () => {
    mock = await startOpenAIMock({ apiKey: upstreamKey });
    s = await startTestServer('sqlite', { SETTLE_BEFORE_ANSWER: 'true' });
    setup = await g.setupGateway(s, { provider: { type: 'openai-compatible', baseUrl: mock.url, apiKey: upstreamKey }, upstreamModel: 'gpt-4o-mini' });
  });
  afterAll(async () => {
    await s?.close();
    await mock?.close();
  });

  it('answers a call only once its settlement has committed', async () => {
    const workspaceId = await g.addWorkspace(s, '10');
    const { key } = await g.addKey(s, workspaceId);
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: key, maxRetries: 0 });
    for (const stream of [false, true]) {
      const { data, response } = await client.chat.completions.create({ model: setup.model, messages, stream }).withResponse();
      if (stream) for await (const _chunk of data as unknown as AsyncIterable<unknown>) void _chunk;
      const requestId = response.headers.get('x-request-id')!;
      // Read straight from the store, without waiting for anything: the record is already there.
      expect(s.running.ctx.settlements.pending).toBe(0);
      const row = await s.running.ctx.store.db.selectFrom('usage_records').select(['status', 'charge_micros']).where('id', '=', requestId).executeTakeFirst();
      expect(row, `stream: ${stream}`).toMatchObject({ status: 'ok' });
      expect(BigInt(row!.charge_micros as bigint)).toBeGreaterThan(0n);
    }
  });
});

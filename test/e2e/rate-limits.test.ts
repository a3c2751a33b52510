// Per-key rate limits at every front door, driven by the official SDKs against one gateway (its
// in-memory limiter): a key gets exactly its requests per minute, then a 429 with Retry-After in
// the client's own error format; TPM counts the tokens calls really used, streams included; and a
// refused call reaches neither the ledger nor the upstream. With Redis unreachable, the operator's
// fail-closed / fail-open choice decides. (The Redis limiter shared by two processes:
// two-processes.test.ts.)
import net from 'node:net';
import OpenAI, { APIError as OpenAIAPIError } from 'openai';
import Anthropic, { APIError as AnthropicAPIError } from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { startOpenAIMock, type OpenAIMock } from '../upstreams/openai.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import * as g from '../helpers/gateway.ts';

const upstreamKey = 'sk-mock-rate-limits-0123456789abcdef';
const upstreamModel = 'gpt-4o-mini';

const ask = (n: number): OpenAI.ChatCompletionMessageParam[] => [{ role: 'user', content: `Rate limit question number ${n}.` }];

/** The refusal a call ended in (it must have been refused). */
async function refusal<E extends Error>(call: Promise<unknown>): Promise<E> {
  const outcome = await call.then(
    () => null,
    (err: E) => err,
  );
  expect(outcome, 'the call was admitted').not.toBeNull();
  return outcome!;
}

/** Retry-After of a 429: whole seconds, at least one, at most the two minutes the sliding window spans. */
function expectRetryAfter(headers: Headers | undefined): number {
  const value = headers?.get('retry-after') ?? null;
  expect(value).toMatch(/^\d+$/);
  const seconds = Number(value);
  expect(seconds).toBeGreaterThanOrEqual(1);
  expect(seconds).toBeLessThanOrEqual(120);
  return seconds;
}

describe.each(engines)('rate limits at the front doors on %s', (engine) => {
  let s: TestServer;
  let mock: OpenAIMock;
  let chatModel: string;
  let embeddingModel: string;
  let imageModel: string;

  beforeAll(async () => {
    mock = await startOpenAIMock({ apiKey: upstreamKey });
    s = await startTestServer(engine);
    const provider = await g.addProvider(s, { type: 'openai', baseUrl: mock.url, apiKey: upstreamKey });
    chatModel = (await g.addModel(s, { providerId: provider.id, upstreamModel })).name;
    embeddingModel = (await g.addModel(s, { providerId: provider.id, upstreamModel: 'text-embedding-3-small', workload: 'embedding', rates: { inputPer1M: '0.5' } })).name;
    imageModel = (await g.addModel(s, { providerId: provider.id, upstreamModel: 'dall-e-3', workload: 'image', rates: { perImage: '0.04' } })).name;
  });
  afterAll(async () => {
    await s?.close();
    await mock?.close();
  });

  const tenant = async (limits: Pick<g.KeySpec, 'rpm' | 'tpm'>) => {
    const workspaceId = await g.addWorkspace(s, '10');
    const key = await g.addKey(s, workspaceId, limits);
    return {
      workspaceId,
      keyId: key.id,
      openai: new OpenAI({ baseURL: `${s.url}/v1`, apiKey: key.key, maxRetries: 0 }),
      anthropic: new Anthropic({ baseURL: s.url, apiKey: key.key, maxRetries: 0 }),
    };
  };

  const holdsOf = async (workspaceId: string) => (await g.settledDb(s)).selectFrom('holds').select(['ref', 'status']).where('workspace_id', '=', workspaceId).execute();

  /** Runs a call that must be refused and proves it touched nothing: no hold, no usage record, no credits, no upstream request. */
  const refusedWithoutTrace = async <E extends Error & { headers?: Headers }>(workspaceId: string, call: () => Promise<unknown>): Promise<E> => {
    const balance = await g.balanceOf(s, workspaceId);
    const holds = await holdsOf(workspaceId);
    const upstreamBefore = mock.requests.length;
    const err = await refusal<E>(call());
    const requestId = err.headers?.get('x-request-id');
    expect(requestId).toMatch(/^req_/);
    expect(mock.requests.length).toBe(upstreamBefore);
    expect(await holdsOf(workspaceId)).toEqual(holds);
    expect((await holdsOf(workspaceId)).map((h) => h.ref)).not.toContain(requestId);
    expect(await g.usageRecord(s, requestId!)).toBeUndefined();
    expect(await g.balanceOf(s, workspaceId)).toEqual(balance);
    return err;
  };

  it('gives a key exactly its requests per minute, then a 429 in OpenAI form with Retry-After and nothing held or charged', async () => {
    const t = await tenant({ rpm: 3 });
    const first = await t.openai.chat.completions.create({ model: chatModel, messages: ask(1) });
    expect(first.choices[0].message.content).toBeTruthy();
    const stream = await t.openai.chat.completions.create({ model: chatModel, messages: ask(2), stream: true });
    let streamed = '';
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
    expect(streamed).toBeTruthy();
    await t.openai.chat.completions.create({ model: chatModel, messages: ask(3) });

    const err = await refusedWithoutTrace<OpenAIAPIError>(t.workspaceId, () => t.openai.chat.completions.create({ model: chatModel, messages: ask(4) }));
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.status).toBe(429);
    expect(err.code).toBe('rate_limit_exceeded');
    expect(err.type).toBe('rate_limit_error');
    expect(err.message).toContain('3 requests per minute');
    const retryAfter = expectRetryAfter(err.headers);
    expect(err.message).toContain(`Retry after ${retryAfter} second`);

    // The limit is the key's, whatever the endpoint; a streamed call is refused before its stream starts.
    const again = await refusedWithoutTrace<OpenAIAPIError>(t.workspaceId, () => t.openai.chat.completions.create({ model: chatModel, messages: ask(5), stream: true }));
    expect(again.status).toBe(429);
    expect((await refusedWithoutTrace<OpenAIAPIError>(t.workspaceId, () => t.openai.embeddings.create({ model: embeddingModel, input: 'x' }))).status).toBe(429);

    // The three admitted calls are the only ones held, settled and recorded: each usage record
    // names its own hold, settled by exactly one usage transfer.
    const records = await g.usageRecords(s, t.workspaceId);
    expect(records).toHaveLength(3);
    const settled = await g.settledHoldIds(s, t.workspaceId);
    expect(settled).toHaveLength(3);
    expect(new Set(settled)).toEqual(new Set(records.map((r) => r.hold_id)));
    expect(await g.pendingHolds(s, t.workspaceId)).toBe(0);
  });

  it('answers the 429 in Anthropic form on /v1/messages, streamed or not', async () => {
    const t = await tenant({ rpm: 2 });
    const request = (n: number): Anthropic.MessageCreateParamsNonStreaming => ({ model: chatModel, max_tokens: 100, messages: [{ role: 'user', content: `Anthropic-shaped question ${n}.` }] });
    const message = await t.anthropic.messages.create(request(1));
    expect(message.content[0]).toMatchObject({ type: 'text' });
    const streamed = await t.anthropic.messages.stream(request(2)).finalMessage();
    expect(streamed.content[0]).toMatchObject({ type: 'text' });

    for (const call of [() => t.anthropic.messages.create(request(3)), () => t.anthropic.messages.stream(request(4)).finalMessage()]) {
      const err = await refusedWithoutTrace<AnthropicAPIError>(t.workspaceId, call);
      expect(err).toBeInstanceOf(Anthropic.RateLimitError);
      expect(err.status).toBe(429);
      expect(err.type).toBe('rate_limit_error');
      expect(err.error).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });
      expect((err.error as { error: { message: string } }).error.message).toContain('2 requests per minute');
      expectRetryAfter(err.headers);
    }
    expect(await g.usageRecords(s, t.workspaceId)).toHaveLength(2);
  });

  it('counts embeddings and image calls against the same per-minute limit', async () => {
    const t = await tenant({ rpm: 2 });
    const embedded = await t.openai.embeddings.create({ model: embeddingModel, input: 'a sentence to embed' });
    expect(embedded.data).toHaveLength(1);
    const images = await t.openai.images.generate({ model: imageModel, prompt: 'A red square' });
    expect(images.data).toHaveLength(1);
    for (const call of [() => t.openai.images.generate({ model: imageModel, prompt: 'A blue square' }), () => t.openai.embeddings.create({ model: embeddingModel, input: 'more' })]) {
      const err = await refusedWithoutTrace<OpenAIAPIError>(t.workspaceId, call);
      expect(err).toBeInstanceOf(OpenAI.RateLimitError);
      expect(err.code).toBe('rate_limit_exceeded');
      expectRetryAfter(err.headers);
    }
  });

  it('refuses once the tokens calls really used (input and output, streams included) reach the tokens-per-minute limit', async () => {
    // What one call of this prompt uses, measured on a key without limits.
    const probe = await tenant({});
    const measured = await probe.openai.chat.completions.create({ model: chatModel, messages: ask(7) });
    const perCall = measured.usage!.total_tokens;
    expect(perCall).toBeGreaterThan(measured.usage!.prompt_tokens);

    // Admitted while fewer tokens than the limit are recorded: the first call (0 recorded) and the
    // second (one call's worth); the third only if the streamed second call's tokens were not counted.
    const t = await tenant({ tpm: perCall + 1 });
    const first = await t.openai.chat.completions.create({ model: chatModel, messages: ask(7) });
    expect(first.usage!.total_tokens).toBe(perCall);
    const stream = await t.openai.chat.completions.create({ model: chatModel, messages: ask(7), stream: true, stream_options: { include_usage: true } });
    let streamedTokens = 0;
    for await (const chunk of stream) streamedTokens += chunk.usage?.total_tokens ?? 0;
    expect(streamedTokens).toBe(perCall);

    const err = await refusedWithoutTrace<OpenAIAPIError>(t.workspaceId, () => t.openai.chat.completions.create({ model: chatModel, messages: ask(7) }));
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.code).toBe('rate_limit_exceeded');
    expect(err.message).toContain(`${perCall + 1} tokens per minute`);
    expectRetryAfter(err.headers);
    expect(await g.usageRecords(s, t.workspaceId)).toHaveLength(2);

    // A key whose limit one call's input alone reaches is still admitted once (usage is known only
    // afterwards), then refused.
    const tight = await tenant({ tpm: 1 });
    await tight.openai.chat.completions.create({ model: chatModel, messages: ask(8) });
    expect((await refusedWithoutTrace<OpenAIAPIError>(tight.workspaceId, () => tight.openai.chat.completions.create({ model: chatModel, messages: ask(9) }))).status).toBe(429);
  });

  it('keeps the ledger consistent', async () => {
    expect(await verifyLedger(await g.settledDb(s))).toEqual([]);
  });
});

/** A local port nothing listens on: Redis "down". */
async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('rate limits while Redis is unreachable', () => {
  const servers: TestServer[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((x) => x.close()));
  });

  const serverWithDeadRedis = async (failOpen: boolean) => {
    const server = await startTestServer('sqlite', { REDIS_URL: `redis://127.0.0.1:${await deadPort()}`, RATE_LIMIT_FAIL_OPEN: String(failOpen) });
    servers.push(server);
    const provider = await g.addProvider(server, { type: 'sandbox' });
    const model = (await g.addModel(server, { providerId: provider.id, upstreamModel: 'sandbox-chat' })).name;
    const workspaceId = await g.addWorkspace(server, '10');
    const client = async (limits: Pick<g.KeySpec, 'rpm' | 'tpm'>) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey: (await g.addKey(server, workspaceId, limits)).key, maxRetries: 0 });
    return { server, model, workspaceId, client };
  };

  it('fail-closed: refuses calls of limited keys with a 429 and Retry-After, holding nothing; keys without limits still work', async () => {
    const { server, model, workspaceId, client } = await serverWithDeadRedis(false);
    const limited = await client({ rpm: 100 });
    const balance = await g.balanceOf(server, workspaceId);
    const err = await refusal<OpenAIAPIError>(limited.chat.completions.create({ model, messages: ask(1) }));
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.code).toBe('rate_limiter_unavailable');
    expect(err.message).toContain('Rate limits cannot be checked right now');
    expect(err.headers?.get('retry-after')).toBe('5');
    expect(await g.balanceOf(server, workspaceId)).toEqual(balance);
    expect(await server.running.ctx.store.db.selectFrom('holds').select('id').where('workspace_id', '=', workspaceId).execute()).toEqual([]);
    expect(server.running.ctx.rateLimiter.health()).toMatchObject({ backend: 'redis', healthy: false, failOpen: false });

    // Null limits cost nothing: no counter is read, so an outage cannot refuse them.
    const unlimited = await client({});
    const answer = await unlimited.chat.completions.create({ model, messages: ask(2) });
    expect(answer.choices[0].message.content).toBeTruthy();
  });

  it('fail-open: admits calls of limited keys uncounted', async () => {
    const { model, client } = await serverWithDeadRedis(true);
    const limited = await client({ rpm: 1 });
    for (const n of [1, 2, 3]) {
      const answer = await limited.chat.completions.create({ model, messages: ask(n) });
      expect(answer.choices[0].message.content).toBeTruthy();
    }
  });
});

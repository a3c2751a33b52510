// Prompt logging through live calls: a workspace that opted in gets each call's request (as the
// client sent it) and response (the JSON answer, or a stream's text) stored under the request id
// and shown by the admin API; a workspace that did not gets nothing stored; opting in and out
// takes effect on the next call; and the retention job deletes the logs once their period passes.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { startOpenAIMock, type OpenAIMock } from '../upstreams/openai.ts';
import { deleteExpiredRequestLogs } from '../../src/workspaces/request-logs.ts';
import * as g from '../helpers/gateway.ts';

const upstreamKey = 'sk-mock-request-logs-0123456789abcdef';
const dayMs = 24 * 3_600_000;

describe.each(engines)('prompt logging on %s', (engine) => {
  let s: TestServer;
  let mock: OpenAIMock;
  let chatModel: string;
  let embeddingModel: string;
  const db = () => s.running.ctx.store.db;

  beforeAll(async () => {
    mock = await startOpenAIMock({ apiKey: upstreamKey });
    s = await startTestServer(engine);
    const provider = await g.addProvider(s, { type: 'openai', baseUrl: mock.url, apiKey: upstreamKey });
    chatModel = (await g.addModel(s, { providerId: provider.id, upstreamModel: 'gpt-4o-mini' })).name;
    embeddingModel = (await g.addModel(s, { providerId: provider.id, upstreamModel: 'text-embedding-3-small', workload: 'embedding', rates: { inputPer1M: '0.5' } })).name;
  });
  afterAll(async () => {
    await s?.close();
    await mock?.close();
  });

  const tenant = async (logging: { enabled: boolean; retentionDays?: number } | null) => {
    const workspaceId = await g.addWorkspace(s, '10');
    if (logging) expect((await s.admin('PATCH', `/api/admin/workspaces/${workspaceId}`, { logging })).status).toBe(200);
    const key = (await g.addKey(s, workspaceId)).key;
    return {
      workspaceId,
      openai: new OpenAI({ baseURL: `${s.url}/v1`, apiKey: key, maxRetries: 0 }),
      anthropic: new Anthropic({ baseURL: s.url, apiKey: key, maxRetries: 0 }),
    };
  };

  /** Logs are written after the answer went out: wait for the writes this process has started. */
  const logsOf = async (workspaceId: string) => {
    await s.running.ctx.requestLogs.drain();
    const r = await s.admin('GET', `/api/admin/workspaces/${workspaceId}/request-logs?limit=20`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return new Map<string, { requestBody: string; responseBody: string | null; createdAt: string; expiresAt: string }>(r.body.data.map((l: { id: string }) => [l.id, l]));
  };
  const storedRowsOf = async (workspaceId: string) => db().selectFrom('request_logs').selectAll().where('workspace_id', '=', workspaceId).execute();

  /** Calls every kind of front door once; returns each call's request id with what was sent and answered. */
  const callEveryDoor = async (t: Awaited<ReturnType<typeof tenant>>, marker: string) => {
    const chatParams = { model: chatModel, messages: [{ role: 'user' as const, content: `Plain question about ${marker}.` }], max_tokens: 50 };
    const chat = await t.openai.chat.completions.create(chatParams).withResponse();

    const streamParams = { model: chatModel, messages: [{ role: 'user' as const, content: `Streamed question about ${marker}.` }], stream: true as const };
    const stream = await t.openai.chat.completions.create(streamParams).withResponse();
    let streamedText = '';
    for await (const chunk of stream.data) streamedText += chunk.choices[0]?.delta?.content ?? '';

    const messageParams: Anthropic.MessageCreateParamsNonStreaming = {
      model: chatModel,
      max_tokens: 60,
      system: 'Be brief.',
      messages: [{ role: 'user', content: [{ type: 'text', text: `Anthropic question about ${marker}.` }] }],
    };
    const message = await t.anthropic.messages.create(messageParams).withResponse();

    const embeddingParams = { model: embeddingModel, input: [`embed ${marker}`, 'second input'], encoding_format: 'float' as const };
    const embedding = await t.openai.embeddings.create(embeddingParams).withResponse();

    const idOf = (r: { response: Response }) => r.response.headers.get('x-request-id')!;
    return [
      { id: idOf(chat), request: chatParams, response: JSON.parse(JSON.stringify(chat.data)) as unknown },
      { id: idOf(stream), request: streamParams, response: streamedText },
      { id: idOf(message), request: messageParams, response: JSON.parse(JSON.stringify(message.data)) as unknown },
      { id: idOf(embedding), request: embeddingParams, response: JSON.parse(JSON.stringify(embedding.data)) as unknown },
    ];
  };

  it("stores an opted-in workspace's requests and responses, nothing of any other, and deletes them when their retention passes", async () => {
    const quiet = await tenant(null);
    const logged = await tenant({ enabled: true, retentionDays: 2 });
    const quietCalls = await callEveryDoor(quiet, 'quiet-marker-7f3a');
    const startedAt = Date.now();
    const loggedCalls = await callEveryDoor(logged, 'logged-marker-91c2');

    const logs = await logsOf(logged.workspaceId);
    expect([...logs.keys()].sort()).toEqual(loggedCalls.map((c) => c.id).sort());
    for (const call of loggedCalls) {
      const log = logs.get(call.id)!;
      expect(JSON.parse(log.requestBody), call.id).toEqual(call.request);
      if (typeof call.response === 'string') {
        expect(log.responseBody).toBe(call.response);
        expect(call.response).toContain('Mock OpenAI reply');
      } else {
        expect(JSON.parse(log.responseBody!), call.id).toEqual(call.response);
      }
      expect(Date.parse(log.createdAt)).toBeGreaterThanOrEqual(startedAt - 1000);
      expect(Date.parse(log.expiresAt) - Date.parse(log.createdAt)).toBe(2 * dayMs);
    }

    // The other workspace's calls were served and metered, but nothing of their text was stored.
    for (const call of quietCalls) expect((await g.settledUsage(s, call.id)).status).toBe('ok');
    expect((await logsOf(quiet.workspaceId)).size).toBe(0);
    expect(await storedRowsOf(quiet.workspaceId)).toEqual([]);
    const everyLog = await db().selectFrom('request_logs').selectAll().execute();
    expect(everyLog.map((r) => g.rowText(r)).join('\n')).not.toContain('quiet-marker-7f3a');
    const opted = (await s.admin('GET', '/api/admin/logging?limit=200')).body.data as Array<{ id: string; storedLogs: number }>;
    expect(opted.find((w) => w.id === logged.workspaceId)).toMatchObject({ storedLogs: 4 });
    expect(opted.map((w) => w.id)).not.toContain(quiet.workspaceId);

    // Retention: kept until their period has passed, then the job's deletion takes them.
    expect(await deleteExpiredRequestLogs(db(), Date.now())).toBe(0);
    expect(await storedRowsOf(logged.workspaceId)).toHaveLength(4);
    expect(await deleteExpiredRequestLogs(db(), Date.now() + 2 * dayMs - 60_000)).toBe(0);
    expect(await deleteExpiredRequestLogs(db(), Date.now() + 2 * dayMs + 1)).toBe(4);
    expect((await logsOf(logged.workspaceId)).size).toBe(0);
    expect((await s.admin('GET', '/api/admin/logging?limit=200')).body.data.find((w: { id: string }) => w.id === logged.workspaceId)).toMatchObject({ storedLogs: 0 });
  });

  it('starts storing on the next call after a workspace opts in, and stops when it opts out', async () => {
    const t = await tenant(null);
    const ask = (n: number) => t.openai.chat.completions.create({ model: chatModel, messages: [{ role: 'user', content: `Toggle question ${n}.` }] }).withResponse();
    const before = await ask(1);
    expect((await s.admin('PATCH', `/api/admin/workspaces/${t.workspaceId}`, { logging: { enabled: true, retentionDays: 1 } })).status).toBe(200);
    const during = await ask(2);
    expect((await s.admin('PATCH', `/api/admin/workspaces/${t.workspaceId}`, { logging: { enabled: false } })).status).toBe(200);
    const after = await ask(3);
    for (const r of [before, after]) expect((await g.settledUsage(s, r.response.headers.get('x-request-id')!)).status).toBe('ok');

    const logs = await logsOf(t.workspaceId);
    expect([...logs.keys()]).toEqual([during.response.headers.get('x-request-id')]);
    expect(JSON.parse([...logs.values()][0].responseBody!)).toEqual(JSON.parse(JSON.stringify(during.data)));
  });
});

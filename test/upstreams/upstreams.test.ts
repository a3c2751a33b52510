// The mock upstreams behave like the real APIs where the gateway relies on it (usage only when
// asked, validation, auth) and their switchable behaviours (delays, slow streams) do what they say.
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startGeminiMock, type GeminiMock } from './gemini.ts';
import { startOpenAIMock, type OpenAIMock } from './openai.ts';

async function post(url: string, headers: Record<string, string>, body: unknown, headersTimeout?: number) {
  const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), headersTimeout });
  return { status: res.statusCode, text: await res.body.text() };
}

function dataEvents(text: string): string[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter(Boolean)
    .map((event) => event.replace(/^data: /, ''));
}

describe('OpenAI mock', () => {
  let mock: OpenAIMock;
  const auth = { authorization: 'Bearer sk-any' };
  const chat = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello there' }] };

  beforeAll(async () => {
    mock = await startOpenAIMock();
  });
  afterAll(() => mock.close());
  beforeEach(() => mock.setBehavior({}));

  it('sends a usage chunk only when stream_options.include_usage is true, like the real API', async () => {
    const plain = dataEvents((await post(`${mock.url}/chat/completions`, auth, { ...chat, stream: true })).text);
    expect(plain[plain.length - 1]).toBe('[DONE]');
    expect(plain.some((e) => e.includes('"usage"'))).toBe(false);
    const withUsage = dataEvents((await post(`${mock.url}/chat/completions`, auth, { ...chat, stream: true, stream_options: { include_usage: true } })).text);
    const usageChunk = JSON.parse(withUsage[withUsage.length - 2]);
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage.completion_tokens).toBeGreaterThan(0);
    const json = JSON.parse((await post(`${mock.url}/chat/completions`, auth, chat)).text);
    expect(usageChunk.usage).toEqual(json.usage);
  });

  it('validates like OpenAI: key, unknown fields, stream_options without stream, empty messages', async () => {
    expect((await post(`${mock.url}/chat/completions`, {}, chat)).status).toBe(401);
    const unknown = await post(`${mock.url}/chat/completions`, auth, { ...chat, tollgate_internal: true });
    expect(unknown.status).toBe(400);
    expect(JSON.parse(unknown.text).error.message).toContain('tollgate_internal');
    expect((await post(`${mock.url}/chat/completions`, auth, { ...chat, stream_options: { include_usage: true } })).status).toBe(400);
    expect((await post(`${mock.url}/chat/completions`, auth, { ...chat, messages: [] })).status).toBe(400);
    expect((await post(`${mock.origin}/openai/deployments/d/chat/completions`, { 'api-key': 'k' }, chat)).status).toBe(404); // no api-version
    const models = await request(`${mock.url}/models`, { headers: auth });
    expect(JSON.parse(await models.body.text()).object).toBe('list');
  });

  it('records what it was sent', async () => {
    await post(`${mock.url}/chat/completions?x=1`, { ...auth, 'x-trace': 'abc' }, chat);
    const last = mock.requests[mock.requests.length - 1];
    expect(last).toMatchObject({ method: 'POST', path: '/v1/chat/completions', query: { x: '1' }, body: chat });
    expect(last.headers['x-trace']).toBe('abc');
  });

  it('delays headers (for timeouts) and streams slowly (for disconnects)', async () => {
    // undici checks header timeouts about once a second, so the delay must be well above that.
    mock.setBehavior({ headersDelayMs: 2500 });
    const waited = Date.now();
    await expect(post(`${mock.url}/chat/completions`, auth, chat, 100)).rejects.toMatchObject({ code: 'UND_ERR_HEADERS_TIMEOUT' });
    expect(Date.now() - waited).toBeLessThan(2500);
    mock.setBehavior({ eventDelayMs: 40 });
    const started = Date.now();
    const events = dataEvents((await post(`${mock.url}/chat/completions`, auth, { ...chat, stream: true })).text);
    expect(Date.now() - started).toBeGreaterThanOrEqual(40 * events.length - 20);
  });

  it('fails the next N requests, then recovers', async () => {
    mock.setBehavior({ fail: { count: 2, status: 500, retryAfterSeconds: 1 } });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await post(`${mock.url}/chat/completions`, auth, chat)).status);
    expect(statuses).toEqual([500, 500, 200]);
    mock.setBehavior({ fail: { count: 1, status: 400, body: { error: { message: 'custom', type: 'invalid_request_error' } } } });
    expect(JSON.parse((await post(`${mock.url}/chat/completions`, auth, chat)).text).error.message).toBe('custom');
  });
});

describe('Gemini mock', () => {
  let mock: GeminiMock;
  const key = { 'x-goog-api-key': 'AIza-any' };
  const body = { contents: [{ role: 'user', parts: [{ text: 'hello there' }] }] };

  beforeAll(async () => {
    mock = await startGeminiMock();
  });
  afterAll(() => mock.close());
  beforeEach(() => mock.setBehavior({}));

  it('streams SSE with alt=sse and a JSON array without, with the same final usage as generateContent', async () => {
    const json = JSON.parse((await post(`${mock.url}/models/gemini-2.5-flash:generateContent`, key, body)).text);
    const sse = dataEvents((await post(`${mock.url}/models/gemini-2.5-flash:streamGenerateContent?alt=sse`, key, body)).text).map((e) => JSON.parse(e));
    const array = JSON.parse((await post(`${mock.url}/models/gemini-2.5-flash:streamGenerateContent`, key, body)).text);
    expect(array).toHaveLength(sse.length);
    expect(sse.length).toBeGreaterThan(1);
    expect(sse[sse.length - 1].usageMetadata).toEqual(json.usageMetadata);
    expect(sse[sse.length - 1].candidates[0].finishReason).toBe('STOP');
    expect(sse.map((e) => e.candidates[0].content.parts[0].text).join('')).toBe(json.candidates[0].content.parts[0].text);
  });

  it('authenticates and validates like Gemini', async () => {
    const anonymous = await post(`${mock.url}/models/gemini-2.5-flash:generateContent`, {}, body);
    expect(anonymous.status).toBe(403);
    expect(JSON.parse(anonymous.text).error.status).toBe('PERMISSION_DENIED');
    expect((await post(`${mock.url}/models/gemini-2.5-flash:generateContent?key=AIza-q`, {}, body)).status).toBe(200);
    const empty = await post(`${mock.url}/models/gemini-2.5-flash:generateContent`, key, { contents: [] });
    expect(JSON.parse(empty.text).error).toMatchObject({ code: 400, status: 'INVALID_ARGUMENT' });
    const badRole = await post(`${mock.url}/models/gemini-2.5-flash:generateContent`, key, { contents: [{ role: 'assistant', parts: [{ text: 'x' }] }] });
    expect(badRole.status).toBe(400);
  });

  it('answers no usage and fails on demand', async () => {
    mock.setBehavior({ omitUsage: true });
    const json = JSON.parse((await post(`${mock.url}/models/gemini-2.5-flash:generateContent`, key, body)).text);
    expect(json).not.toHaveProperty('usageMetadata');
    mock.setBehavior({ fail: { count: 1, status: 503 } });
    const failed = await post(`${mock.url}/models/gemini-2.5-flash:generateContent`, key, body);
    expect(JSON.parse(failed.text).error).toMatchObject({ code: 503, status: 'UNAVAILABLE' });
    expect((await post(`${mock.url}/models/gemini-2.5-flash:generateContent`, key, body)).status).toBe(200);
  });
});

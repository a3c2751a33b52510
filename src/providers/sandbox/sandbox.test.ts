import { describe, expect, it } from 'vitest';
import { sendLocal, textOf, toolCallsOf, translateBody } from '../../../test/upstreams/client.ts';
import { countMessagesTokens, countTokens, encodeTokens } from '../tokenizer.ts';
import type { ChatRequest, UpstreamTarget } from '../types.ts';
import { sandboxAdapter, sandboxBaseUrl, sandboxTransport } from './index.ts';
import { chatChunksOf, answerChat, sandboxPngBase64, sandboxSentence } from './engine.ts';

const target: UpstreamTarget = { baseUrl: '', apiKey: '', upstreamModel: 'sandbox-small' };
const weatherTool = {
  type: 'function' as const,
  function: { name: 'get_weather', parameters: { type: 'object', properties: { location: { type: 'string' } } } },
};
const local = sandboxAdapter.local!;

function question(content: string, extra: Partial<ChatRequest> = {}): ChatRequest {
  return { model: 'public-sandbox', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content }], ...extra };
}

async function chat(req: ChatRequest) {
  const answer = await sendLocal(local, sandboxAdapter.chat.buildRequest(req, target, false));
  expect(answer.status).toBe(200);
  return sandboxAdapter.chat.parseResponse(JSON.parse(answer.text), req.model);
}

async function chatStream(req: ChatRequest) {
  const translator = sandboxAdapter.chat.createStreamTranslator(req.model);
  const res = await local.send(sandboxAdapter.chat.buildRequest(req, target, true), new AbortController().signal);
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
  const { chunks } = await translateBody(res.body, translator);
  return { chunks, translator };
}

describe('sandbox chat', () => {
  it('answers deterministically from the last user message, with tokenizer usage', async () => {
    const req = question('Explain double-entry bookkeeping to a child who likes trains.');
    const first = await chat(req);
    const second = await chat(req);
    const text = first.response.choices[0].message.content;
    expect(text).toBe(`Sandbox reply to: "Explain double-entry bookkeeping to a ch". ${sandboxSentence}`);
    expect(second.response.choices[0].message.content).toBe(text);
    expect(first.response.model).toBe('public-sandbox');
    expect(first.response.choices[0].finish_reason).toBe('stop');
    expect(first.usage).toEqual({ inputTokens: countMessagesTokens(req.messages), cachedInputTokens: 0, outputTokens: countTokens(text!), reasoningTokens: 0, images: 0 });
    expect(second.usage).toEqual(first.usage);
  });

  it('builds requests against its own base URL and needs no key', () => {
    const prepared = sandboxAdapter.chat.buildRequest(question('hi'), target, false);
    expect(prepared.url).toBe(`${sandboxBaseUrl}/chat/completions`);
    expect(prepared.headers).not.toHaveProperty('authorization');
    expect(sandboxAdapter.type).toBe('sandbox');
  });

  it('cuts the answer at max_tokens or max_completion_tokens with finish_reason length', async () => {
    for (const limit of [{ max_tokens: 4 }, { max_completion_tokens: 4, max_tokens: 100 }]) {
      const { response, usage } = await chat(question('Count to one hundred.', limit));
      expect(response.choices[0].finish_reason).toBe('length');
      expect(encodeTokens(response.choices[0].message.content!)).toHaveLength(4);
      expect(usage?.outputTokens).toBe(4);
    }
  });

  it('streams pieces of 1 to 3 tokens that add up to the same answer and usage', async () => {
    const req = question('Tell me about the moon and its phases, in detail.');
    const plain = await chat(req);
    const { chunks, translator } = await chatStream(req);
    const content = chunks.map((c) => c.choices[0]?.delta.content).filter((c): c is string => !!c);
    expect(content.length).toBeGreaterThan(5);
    for (const piece of content) expect(encodeTokens(piece).length).toBeLessThanOrEqual(3);
    expect(textOf(chunks)).toBe(plain.response.choices[0].message.content);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(translator.usage()).toEqual(plain.usage);
    expect(translator.error()).toBeNull();
  });

  it('sends the usage chunk only when include_usage is asked, as OpenAI does', async () => {
    const req = question('hello', { stream: true });
    const withoutUsage = await sendLocal(local, { url: `${sandboxBaseUrl}/chat/completions`, method: 'POST', headers: {}, body: JSON.stringify({ ...req, model: 'x' }) });
    expect(withoutUsage.text).not.toContain('"usage"');
    expect(withoutUsage.text.endsWith('data: [DONE]\n\n')).toBe(true);
    const withUsage = await sendLocal(local, sandboxAdapter.chat.buildRequest(req, target, true));
    const events = withUsage.text.split('\n\n').filter(Boolean);
    expect(events[events.length - 1]).toBe('data: [DONE]');
    const usageChunk = JSON.parse(events[events.length - 2].slice('data: '.length));
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage.prompt_tokens).toBe(countMessagesTokens(req.messages));
    expect(JSON.parse(events[1].slice('data: '.length)).usage).toBeNull();
  });

  it('calls the first tool when asked about the weather, then answers the tool result', async () => {
    const req = question("What's the weather like in Lyon?", { tools: [weatherTool] });
    const { response, usage } = await chat(req);
    const call = response.choices[0].message.tool_calls![0];
    expect(response.choices[0].finish_reason).toBe('tool_calls');
    expect(response.choices[0].message.content).toBeNull();
    expect(call.function).toEqual({ name: 'get_weather', arguments: '{"location":"Paris"}' });
    expect(usage?.inputTokens).toBe(countMessagesTokens(req.messages) + countTokens(JSON.stringify(req.tools)));
    expect(usage?.outputTokens).toBe(countTokens('{"location":"Paris"}'));

    const { chunks, translator } = await chatStream(req);
    expect(toolCallsOf(chunks)).toEqual([{ id: call.id, name: 'get_weather', arguments: '{"location":"Paris"}' }]);
    expect(translator.usage()).toEqual(usage);

    const followUp = await chat({
      ...req,
      messages: [...req.messages, { role: 'assistant', content: null, tool_calls: [call] }, { role: 'tool', tool_call_id: call.id, content: 'Sunny, 24 degrees' }],
    });
    expect(followUp.response.choices[0].message.content).toBe(`Sandbox reply to: "Sunny, 24 degrees". ${sandboxSentence}`);
    expect((await chat(question('Tell me a joke.', { tools: [weatherTool] }))).response.choices[0].message.tool_calls).toBeUndefined();
    expect((await chat(question('weather?', { tools: [weatherTool], tool_choice: 'none' }))).response.choices[0].message.tool_calls).toBeUndefined();
  });

  it('never splits a multi-byte character across stream pieces', () => {
    const answer = answerChat(question('日本語のテキスト 🌸🌸🌸 emoji'));
    expect(answer.pieces.join('')).toBe(answer.content);
    expect(answer.pieces.some((p) => p.includes('\uFFFD'))).toBe(false);
    expect(chatChunksOf({ ...question('x'), stream_options: { include_usage: true } }, answerChat(question('x'))).at(-1)?.usage).toBeTruthy();
  });

  it('rejects malformed requests like OpenAI and stops streaming when aborted', async () => {
    const missing = await sendLocal(local, { url: `${sandboxBaseUrl}/chat/completions`, method: 'POST', headers: {}, body: '{"model":"x","messages":[]}' });
    expect(missing.status).toBe(400);
    expect(sandboxAdapter.parseError(missing.status, missing.text)).toMatchObject({ type: 'invalid_request_error', retryable: false });
    const unknown = await sendLocal(local, { url: `${sandboxBaseUrl}/audio/speech`, method: 'POST', headers: {}, body: '{"model":"x"}' });
    expect(unknown.status).toBe(404);

    const controller = new AbortController();
    const res = await sandboxTransport.send(sandboxAdapter.chat.buildRequest(question('A long answer please, about many things.'), target, true), controller.signal);
    let received = 0;
    await expect(
      (async () => {
        for await (const _piece of res.body) {
          if (++received === 2) controller.abort();
        }
      })(),
    ).rejects.toThrow();
    expect(received).toBe(2);
    controller.abort();
    await expect(sandboxTransport.send(sandboxAdapter.chat.buildRequest(question('x'), target, false), controller.signal)).rejects.toThrow();
  });
});

describe('sandbox embeddings and images', () => {
  it('returns deterministic unit vectors and tokenizer usage', async () => {
    const prepared = sandboxAdapter.embeddings!.buildRequest({ model: 'public-embed', input: ['hello world', 'hello world', 'bye'] }, target);
    const answer = await sendLocal(local, prepared);
    const { response, usage } = sandboxAdapter.embeddings!.parseResponse(JSON.parse(answer.text), 'public-embed');
    const [a, b, c] = response.data.map((d) => d.embedding as number[]);
    expect(a).toHaveLength(8);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(Math.hypot(...a)).toBeCloseTo(1, 5);
    expect(usage?.inputTokens).toBe(2 * countTokens('hello world') + countTokens('bye'));

    const base64 = await sendLocal(local, sandboxAdapter.embeddings!.buildRequest({ model: 'e', input: 'hello world', encoding_format: 'base64', dimensions: 16 }, target));
    const encoded = JSON.parse(base64.text).data[0].embedding as string;
    const buffer = Buffer.from(encoded, 'base64');
    const floats = Array.from(new Float32Array(buffer.buffer, buffer.byteOffset, buffer.byteLength / 4));
    expect(floats).toHaveLength(16);
    expect(floats.slice(0, 8)).not.toEqual(a); // 16 dimensions normalise differently
    expect(Math.hypot(...floats)).toBeCloseTo(1, 5);
  });

  it('returns n images and bills n images', async () => {
    const answer = await sendLocal(local, sandboxAdapter.images!.buildRequest({ model: 'public-image', prompt: 'a lighthouse', n: 3, response_format: 'b64_json' }, target));
    const { response, usage } = sandboxAdapter.images!.parseResponse(JSON.parse(answer.text));
    expect(response.data).toEqual([{ b64_json: sandboxPngBase64 }, { b64_json: sandboxPngBase64 }, { b64_json: sandboxPngBase64 }]);
    expect(usage?.images).toBe(3);
    expect(Buffer.from(sandboxPngBase64, 'base64').subarray(1, 4).toString()).toBe('PNG');
  });
});

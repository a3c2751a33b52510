import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startOpenAIMock, type OpenAIMock } from '../../../test/upstreams/openai.ts';
import { send, sendStream, textOf } from '../../../test/upstreams/client.ts';
import { countTokens } from '../tokenizer.ts';
import type { ChatRequest, UpstreamTarget } from '../types.ts';
import { azureOpenAIAdapter, azureUrl, defaultAzureApiVersion } from './index.ts';

const target: UpstreamTarget = { baseUrl: 'https://acme.openai.azure.com/', apiKey: 'azure-key', upstreamModel: 'gpt4o prod' };
const req: ChatRequest = { model: 'public-4o', messages: [{ role: 'user', content: 'Say hello to Azure.' }], temperature: 0 };

describe('Azure OpenAI requests', () => {
  it('targets the deployment with api-version and the api-key header, without a model in the body', () => {
    const prepared = azureOpenAIAdapter.chat.buildRequest(req, target, false);
    expect(prepared.url).toBe(`https://acme.openai.azure.com/openai/deployments/gpt4o%20prod/chat/completions?api-version=${defaultAzureApiVersion}`);
    expect(prepared.headers['api-key']).toBe('azure-key');
    expect(prepared.headers).not.toHaveProperty('authorization');
    expect(JSON.parse(prepared.body)).toEqual({ messages: req.messages, temperature: 0 });
  });

  it('injects include_usage on streams, like OpenAI', () => {
    const body = JSON.parse(azureOpenAIAdapter.chat.buildRequest({ ...req, stream: true }, target, true).body);
    expect(body).toEqual({ messages: req.messages, temperature: 0, stream: true, stream_options: { include_usage: true } });
  });

  it('honours an api-version override and a base URL that already ends in /openai', () => {
    const url = azureUrl({ ...target, baseUrl: 'https://acme.openai.azure.com/openai/', apiVersion: '2025-01-01-preview' }, 'embeddings');
    expect(url).toBe('https://acme.openai.azure.com/openai/deployments/gpt4o%20prod/embeddings?api-version=2025-01-01-preview');
    const images = azureOpenAIAdapter.images!.buildRequest({ model: 'public-image', prompt: 'a boat' }, { ...target, upstreamModel: 'dalle3' });
    expect(images.url).toBe(`https://acme.openai.azure.com/openai/deployments/dalle3/images/generations?api-version=${defaultAzureApiVersion}`);
    expect(JSON.parse(images.body)).toEqual({ prompt: 'a boat' });
  });
});

describe('Azure OpenAI against the mock upstream', () => {
  let mock: OpenAIMock;
  let mockTarget: UpstreamTarget;

  beforeAll(async () => {
    mock = await startOpenAIMock({ apiKey: 'azure-mock-key' });
    mockTarget = { baseUrl: mock.origin, apiKey: 'azure-mock-key', upstreamModel: 'my-gpt4o' };
  });
  afterAll(() => mock.close());
  beforeEach(() => mock.setBehavior({}));

  it('bills a stream exactly like the same call not streamed', async () => {
    const plain = await send(azureOpenAIAdapter.chat.buildRequest(req, mockTarget, false));
    expect(plain.status).toBe(200);
    const parsed = azureOpenAIAdapter.chat.parseResponse(JSON.parse(plain.text), 'public-4o');
    const translator = azureOpenAIAdapter.chat.createStreamTranslator('public-4o');
    const streamed = await sendStream(azureOpenAIAdapter.chat.buildRequest({ ...req, stream: true }, mockTarget, true), translator);
    const text = parsed.response.choices[0].message.content!;
    expect(parsed.response.model).toBe('public-4o');
    expect(textOf(streamed.chunks)).toBe(text);
    expect(translator.usage()).toEqual(parsed.usage);
    expect(parsed.usage?.outputTokens).toBe(countTokens(text));

    const [first, second] = mock.requests.slice(-2);
    expect(first.path).toBe('/openai/deployments/my-gpt4o/chat/completions');
    expect(first.query).toEqual({ 'api-version': defaultAzureApiVersion });
    expect(first.headers['api-key']).toBe('azure-mock-key');
    expect(first.body).not.toHaveProperty('model');
    expect(second.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });

  it('embeds through a deployment and reads Azure errors', async () => {
    const embedded = await send(azureOpenAIAdapter.embeddings!.buildRequest({ model: 'public-embed', input: 'hello' }, { ...mockTarget, upstreamModel: 'embed-small' }));
    const { usage, response } = azureOpenAIAdapter.embeddings!.parseResponse(JSON.parse(embedded.text), 'public-embed');
    expect(response.data).toHaveLength(1);
    expect(usage?.inputTokens).toBe(countTokens('hello'));

    const denied = await send(azureOpenAIAdapter.chat.buildRequest(req, { ...mockTarget, apiKey: 'wrong' }, false));
    expect(azureOpenAIAdapter.parseError(denied.status, denied.text)).toMatchObject({ status: 401, retryable: false });
    mock.setBehavior({ fail: { count: 1, status: 503 } });
    const down = await send(azureOpenAIAdapter.chat.buildRequest(req, mockTarget, false));
    expect(azureOpenAIAdapter.parseError(down.status, down.text)).toMatchObject({ status: 503, type: 'server_error', retryable: true });
  });
});

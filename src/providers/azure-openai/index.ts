// Azure OpenAI: OpenAI's wire format behind deployment URLs, an `api-key` header and an
// `api-version` query; the deployment (upstreamModel) picks the model, so bodies carry none.
import type { PreparedRequest, ProviderAdapter, UpstreamTarget } from '../types.ts';
import {
  createOpenAIStreamTranslator,
  openaiChatBody,
  parseOpenAIChatResponse,
  parseOpenAIEmbeddings,
  parseOpenAIError,
  parseOpenAIImages,
  withModel,
} from '../openai/index.ts';

/** The latest GA data-plane version; it supports `stream_options.include_usage`. */
export const defaultAzureApiVersion = '2024-10-21';

/** `{baseUrl}/openai/deployments/{deployment}/{operation}?api-version=...`; a baseUrl ending in /openai is accepted. */
export function azureUrl(target: UpstreamTarget, operation: string): string {
  const base = target.baseUrl.replace(/\/+$/, '').replace(/\/openai$/, '');
  const deployment = encodeURIComponent(target.upstreamModel);
  const apiVersion = encodeURIComponent(target.apiVersion ?? defaultAzureApiVersion);
  return `${base}/openai/deployments/${deployment}/${operation}?api-version=${apiVersion}`;
}

function prepared(target: UpstreamTarget, operation: string, body: unknown, stream = false): PreparedRequest {
  return {
    url: azureUrl(target, operation),
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      'api-key': target.apiKey,
    },
    body: JSON.stringify(body),
  };
}

export const azureOpenAIAdapter: ProviderAdapter = {
  type: 'azure-openai',
  chat: {
    buildRequest: (req, target, stream) => prepared(target, 'chat/completions', openaiChatBody(req, undefined, stream), stream),
    parseResponse: parseOpenAIChatResponse,
    createStreamTranslator: createOpenAIStreamTranslator,
  },
  embeddings: {
    buildRequest: (req, target) => prepared(target, 'embeddings', withModel(req, undefined)),
    parseResponse: parseOpenAIEmbeddings,
  },
  images: {
    buildRequest: (req, target) => prepared(target, 'images/generations', withModel(req, undefined)),
    parseResponse: parseOpenAIImages,
  },
  parseError: parseOpenAIError,
};

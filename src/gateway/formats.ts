// The two front-door wire formats a chat call can be answered in: OpenAI chat completions and
// Anthropic messages. Each knows its JSON answer, its stream encoding and its error shape; the
// money path is the same for both.
import type { AppError } from '../lib/errors.ts';
import type { ChatChunk, ChatResponse, FinishReason, Usage } from '../providers/types.ts';
import { openAIUsageOf } from '../providers/common.ts';
import { anthropicError, canonicalResponseToAnthropic, createAnthropicStreamEncoder } from './anthropic-format.ts';

export interface StreamEncoder {
  open(inputTokens: number): string;
  chunk(c: ChatChunk): string;
  close(usage: Usage, finish: FinishReason | null): string;
  error(err: AppError): string;
}

export interface ChatFormat {
  endpoint: 'chat.completions' | 'messages';
  json(response: ChatResponse, usage: Usage, model: string): unknown;
  encoder(model: string, includeUsage: boolean): StreamEncoder;
  errorBody(err: AppError, requestId: string): unknown;
}

const openAITypeOf: Record<string, string> = {
  api_error: 'server_error',
  upstream_error: 'upstream_error',
  insufficient_credits: 'insufficient_quota',
};

export function openAIError(err: AppError) {
  return { error: { message: err.message, type: openAITypeOf[err.type] ?? err.type, param: err.param, code: err.code } };
}

const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;

export const openAIFormat: ChatFormat = {
  endpoint: 'chat.completions',
  json(response, usage) {
    return { ...response, usage: openAIUsageOf(usage) };
  },
  encoder(model, includeUsage) {
    let id = '';
    let created = Math.floor(Date.now() / 1000);
    return {
      open: () => '',
      chunk(c) {
        id = c.id;
        created = c.created;
        return sse(c);
      },
      close(usage) {
        const usageChunk = includeUsage ? sse({ id, object: 'chat.completion.chunk', created, model, choices: [], usage: openAIUsageOf(usage) }) : '';
        return `${usageChunk}data: [DONE]\n\n`;
      },
      error: (err) => sse(openAIError(err)),
    };
  },
  errorBody: (err) => openAIError(err),
};

export const anthropicFormat: ChatFormat = {
  endpoint: 'messages',
  json(response, usage, model) {
    return canonicalResponseToAnthropic(response, usage, model);
  },
  encoder(model) {
    const enc = createAnthropicStreamEncoder(model);
    return {
      open: (inputTokens) => enc.start(inputTokens),
      chunk: (c) => enc.push(c),
      close: (usage, finish) => enc.finish(usage, finish),
      error: (err) => enc.error(anthropicTypeOf(err), err.message),
    };
  },
  errorBody: (err, requestId) => anthropicError(err.status, anthropicTypeOf(err), err.message, requestId),
};

function anthropicTypeOf(err: AppError): string {
  // Anthropic answers an oversized body with its own type, whatever the cause.
  if (err.status === 413) return 'request_too_large';
  switch (err.type) {
    case 'invalid_request_error':
    case 'authentication_error':
    case 'permission_error':
    case 'not_found_error':
    case 'rate_limit_error':
      return err.type;
    case 'insufficient_credits':
      return 'billing_error';
    case 'upstream_error':
      return err.status === 504 ? 'timeout_error' : 'api_error';
    default:
      return 'api_error';
  }
}

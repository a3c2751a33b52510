// Small helpers shared by the adapters: URLs, defensive reads of upstream JSON, error shapes.
import { AppError } from '../lib/errors.ts';
import type { OpenAIUsage, UpstreamError, Usage } from './types.ts';

/** Upstream error text kept in an UpstreamError message; the rest is noise for the client. */
export const maxErrorMessageChars = 2000;

export function joinUrl(baseUrl: string, path: string): string {
  return baseUrl.replace(/\/+$/, '') + path;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function stringOr(value: unknown, fallback: string): string {
  return typeof value === 'string' && value.length > 0 ? value : fallback;
}

/** A token count from upstream JSON: a non-negative integer, or 0 when absent or nonsense. */
export function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

export function clip(text: string, maxChars: number = maxErrorMessageChars): string {
  return text.length <= maxChars ? text : `${text.slice(0, maxChars)}…`;
}

export function emptyUsage(): Usage {
  return { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0, reasoningTokens: 0, images: 0 };
}

/** OpenAI's usage object for a Usage: prompt_tokens include cached ones, as OpenAI reports them. */
export function openAIUsageOf(usage: Usage): OpenAIUsage {
  const prompt = usage.inputTokens + usage.cachedInputTokens;
  return {
    prompt_tokens: prompt,
    completion_tokens: usage.outputTokens,
    total_tokens: prompt + usage.outputTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedInputTokens },
    completion_tokens_details: { reasoning_tokens: usage.reasoningTokens },
  };
}

/** Statuses worth trying on another route or credential: timeouts, conflicts, rate limits, 5xx. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

export function defaultErrorType(status: number): string {
  if (status === 400 || status === 404 || status === 422) return 'invalid_request_error';
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 429) return 'rate_limit_error';
  return 'api_error';
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The upstream answered 2xx with something that is not the format it promised. */
export function malformedResponse(what: string): AppError {
  return new AppError('upstream_error', 'upstream_malformed_response', `The upstream returned ${what}.`);
}

/** The canonical request asks for something this upstream format cannot express. */
export function unsupportedRequest(message: string, param?: string): AppError {
  return new AppError('invalid_request_error', 'unsupported_by_upstream', message, { param });
}

/** An in-stream error whose SSE payload could not be read, or a stream that broke the format. */
export function streamProtocolError(message: string): UpstreamError {
  return { status: 502, type: 'upstream_error', message: clip(message), retryable: false };
}

// Per-key rate limits on the request path: a resolved call is admitted against its key's requests-
// and tokens-per-minute limits before any credit is held, and once it has settled the tokens it
// really used count toward the key's TPM window.
import { AppError } from '../lib/errors.ts';
import type { Admission, RateLimits } from '../limits/index.ts';
import type { Usage } from '../providers/types.ts';
import type { CallState, GatewayDeps } from './pipeline.ts';

type Refusal = Extract<Admission, { ok: false }>;

/** Throws a 429 with Retry-After when the call's key is over a limit, or when the limits cannot be checked and the operator chose to fail closed. */
export async function enforceRateLimits(deps: GatewayDeps, call: CallState): Promise<void> {
  const limits: RateLimits = { rpm: call.limits.rpm, tpm: call.limits.tpm };
  const admission = await deps.rateLimiter.admit(call.key.id, limits);
  if (!admission.ok) throw rateLimited(admission, limits);
}

function rateLimited(refusal: Refusal, limits: RateLimits): AppError {
  const retryAfterSeconds = Math.max(1, Math.ceil(refusal.retryAfterSeconds));
  const headers = { 'retry-after': String(retryAfterSeconds) };
  const retry = `Retry after ${retryAfterSeconds} second${retryAfterSeconds === 1 ? '' : 's'}.`;
  switch (refusal.limit) {
    case 'rpm':
      return new AppError('rate_limit_error', 'rate_limit_exceeded', `Rate limit reached: this API key may make ${limits.rpm} requests per minute. ${retry}`, { headers });
    case 'tpm':
      return new AppError('rate_limit_error', 'rate_limit_exceeded', `Rate limit reached: this API key may use ${limits.tpm} tokens per minute (input and output). ${retry}`, {
        headers,
      });
    case 'unavailable':
      // A 429 rather than a 5xx: clients and SDKs already back off on it and honour Retry-After.
      return new AppError('rate_limit_error', 'rate_limiter_unavailable', `Rate limits cannot be checked right now, so this gateway admits no calls with limits. ${retry}`, {
        headers,
      });
  }
}

/** Counts a settled call's tokens toward its key's TPM window without waiting for it; a failure is logged, never thrown. */
export function recordTokensUsed(deps: GatewayDeps, call: CallState, usage: Usage): void {
  const tokens = usage.inputTokens + usage.cachedInputTokens + usage.outputTokens;
  if (call.limits.tpm === null || tokens === 0) return;
  deps.rateLimiter.recordTokens(call.key.id, tokens, call.limits.tpm).catch((err: unknown) => {
    deps.log.error({ err, requestId: call.requestId, keyId: call.key.id }, 'recording tokens for the rate limit failed');
  });
}

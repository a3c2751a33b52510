// What follows a settled call, off its response's path: the tokens it used count toward its key's
// TPM limit, and an opted-in workspace's prompt and completion are stored. Neither can fail the call.
import type { Usage } from '../providers/types.ts';
import type { CallState, GatewayDeps } from './pipeline.ts';
import { recordTokensUsed } from './rate-limits.ts';

/** `requestBody` as the client sent it; `responseBody` as answered (a stream's output text; null when nothing was read). */
export function afterCall(deps: GatewayDeps, call: CallState, usage: Usage, requestBody: unknown, responseBody: unknown): void {
  recordTokensUsed(deps, call, usage);
  deps.requestLogs.write(call, requestBody, responseBody);
}

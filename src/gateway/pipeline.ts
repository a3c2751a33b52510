// The money path, top to bottom: authenticate the key, resolve the model and its rate, admit the
// call with a ledger hold for its worst case, proxy it (falling back across routes before the
// first byte), meter the usage the provider reported, and settle the exact price — or void the
// hold when the upstream produced nothing. The usage record commits in the settlement's
// transaction (for a call alone in flight, right after it is answered: settlements.ts).
// Everything but the ledger is read from memory.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../store/schema.ts';
import type { LedgerApi } from '../ledger/ledger.ts';
import type { WriteOptions } from '../ledger/committer.ts';
import { AppError } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import { formatCredits } from '../ledger/money.ts';
import { affordableOutputTokens, chargeMicros, costNanos, zeroUsage } from '../pricing/price.ts';
import { getAdapter } from '../providers/index.ts';
import type { ProviderAdapter, UpstreamError, UpstreamTarget, Usage } from '../providers/types.ts';
import type { ApiKeyEntry, KeyScope, ModelEntry, RateEntry, Workload } from '../routing/types.ts';
import { circuitKey, planRoutes, type Candidate, type RoutePlan } from '../routing/choose.ts';
import type { CircuitBreakers } from '../routing/health.ts';
import type { CatalogCache } from '../routing/catalog-cache.ts';
import type { KeyCache } from '../auth/keys.ts';
import type { WorkspaceCache } from '../workspaces/cache.ts';
import type { RateLimiter } from '../limits/index.ts';
import type { RequestLogWriter } from './request-logging.ts';
import type { Settlements } from './settlements.ts';
import { effectiveLimits, type KeyLimits, type WorkspaceEntry } from '../workspaces/policy.ts';
import { periodEnd, type BudgetLimit } from '../ledger/budgets.ts';
import { defaultOutputAllowanceTokens, type GatewaySettings, type SettingsCache } from './context.ts';
import { CallSignal, sendUpstream, UpstreamTimeout, type UpstreamAnswer, type UpstreamSignal } from './upstream.ts';
import type { LedgerRecord } from '../ledger/records.ts';

export interface GatewayDeps {
  db: Kysely<Database>;
  ledger: LedgerApi;
  catalog: CatalogCache;
  keys: KeyCache;
  settings: SettingsCache;
  workspaces: WorkspaceCache;
  breakers: CircuitBreakers;
  rateLimiter: RateLimiter;
  requestLogs: RequestLogWriter;
  settlements: Settlements;
  /** Wait for each call's settlement to commit before answering it (SETTLE_BEFORE_ANSWER). */
  settleBeforeAnswer: boolean;
  log: Logger;
}

/** How long a hold may stay pending: longer than any call, so a slow stream is never swept mid-way. */
export const holdTimeoutMs = 30 * 60 * 1000;
/** Overall deadline for one call, all attempts included (streams: until the first byte). */
export const callDeadlineMs = 10 * 60 * 1000;
/** The fewest output tokens worth admitting a call for when the balance cannot cover more. */
export const minStrictOutputTokens = 16;
export const maxAttempts = 3;

export interface CallState {
  requestId: string;
  key: ApiKeyEntry;
  workspace: WorkspaceEntry;
  limits: KeyLimits;
  /** The model the client asked for (an alias or a model). */
  model: ModelEntry;
  plan: RoutePlan;
  /** The next candidate of the plan to try. */
  nextCandidate: number;
  endpoint: 'chat.completions' | 'messages' | 'embeddings' | 'images';
  stream: boolean;
  startedAtMs: number;
  startedPerf: number;
  firstBytePerf: number | null;
  holdId: string | null;
  holdMicros: bigint;
  attempts: AttemptRecord[];
  /** finish() has run: the call is settled or voided (or on its way). */
  finished: boolean;
}

export interface AttemptRecord {
  model: string;
  routeId: string;
  providerId: string;
  credentialId: string | null;
  status: number | null;
  error: string | null;
  latencyMs: number;
}

export interface Outcome {
  status: 'ok' | 'client_disconnected' | 'upstream_error';
  usage: Usage;
  estimated: boolean;
  candidate: Candidate | null;
  errorCode: string | null;
}

export interface Settled {
  /** What the call costs: exactly what its settlement posts. */
  chargedMicros: bigint;
}

/** Reads the customer's key from `Authorization: Bearer` or `x-api-key` and checks it may do `scope`. */
export async function authenticate(deps: GatewayDeps, req: FastifyRequest, scope: KeyScope): Promise<ApiKeyEntry> {
  const token = keyFromHeaders(req);
  if (!token) throw new AppError('authentication_error', 'missing_api_key', 'Send your Tollgate API key as `Authorization: Bearer tg_...` or `x-api-key`.');
  const key = await deps.keys.authenticate(token);
  if (!key) throw new AppError('authentication_error', 'invalid_api_key', 'Invalid API key.');
  if (key.status !== 'active') throw new AppError('authentication_error', 'revoked_api_key', 'This API key has been revoked.');
  if (key.expiresAt !== null && key.expiresAt <= Date.now()) throw new AppError('authentication_error', 'expired_api_key', 'This API key has expired.');
  if (!key.scopes.includes(scope)) {
    throw new AppError('permission_error', 'missing_scope', `This API key lacks the '${scope}' scope.`);
  }
  return key;
}

function keyFromHeaders(req: FastifyRequest): string | null {
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  const x = req.headers['x-api-key'];
  return typeof x === 'string' && x.length > 0 ? x : null;
}

/**
 * The model the key asked for and the plan of routes that may serve it for this workspace: the
 * key may call it, its workload fits the endpoint, and at least one priced, compliant route exists.
 */
export async function resolveCall(
  deps: GatewayDeps,
  key: ApiKeyEntry,
  name: unknown,
  workloads: Workload[],
  endpoint: CallState['endpoint'],
  stream: boolean,
  requestId: string,
): Promise<CallState> {
  if (typeof name !== 'string' || name.length === 0) throw new AppError('invalid_request_error', 'missing_model', "'model' is required.", { param: 'model' });
  const workspace = await deps.workspaces.get(key.workspaceId);
  if (workspace.status !== 'active') throw new AppError('permission_error', 'workspace_suspended', 'This workspace is suspended.');
  const catalog = await deps.catalog.get();
  const model = catalog.models.get(name);
  if (!model || model.status !== 'active') throw new AppError('not_found_error', 'model_not_found', `The model '${name}' does not exist.`, { param: 'model' });
  if (key.models !== null && !key.models.includes(name)) {
    throw new AppError('permission_error', 'model_not_allowed', `This API key may not call '${name}'.`, { param: 'model' });
  }
  if (!workloads.includes(model.workload)) {
    throw new AppError('invalid_request_error', 'wrong_workload', `'${name}' is a ${model.workload} model and cannot serve this endpoint.`, { param: 'model' });
  }
  const plan = planRoutes(model, { catalog, policy: workspace.policy, priceBookId: workspace.priceBookId, breakers: deps.breakers, nowMs: Date.now() });
  if (plan.candidates.length === 0) {
    if (plan.blockedByPolicy) {
      const rules = [
        workspace.policy.allowedRegions ? `allowed regions: ${workspace.policy.allowedRegions.join(', ')}` : null,
        workspace.policy.zeroRetention ? 'zero data retention required' : null,
      ].filter(Boolean);
      throw new AppError('permission_error', 'no_compliant_route', `No provider of '${name}' complies with this workspace's policy (${rules.join('; ')}).`, { param: 'model' });
    }
    if (plan.skipped.length === 0 || plan.skipped.every((s) => s.reason === 'unpriced')) {
      // Fail closed: a model without a price (or without a route) is never served, least of all free.
      throw new AppError('not_found_error', 'model_not_priced', `The model '${name}' has no price or route yet and cannot be called.`, { param: 'model' });
    }
    throw new AppError('upstream_error', 'no_route', `No provider can serve '${name}' right now.`, { status: 503 });
  }
  return {
    requestId,
    key,
    workspace,
    limits: effectiveLimits(key.limits, workspace.keyDefaults),
    model,
    plan,
    nextCandidate: 0,
    endpoint,
    stream,
    startedAtMs: Date.now(),
    startedPerf: performance.now(),
    firstBytePerf: null,
    holdId: null,
    holdMicros: 0n,
    attempts: [],
    finished: false,
  };
}

/** The distinct rates a call may be priced at (an alias may fall back to a pricier target). */
function ratesOf(call: CallState): RateEntry[] {
  return [...new Map(call.plan.candidates.map((c) => [c.rate.id, c.rate])).values()];
}

/**
 * Admission: hold the worst case (input estimate + output allowance) before calling upstream.
 * Near the limit it goes strict: when the balance cannot cover the allowance but covers at least
 * `minStrictOutputTokens`, the output allowance shrinks to what the balance affords and the caller
 * must pass the returned allowance upstream as the call's max tokens. Otherwise 402.
 */
export async function admit(
  deps: GatewayDeps,
  call: CallState,
  input: Usage,
  outputAllowance: number,
  settings: GatewaySettings,
  opts: { strictAllowed: boolean },
): Promise<{ outputAllowance: number; strict: boolean }> {
  const rates = ratesOf(call);
  const worst = (out: number) =>
    rates.reduce((m, r) => {
      const c = chargeMicros(r.rates, { ...input, outputTokens: out });
      return c > m ? c : m;
    }, 0n);
  const budget = call.limits.budget;
  const budgets: BudgetLimit[] = budget ? [{ keyId: call.key.id, period: budget.period, limitMicros: budget.limitMicros }] : [];
  const hold = (amountMicros: bigint, idempotencyKey: string) =>
    deps.ledger.hold({ workspaceId: call.key.workspaceId, amountMicros, timeoutMs: holdTimeoutMs, idempotencyKey, ref: call.requestId, budgets });
  let first = await hold(worst(outputAllowance), call.requestId);
  if (!first.ok && deps.settlements.has(call.key.workspaceId)) {
    // Calls of this workspace answered a moment ago still reserve their worst case until their
    // settlements commit: let them, then ask again.
    await deps.settlements.settled(call.key.workspaceId);
    first = await hold(worst(outputAllowance), `${call.requestId}:settled`);
  }
  if (first.ok) {
    call.holdId = first.holdId;
    call.holdMicros = first.amountMicros;
    deps.settlements.admitted();
    return { outputAllowance, strict: false };
  }
  if (opts.strictAllowed && outputAllowance > 0) {
    const affordable = Math.min(outputAllowance, ...rates.map((r) => affordableOutputTokens(r.rates, input, first.availableMicros)));
    if (affordable >= minStrictOutputTokens) {
      const second = await hold(worst(affordable), `${call.requestId}:strict`);
      if (second.ok) {
        call.holdId = second.holdId;
        call.holdMicros = second.amountMicros;
        deps.settlements.admitted();
        return { outputAllowance: affordable, strict: true };
      }
    }
  }
  const needed = worst(opts.strictAllowed ? Math.min(outputAllowance, minStrictOutputTokens) : outputAllowance);
  if (first.reason === 'budget_exceeded') throw budgetExceeded(first.budget, first.availableMicros, needed);
  throw insufficientCredits(first.availableMicros, needed, settings);
}

function budgetExceeded(budget: BudgetLimit, remainingMicros: bigint, neededMicros: bigint): AppError {
  const resets = periodEnd(budget.period, Date.now());
  const name = budget.period === 'lifetime' ? 'lifetime' : budget.period === 'day' ? 'daily' : 'monthly';
  const when = resets === null ? 'It does not reset.' : `It resets at ${new Date(resets).toISOString()}.`;
  return new AppError(
    'insufficient_credits',
    'key_budget_exceeded',
    `This API key's ${name} budget of ${formatCredits(budget.limitMicros)} credits is spent: this call needs up to ${formatCredits(neededMicros)} and ${formatCredits(remainingMicros)} remain. ${when}`,
    resets === null ? {} : { headers: { 'retry-after': String(Math.max(1, Math.ceil((resets - Date.now()) / 1000))) } },
  );
}

function insufficientCredits(availableMicros: bigint, neededMicros: bigint, settings: GatewaySettings): AppError {
  const link = settings.creditPaymentLink ? ` Buy credits at ${settings.creditPaymentLink}` : '';
  return new AppError(
    'insufficient_credits',
    'insufficient_credits',
    `Insufficient credits: this call needs up to ${formatCredits(neededMicros)} credits and ${formatCredits(availableMicros > 0n ? availableMicros : 0n)} are available.${link}`,
  );
}

/** The output allowance a call asks for, capped by the model's maximum and the operator's hold cap. */
export function outputAllowance(requested: number | null | undefined, model: ModelEntry, settings: GatewaySettings): number {
  let tokens = requested ?? model.maxOutputTokens ?? defaultOutputAllowanceTokens;
  if (model.maxOutputTokens !== null) tokens = Math.min(tokens, model.maxOutputTokens);
  return Math.min(tokens, settings.holdOutputCapTokens);
}

export function targetOf(c: Candidate): UpstreamTarget {
  const p = c.route.provider;
  return { baseUrl: p.baseUrl ?? '', apiKey: c.credential?.apiKey ?? '', upstreamModel: c.route.upstreamModel, apiVersion: p.apiVersion ?? undefined };
}

export type AttemptResult =
  | { ok: true; candidate: Candidate; adapter: ProviderAdapter; answer: UpstreamAnswer }
  | { ok: false; error: AppError };

/**
 * Tries the plan's candidates in order until one answers 2xx. Falls back on connection errors,
 * timeouts, 429 and 5xx; a 4xx caused by the request is returned at once. Each attempt is recorded.
 */
export async function callUpstream(
  deps: GatewayDeps,
  call: CallState,
  signal: UpstreamSignal,
  build: (adapter: ProviderAdapter, target: UpstreamTarget, candidate: Candidate) => Parameters<typeof sendUpstream>[1] | null,
): Promise<AttemptResult> {
  let last: AppError | null = null;
  while (canFallBack(call)) {
    if (signal.aborted) break;
    const candidate = call.plan.candidates[call.nextCandidate++];
    // The plan only looked at the circuits: take a half-open circuit's one probe now, or pass the
    // route by when another call holds it (or the circuit opened since the plan was made).
    if (!deps.breakers.allow(circuitKey(candidate.route, candidate.credential))) {
      call.plan.skipped.push({ model: candidate.model.name, routeId: candidate.route.id, providerId: candidate.route.provider.id, reason: 'circuit_open' });
      last ??= new AppError('upstream_error', 'no_route', `No provider can serve '${call.model.name}' right now.`, { status: 503 });
      continue;
    }
    const adapter = getAdapter(candidate.route.provider.type);
    let prepared: ReturnType<typeof build>;
    try {
      prepared = build(adapter, targetOf(candidate), candidate);
    } catch (err) {
      // A request the adapter cannot translate (a client error): answered at once, as a 4xx.
      if (err instanceof AppError) return { ok: false, error: err };
      throw err;
    }
    if (!prepared) {
      last = new AppError('invalid_request_error', 'unsupported_endpoint', `'${call.model.name}' cannot serve this endpoint through its provider.`);
      continue;
    }
    const began = performance.now();
    const record: AttemptRecord = {
      model: candidate.model.name,
      routeId: candidate.route.id,
      providerId: candidate.route.provider.id,
      credentialId: candidate.credential?.id ?? null,
      status: null,
      error: null,
      latencyMs: 0,
    };
    call.attempts.push(record);
    try {
      const answer = await sendUpstream(adapter, prepared, {
        signal,
        headersTimeoutMs: candidate.route.provider.timeoutMs,
        bodyIdleMs: candidate.route.provider.timeoutMs,
      });
      record.status = answer.status;
      record.latencyMs = Math.round(performance.now() - began);
      if (answer.status >= 200 && answer.status < 300) return { ok: true, candidate, adapter, answer };
      const upstreamErr = adapter.parseError(answer.status, await answer.text().catch(() => ''));
      record.error = upstreamErr.type;
      last = upstreamFailure(upstreamErr);
      // A 4xx caused by the request would fail on every route: answer it at once. A 401 is the
      // operator's credential being refused: it counts against that credential's circuit and the
      // next route is tried. A 403 may be either (a revoked account, or a file the request names
      // that the provider will not open), so it falls back without counting: a customer's bad
      // request must never open a circuit every other customer depends on.
      if (answer.status === 403) continue;
      if (!upstreamErr.retryable && answer.status !== 401) return { ok: false, error: last };
      reportFailure(deps, candidate, `HTTP ${answer.status} ${upstreamErr.type}`);
    } catch (err) {
      record.latencyMs = Math.round(performance.now() - began);
      if (signal.aborted) {
        record.error = 'aborted';
        break;
      }
      const timeout = err instanceof UpstreamTimeout;
      record.error = timeout ? 'timeout' : 'connection_error';
      reportFailure(deps, candidate, record.error);
      last = timeout
        ? new AppError('upstream_error', 'upstream_timeout', 'The upstream provider did not answer in time.', { status: 504 })
        : new AppError('upstream_error', 'upstream_unreachable', 'The upstream provider could not be reached.', { status: 502 });
    }
  }
  return { ok: false, error: last ?? new AppError('upstream_error', 'client_gone', 'The client went away.', { status: 499 }) };
}

/** A failure that may fall back: counts against the credential's circuit. */
export function reportFailure(deps: GatewayDeps, candidate: Candidate, error: string): void {
  deps.breakers.onFailure(circuitKey(candidate.route, candidate.credential), candidate.route.provider.id, error);
}

export function reportSuccess(deps: GatewayDeps, candidate: Candidate): void {
  deps.breakers.onSuccess(circuitKey(candidate.route, candidate.credential), candidate.route.provider.id);
}

/** May this call still try another route? (Streams: only before the first byte reached the client.) */
export function canFallBack(call: CallState): boolean {
  return call.nextCandidate < call.plan.candidates.length && call.attempts.length < maxAttempts;
}

/** An upstream's own error, passed on with its status for 4xx and as a gateway 502 for 5xx. */
export function upstreamFailure(e: UpstreamError): AppError {
  if (e.status >= 400 && e.status < 500 && e.status !== 429) {
    return new AppError('invalid_request_error', 'upstream_rejected', `The provider rejected the request: ${e.message}`, { status: e.status === 401 || e.status === 403 ? 502 : e.status });
  }
  if (e.status === 429) return new AppError('upstream_error', 'upstream_rate_limited', `The provider is rate limiting: ${e.message}`, { status: 502 });
  return new AppError('upstream_error', 'upstream_error', `The provider failed: ${e.message}`, { status: 502 });
}

/**
 * Ends the call in the ledger: settle the priced usage (with its usage record, atomically), or
 * void the hold when nothing was produced. Returns the price; a call that finished alone gets it
 * before its settlement commits, to be answered while it does (see settlements.ts).
 */
export async function finish(deps: GatewayDeps, call: CallState, outcome: Outcome): Promise<Settled> {
  const { key, holdId } = call;
  if (!holdId) throw new Error('finish without a hold');
  if (call.finished) throw new Error(`call ${call.requestId} finished twice`);
  call.finished = true;
  const alone = deps.settlements.finishing();
  // An upstream that failed before producing output costs nothing; a disconnected client still
  // pays for the input the upstream processed and the output it produced.
  const producedSomething = outcome.status !== 'upstream_error' || outcome.usage.outputTokens > 0 || outcome.usage.images > 0;
  const latencyMs = Math.round(performance.now() - call.startedPerf);
  const ttfbMs = call.firstBytePerf === null ? null : Math.round(call.firstBytePerf - call.startedPerf);
  if (!producedSomething) {
    const records = [usageRecord(call, outcome, 0n, latencyMs, ttfbMs, false)];
    await settleOrStart(deps, call, alone, (opts) => deps.ledger.void(key.workspaceId, holdId, records, opts));
    return { chargedMicros: 0n };
  }
  const rate = (outcome.candidate ?? call.plan.candidates[0]).rate;
  const charge = chargeMicros(rate.rates, outcome.usage);
  const input = {
    workspaceId: key.workspaceId,
    holdId,
    actualMicros: charge,
    model: call.model.name,
    tag: call.endpoint,
    ref: call.requestId,
    records: [usageRecord(call, outcome, charge, latencyMs, ttfbMs, true)],
    keyUsage: { keyId: key.id, usedAtMs: call.startedAtMs },
  };
  await settleOrStart(deps, call, alone, (opts) => deps.ledger.settle(input, opts));
  return { chargedMicros: charge };
}

/**
 * Starts the settlement of a call that finished alone, to commit while it is answered (the write
 * is deferrable: free to wait a few milliseconds to share a commit); commits any other's now, in
 * the batch the settlements of the calls around it gather into (see settlements.ts). With
 * SETTLE_BEFORE_ANSWER, every call's commits now.
 */
async function settleOrStart(deps: GatewayDeps, call: CallState, alone: boolean, write: (opts?: WriteOptions) => Promise<unknown>): Promise<void> {
  if (deps.settleBeforeAnswer || !alone) {
    await write();
    return;
  }
  await deps.settlements.start(call.key.workspaceId, call.requestId, () => write({ deferrable: true }));
}

/**
 * The last word on an admitted call, in its handler's `finally`: a call that ended without
 * finishing (an unexpected error) gives its hold back now rather than when the hold times out.
 */
export async function finishIfUnfinished(deps: GatewayDeps, call: CallState): Promise<void> {
  if (!call.holdId || call.finished) return;
  deps.log.error({ requestId: call.requestId }, 'a call ended without settling; its hold is voided');
  await abandon(deps, call, 'internal_error');
}

/** Voids the hold of a call that failed before any upstream output, recording why. */
export async function abandon(deps: GatewayDeps, call: CallState, errorCode: string): Promise<void> {
  if (!call.holdId) return;
  await finish(deps, call, { status: 'upstream_error', usage: zeroUsage, estimated: false, candidate: null, errorCode }).catch((err) => {
    deps.log.error({ err, requestId: call.requestId }, 'voiding a hold failed; the sweeper will release it');
  });
}

/** The call's usage record, as data the ledger writes in the settlement's (or void's) transaction. */
function usageRecord(call: CallState, outcome: Outcome, charge: bigint, latencyMs: number, ttfbMs: number | null, settled: boolean): LedgerRecord {
  const route = outcome.candidate?.route ?? null;
  const cost = route?.cost ? costNanos(route.cost, outcome.usage) : null;
  // Credits are denominated in the operator's currency (as in the admin API's margins): one
  // credit is one unit of the cost's currency, so margin = charge − cost in nano-units.
  const margin = cost !== null ? charge * 1000n - cost : null;
  const usage = outcome.usage;
  return {
    table: 'usage_records',
    values: {
      id: call.requestId,
      workspace_id: call.key.workspaceId,
      key_id: call.key.id,
      endpoint: call.endpoint,
      model: call.model.name,
      provider_id: route?.provider.id ?? null,
      upstream_model: route?.upstreamModel ?? null,
      route_id: route?.id ?? null,
      rate_id: (outcome.candidate ?? call.plan.candidates[0]).rate.id,
      input_tokens: usage.inputTokens,
      cached_input_tokens: usage.cachedInputTokens,
      output_tokens: usage.outputTokens,
      reasoning_tokens: usage.reasoningTokens,
      images: usage.images,
      estimated: outcome.estimated ? 1 : 0,
      cost_nanos: cost,
      cost_currency: route?.cost?.currency ?? null,
      charge_micros: charge,
      margin_nanos: margin,
      hold_id: call.holdId,
      status: outcome.status,
      error_code: outcome.errorCode,
      stream: call.stream ? 1 : 0,
      latency_ms: latencyMs,
      ttfb_ms: ttfbMs,
      attempts: Math.max(call.attempts.length, 1),
      route_summary: storedRouteSummary(call, outcome),
      created_at: call.startedAtMs,
    },
    ...(settled ? { fill: { balanceAfterMicros: 'balance_after_micros', transferId: 'transfer_id' } } : {}),
  };
}

/** The audit of a call's route decision: what was chosen, how, every attempt and every skipped route. */
export function routeSummary(call: CallState, outcome: Pick<Outcome, 'candidate'> | null) {
  const chosen = outcome?.candidate ?? null;
  return {
    asked: call.model.name,
    chosen: chosen ? { model: chosen.model.name, routeId: chosen.route.id, providerId: chosen.route.provider.id, order: chosen.order } : null,
    policy: call.workspace.policy,
    priceBookId: call.workspace.priceBookId,
    attempts: call.attempts,
    fallbacks: call.attempts.slice(0, -1).map((a) => ({ from: a.routeId, reason: a.error ?? `HTTP ${a.status}` })),
    skipped: call.plan.skipped,
  };
}

/**
 * A route decision as the usage record keeps it. Most calls take the first route of their model at
 * the first attempt, with nothing skipped and no policy or price book in effect: their record's
 * own columns (model, route, provider) already say most of it, so only the rest is stored
 * (`{"plain":1,...}`, a sixth of the full text), and `routeDecisionOf` rebuilds the full decision.
 */
export function storedRouteSummary(call: CallState, outcome: Pick<Outcome, 'candidate'> | null): string {
  const chosen = outcome?.candidate ?? null;
  const only = call.attempts.length === 1 ? call.attempts[0] : null;
  const { policy } = call.workspace;
  const plain =
    chosen !== null &&
    only !== null &&
    call.plan.skipped.length === 0 &&
    chosen.model.name === call.model.name &&
    only.model === call.model.name &&
    only.routeId === chosen.route.id &&
    only.providerId === chosen.route.provider.id &&
    policy.allowedRegions === null &&
    !policy.zeroRetention &&
    call.workspace.priceBookId === null;
  if (!plain) return JSON.stringify(routeSummary(call, outcome));
  const stored: PlainRouteSummary = { plain: 1, order: chosen.order, credentialId: only.credentialId, status: only.status, error: only.error, latencyMs: only.latencyMs };
  return JSON.stringify(stored);
}

interface PlainRouteSummary {
  plain: 1;
  order: Candidate['order'];
  credentialId: string | null;
  status: number | null;
  error: string | null;
  latencyMs: number;
}

/** The full route decision of a usage record (see storedRouteSummary). */
export function routeDecisionOf(record: { route_summary: string | null; model: string; route_id: string | null; provider_id: string | null }): unknown {
  if (record.route_summary === null) return null;
  const stored = JSON.parse(record.route_summary) as ReturnType<typeof routeSummary> | PlainRouteSummary;
  if (!('plain' in stored)) return stored;
  const { model, route_id: routeId, provider_id: providerId } = record;
  const attempt: AttemptRecord = { model, routeId: routeId ?? '', providerId: providerId ?? '', credentialId: stored.credentialId, status: stored.status, error: stored.error, latencyMs: stored.latencyMs };
  return {
    asked: model,
    chosen: { model, routeId, providerId, order: stored.order },
    policy: { allowedRegions: null, zeroRetention: false },
    priceBookId: null,
    attempts: [attempt],
    fallbacks: [],
    skipped: [],
  };
}

/** Watches the client connection: aborts the upstream when the client goes away before the end. */
export function watchClient(req: FastifyRequest, reply: FastifyReply, deadlineMs: number) {
  const signal = new CallSignal();
  let clientGone = false;
  const timer = setTimeout(() => signal.abort(new Error('deadline')), deadlineMs);
  timer.unref();
  const onClose = () => {
    if (!reply.raw.writableFinished) {
      clientGone = true;
      signal.abort(new Error('client closed'));
    }
  };
  reply.raw.on('close', onClose);
  return {
    signal,
    get clientGone() {
      return clientGone;
    },
    done() {
      clearTimeout(timer);
      reply.raw.off('close', onClose);
    },
  };
}

export function newRequestId(): string {
  return newId('req');
}

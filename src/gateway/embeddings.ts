// Embeddings and image generation: one upstream answer each, priced by input tokens, images or
// requests, through the same hold → call → settle path as chat.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../lib/errors.ts';
import { formatCredits } from '../ledger/money.ts';
import { zeroUsage } from '../pricing/price.ts';
import { countTokens } from '../providers/tokenizer.ts';
import type { EmbeddingsRequest, ImagesRequest, Usage } from '../providers/types.ts';
import { encodeEmbeddingsBase64 } from '../providers/openai/index.ts';
import { afterCall } from './after-call.ts';
import { enforceRateLimits } from './rate-limits.ts';
import { abandon, admit, authenticate, callDeadlineMs, callUpstream, finish, finishIfUnfinished, reportSuccess, resolveCall, watchClient, type GatewayDeps } from './pipeline.ts';

const maxEmbeddingInputs = 2048;
const maxImagesPerCall = 10;

export async function handleEmbeddings(deps: GatewayDeps, req: FastifyRequest, reply: FastifyReply, body: EmbeddingsRequest) {
  const key = await authenticate(deps, req, 'embeddings');
  const inputTokens = embeddingInputTokens(body);
  const call = await resolveCall(deps, key, body.model, ['embedding'], 'embeddings', false, req.id);
  await enforceRateLimits(deps, call);
  const settings = await deps.settings.get();
  await admit(deps, call, { ...zeroUsage, inputTokens }, 0, settings, { strictAllowed: false });
  const watch = watchClient(req, reply, callDeadlineMs);
  try {
    const attempt = await callUpstream(deps, call, watch.signal, (adapter, target) => adapter.embeddings?.buildRequest(body, target) ?? null);
    if (!attempt.ok) {
      await abandon(deps, call, attempt.error.code);
      throw attempt.error;
    }
    const parsed = await readJson(deps, call, attempt.answer, (json) => attempt.adapter.embeddings!.parseResponse(json, body.model));
    call.firstBytePerf = performance.now();
    reportSuccess(deps, attempt.candidate);
    const usage: Usage = parsed.usage ?? { ...zeroUsage, inputTokens };
    const settled = await finish(deps, call, { status: 'ok', usage, estimated: parsed.usage === null, candidate: attempt.candidate, errorCode: null });
    reply.header('x-tollgate-credits-charged', formatCredits(settled.chargedMicros));
    // Upstreams that only speak floats (Gemini) are encoded here when the client asked for base64,
    // as the OpenAI SDK does by default.
    const response = body.encoding_format === 'base64' ? encodeEmbeddingsBase64(parsed.response) : parsed.response;
    const promptTokens = usage.inputTokens + usage.cachedInputTokens;
    const answer = { ...response, model: body.model, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } };
    afterCall(deps, call, usage, req.body, answer);
    return reply.send(answer);
  } finally {
    watch.done();
    await finishIfUnfinished(deps, call);
  }
}

export async function handleImages(deps: GatewayDeps, req: FastifyRequest, reply: FastifyReply, body: ImagesRequest) {
  const key = await authenticate(deps, req, 'images');
  if (typeof body.prompt !== 'string' || body.prompt.length === 0) {
    throw new AppError('invalid_request_error', 'invalid_prompt', "'prompt' must be a non-empty string.", { param: 'prompt' });
  }
  const n = body.n ?? 1;
  if (!Number.isSafeInteger(n) || n < 1 || n > maxImagesPerCall) {
    throw new AppError('invalid_request_error', 'invalid_n', `'n' must be an integer from 1 to ${maxImagesPerCall}.`, { param: 'n' });
  }
  const call = await resolveCall(deps, key, body.model, ['image'], 'images', false, req.id);
  await enforceRateLimits(deps, call);
  const settings = await deps.settings.get();
  const inputTokens = countTokens(body.prompt);
  await admit(deps, call, { ...zeroUsage, inputTokens, images: n }, 0, settings, { strictAllowed: false });
  const watch = watchClient(req, reply, callDeadlineMs);
  try {
    const attempt = await callUpstream(deps, call, watch.signal, (adapter, target) => adapter.images?.buildRequest(body, target) ?? null);
    if (!attempt.ok) {
      await abandon(deps, call, attempt.error.code);
      throw attempt.error;
    }
    const parsed = await readJson(deps, call, attempt.answer, (json) => attempt.adapter.images!.parseResponse(json));
    call.firstBytePerf = performance.now();
    reportSuccess(deps, attempt.candidate);
    const images = parsed.response.data.length;
    const usage: Usage = { ...zeroUsage, inputTokens: parsed.usage?.inputTokens || inputTokens, images };
    const settled = await finish(deps, call, { status: images > 0 ? 'ok' : 'upstream_error', usage, estimated: parsed.usage === null, candidate: attempt.candidate, errorCode: images > 0 ? null : 'no_images' });
    reply.header('x-tollgate-credits-charged', formatCredits(settled.chargedMicros));
    afterCall(deps, call, usage, req.body, parsed.response);
    return reply.send(parsed.response);
  } finally {
    watch.done();
    await finishIfUnfinished(deps, call);
  }
}

async function readJson<T>(
  deps: GatewayDeps,
  call: Parameters<typeof abandon>[1],
  answer: { text(): Promise<string> },
  parse: (json: unknown) => T,
): Promise<T> {
  try {
    return parse(JSON.parse(await answer.text()));
  } catch {
    await abandon(deps, call, 'upstream_bad_response');
    throw new AppError('upstream_error', 'upstream_bad_response', 'The provider answered with something this endpoint cannot read.', { status: 502 });
  }
}

function embeddingInputTokens(body: EmbeddingsRequest): number {
  const input = body.input;
  const fail = () => {
    throw new AppError('invalid_request_error', 'invalid_input', "'input' must be a string, an array of strings, or token arrays.", { param: 'input' });
  };
  if (typeof input === 'string') return countTokens(input);
  if (!Array.isArray(input) || input.length === 0 || input.length > maxEmbeddingInputs) return fail();
  let total = 0;
  for (const item of input as unknown[]) {
    if (typeof item === 'string') total += countTokens(item);
    else if (typeof item === 'number') total += 1;
    else if (Array.isArray(item) && item.every((t) => typeof t === 'number')) total += item.length;
    else fail();
  }
  return total;
}

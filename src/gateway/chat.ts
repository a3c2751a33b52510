// A chat call, streamed or not, from either front door: the money path of pipeline.ts applied to
// chat completions. Streams are streams: each upstream piece is translated and written on as it
// arrives; usage comes from the provider's own report, counted with the tokenizer only where the
// provider reported nothing or the stream was cut, and then marked estimated.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../lib/errors.ts';
import { formatCredits } from '../ledger/money.ts';
import { zeroUsage } from '../pricing/price.ts';
import { countMessagesTokens, countTokens } from '../providers/tokenizer.ts';
import type { ChatChunk, ChatRequest, ChatResponse, FinishReason, StreamTranslator, Usage } from '../providers/types.ts';
import type { ChatFormat } from './formats.ts';
import { afterCall } from './after-call.ts';
import { enforceRateLimits } from './rate-limits.ts';
import {
  abandon,
  admit,
  authenticate,
  callDeadlineMs,
  callUpstream,
  canFallBack,
  finish,
  finishIfUnfinished,
  outputAllowance,
  reportFailure,
  reportSuccess,
  resolveCall,
  watchClient,
  type CallState,
  type GatewayDeps,
  type Outcome,
} from './pipeline.ts';

const maxMessages = 10_000;

export async function handleChat(deps: GatewayDeps, req: FastifyRequest, reply: FastifyReply, format: ChatFormat, body: ChatRequest) {
  const key = await authenticate(deps, req, format.endpoint === 'messages' ? 'messages' : 'chat.completions');
  validateChat(body);
  const stream = body.stream === true;
  const call = await resolveCall(deps, key, body.model, ['text', 'coding'], format.endpoint, stream, req.id);
  const { model } = call;
  await enforceRateLimits(deps, call);
  const settings = await deps.settings.get();

  const inputTokens = estimateInputTokens(body);
  const requested = body.max_completion_tokens ?? body.max_tokens ?? null;
  const admitted = await admit(deps, call, { ...zeroUsage, inputTokens }, outputAllowance(requested, model, settings), settings, { strictAllowed: true });
  // Near the limit the output is capped to what the balance affords, so the call cannot overdraw.
  const upstreamBody: ChatRequest = admitted.strict
    ? body.max_completion_tokens != null
      ? { ...body, max_completion_tokens: admitted.outputAllowance }
      : { ...body, max_tokens: admitted.outputAllowance }
    : body;

  const watch = watchClient(req, reply, callDeadlineMs);
  try {
    for (;;) {
    const attempt = await callUpstream(deps, call, watch.signal, (adapter, target) => adapter.chat.buildRequest(upstreamBody, target, stream));
    if (!attempt.ok) {
      if (watch.clientGone) {
        await abandon(deps, call, 'client_disconnected');
        return reply;
      }
      await abandon(deps, call, attempt.error.code);
      // A stream that fell back has hijacked the reply: Fastify's error handler can no longer answer.
      if (reply.sent) {
        reply.raw.writeHead(attempt.error.status, { 'content-type': 'application/json', 'x-request-id': call.requestId });
        reply.raw.end(JSON.stringify(format.errorBody(attempt.error, call.requestId)));
        return reply;
      }
      throw attempt.error;
    }
    if (!stream) {
      let text: string;
      try {
        text = await attempt.answer.text();
      } catch (err) {
        if (watch.clientGone) {
          // The client left while the upstream was working: bill the input it processed.
          const usage: Usage = { ...zeroUsage, inputTokens };
          await finish(deps, call, { status: 'client_disconnected', usage, estimated: true, candidate: attempt.candidate, errorCode: 'client_disconnected' });
          afterCall(deps, call, usage, req.body, null);
          return reply;
        }
        await abandon(deps, call, 'upstream_read_failed');
        throw new AppError('upstream_error', 'upstream_read_failed', 'The provider stopped answering mid-response.', { status: 502 });
      }
      call.firstBytePerf = performance.now();
      let parsed: { response: ChatResponse; usage: Usage | null };
      try {
        parsed = attempt.adapter.chat.parseResponse(JSON.parse(text), body.model);
      } catch {
        await abandon(deps, call, 'upstream_bad_response');
        throw new AppError('upstream_error', 'upstream_bad_response', 'The provider answered with something that is not a chat completion.', { status: 502 });
      }
      reportSuccess(deps, attempt.candidate);
      const usage = parsed.usage ?? estimateUsage(inputTokens, responseText(parsed.response));
      const settled = await finish(deps, call, { status: 'ok', usage, estimated: parsed.usage === null, candidate: attempt.candidate, errorCode: null });
      reply.header('x-tollgate-credits-charged', formatCredits(settled.chargedMicros));
      const answer = format.json(parsed.response, usage, body.model);
      afterCall(deps, call, usage, req.body, answer);
      return reply.send(answer);
    }
    const relayed = await relayStream(deps, reply, format, call, body, inputTokens, attempt, attempt.adapter.chat.createStreamTranslator(body.model), watch);
    // Nothing reached the client yet and another route is left: fall back (the failed attempt costs nothing).
    if (relayed === 'fall_back') continue;
    return reply;
    }
  } finally {
    watch.done();
    await finishIfUnfinished(deps, call);
  }
}

async function relayStream(
  deps: GatewayDeps,
  reply: FastifyReply,
  format: ChatFormat,
  call: CallState,
  body: ChatRequest,
  inputTokens: number,
  attempt: Extract<Awaited<ReturnType<typeof callUpstream>>, { ok: true }>,
  translator: StreamTranslator,
  watch: ReturnType<typeof watchClient>,
): Promise<'done' | 'fall_back'> {
  if (!reply.sent) reply.hijack();
  const raw = reply.raw;
  const encoder = format.encoder(body.model, body.stream_options?.include_usage === true);
  let headWritten = false;
  // What one upstream piece (or the end) produced goes out in one write: one socket write per
  // piece the upstream sent, not one per event in it. Pieces read after the upstream has already
  // sent its end (a short answer often arrives whole) are held and go out with the stream's own
  // end, once it is settled: one socket write for all of it.
  let held = '';
  const started = () => headWritten || held.length > 0;
  const write = (text: string, end = false) => {
    if (watch.clientGone) return;
    if (!end && attempt.answer.complete === true) {
      held += text;
      return;
    }
    text = held + text;
    held = '';
    if (!headWritten) {
      if (text.length === 0 && !end) return;
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-request-id': call.requestId,
      });
      headWritten = true;
      call.firstBytePerf = performance.now();
      text = encoder.open(inputTokens) + text;
    }
    if (end) raw.end(text);
    else if (text.length > 0) raw.write(text);
  };

  let finishReason: FinishReason | null = null;
  const forward = (chunks: ChatChunk[]) => {
    let text = '';
    for (const c of chunks) {
      // Usage-only chunks are the gateway's to emit (at the end, if the client asked for them).
      if (c.choices.length === 0) continue;
      for (const choice of c.choices) if (choice.finish_reason) finishReason = choice.finish_reason;
      text += encoder.chunk(c);
    }
    write(text);
  };

  let failed = false;
  const decoder = new TextDecoder();
  try {
    for await (const piece of attempt.answer.body) {
      forward(translator.push(decoder.decode(piece, { stream: true })));
      if (translator.error()) break;
    }
    forward(translator.push(decoder.decode()));
    forward(translator.end());
  } catch {
    failed = true;
  }

  const upstreamError = translator.error();
  const cut = failed || upstreamError !== null;
  if (cut && !watch.clientGone) {
    // The attempt answered 200 but failed: the audit says how (not "HTTP 200").
    const record = call.attempts[call.attempts.length - 1];
    if (record) record.error = upstreamError ? `stream error ${upstreamError.type}` : 'stream cut';
  }
  if (cut && !started() && !watch.clientGone) {
    reportFailure(deps, attempt.candidate, upstreamError ? `stream error ${upstreamError.type}` : 'stream cut');
    if (canFallBack(call)) return 'fall_back';
  }
  const outcome = streamOutcome(call, attempt.candidate, translator, inputTokens, { failed, clientGone: watch.clientGone, upstreamError: upstreamError !== null });
  let settled;
  try {
    settled = await finish(deps, call, outcome);
    afterCall(deps, call, outcome.usage, reply.request.body, translator.outputText());
  } catch (err) {
    deps.log.error({ err, requestId: call.requestId }, 'settling a stream failed');
    if (started()) write(encoder.error(internalError()), true);
    else if (!watch.clientGone) {
      raw.writeHead(500, { 'content-type': 'application/json', 'x-request-id': call.requestId });
      raw.end(JSON.stringify(format.errorBody(internalError(), call.requestId)));
    }
    return 'done';
  }
  if (watch.clientGone) {
    raw.destroy();
    return 'done';
  }
  if (outcome.status === 'ok') {
    reportSuccess(deps, attempt.candidate);
    write(encoder.close(outcome.usage, finishReason), true);
    return 'done';
  }
  const err = upstreamError
    ? new AppError('upstream_error', 'upstream_stream_error', `The provider failed mid-stream: ${upstreamError.message}`, { status: 502 })
    : new AppError('upstream_error', 'upstream_stream_cut', 'The provider closed the stream before it ended.', { status: 502 });
  if (started()) {
    write(encoder.error(err), true);
  } else {
    raw.writeHead(err.status, { 'content-type': 'application/json', 'x-request-id': call.requestId });
    raw.end(JSON.stringify(format.errorBody(err, call.requestId)));
  }
  void settled;
  return 'done';
}

/**
 * What a finished stream costs. A complete stream: the provider's usage. A cut one (client gone,
 * upstream failure): the input plus the output actually produced, counted, marked estimated.
 */
function streamOutcome(
  call: CallState,
  candidate: Outcome['candidate'],
  translator: StreamTranslator,
  inputTokens: number,
  how: { failed: boolean; clientGone: boolean; upstreamError: boolean },
): Outcome {
  const reported = translator.usage();
  const complete = !how.failed && !how.clientGone && !how.upstreamError;
  if (complete) {
    const usage = reported ?? estimateUsage(inputTokens, translator.outputText());
    return { status: 'ok', usage, estimated: reported === null, candidate, errorCode: null };
  }
  const counted = countTokens(translator.outputText());
  const usage: Usage = {
    inputTokens: reported && reported.inputTokens + reported.cachedInputTokens > 0 ? reported.inputTokens : inputTokens,
    cachedInputTokens: reported?.cachedInputTokens ?? 0,
    // Output is what was produced, counted. A counter the upstream sent before any output (Anthropic's
    // message_start says output_tokens: 1) is a placeholder, not production: it must not turn a
    // stream that failed before its first token into a billed one.
    outputTokens: counted > 0 ? Math.max(counted, reported?.outputTokens ?? 0) : 0,
    reasoningTokens: 0,
    images: 0,
  };
  const status = how.clientGone ? 'client_disconnected' : 'upstream_error';
  void call;
  return { status, usage, estimated: true, candidate, errorCode: how.clientGone ? 'client_disconnected' : how.upstreamError ? 'upstream_stream_error' : 'upstream_stream_cut' };
}

function estimateInputTokens(body: ChatRequest): number {
  const tools = body.tools ? countTokens(JSON.stringify(body.tools)) : 0;
  return countMessagesTokens(body.messages) + tools;
}

function estimateUsage(inputTokens: number, outputText: string): Usage {
  return { ...zeroUsage, inputTokens, outputTokens: countTokens(outputText) };
}

function responseText(r: ChatResponse): string {
  return r.choices.map((c) => (c.message.content ?? '') + (c.message.tool_calls ?? []).map((t) => t.function.arguments).join('')).join('');
}

function validateChat(body: ChatRequest): void {
  if (typeof body !== 'object' || body === null) throw new AppError('invalid_request_error', 'invalid_body', 'The body must be a JSON object.');
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    throw new AppError('invalid_request_error', 'invalid_messages', "'messages' must be a non-empty array.", { param: 'messages' });
  }
  if (body.messages.length > maxMessages) throw new AppError('invalid_request_error', 'too_many_messages', `At most ${maxMessages} messages.`, { param: 'messages' });
  for (const [i, m] of body.messages.entries()) {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string') {
      throw new AppError('invalid_request_error', 'invalid_message', `messages[${i}] must be an object with a 'role'.`, { param: `messages.${i}` });
    }
  }
  for (const p of ['max_tokens', 'max_completion_tokens'] as const) {
    const v = body[p];
    if (v != null && (!Number.isSafeInteger(v) || v < 1)) {
      throw new AppError('invalid_request_error', 'invalid_max_tokens', `'${p}' must be a positive integer.`, { param: p });
    }
  }
  if (body.stream != null && typeof body.stream !== 'boolean') throw new AppError('invalid_request_error', 'invalid_stream', "'stream' must be a boolean.", { param: 'stream' });
}

const internalError = () => new AppError('api_error', 'internal_error', 'An internal error occurred; it has been logged.');

// A stand-in for OpenAI's `POST /v1/chat/completions` that answers at once from memory, so the
// benchmark measures the gateways and not an upstream: a fixed chat.completion, or the same answer
// as an SSE stream (chunked, usage chunk when asked, `data: [DONE]`). `GET /_stats` counts calls.
// Run as its own process: `PORT=9000 node --import tsx bench/gateway/mock-upstream.ts`.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

const bodyLimitBytes = 1024 * 1024;
const keepAliveTimeoutMs = 60_000;

const id = 'chatcmpl-bench0000000000000000000000';
const created = 1_763_856_000;
const model = 'gpt-4o-mini-2024-07-18';
const systemFingerprint = 'fp_bench0000';
const replyPieces = ['Hello', '!', ' How', ' can', ' I', ' help', ' you', ' today', '?'];
const usage = {
  prompt_tokens: 9,
  completion_tokens: replyPieces.length,
  total_tokens: 9 + replyPieces.length,
  prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
};

const completionBytes = Buffer.from(
  JSON.stringify({
    id,
    object: 'chat.completion',
    created,
    model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: replyPieces.join(''), refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: 'stop',
      },
    ],
    usage,
    service_tier: 'default',
    system_fingerprint: systemFingerprint,
  }),
);

function chunk(choices: unknown[], withUsageField: boolean, usageValue: unknown = null): string {
  const body: Record<string, unknown> = { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: systemFingerprint, choices };
  if (withUsageField) body.usage = usageValue;
  return `data: ${JSON.stringify(body)}\n\n`;
}

function streamBytes(includeUsage: boolean): Buffer {
  const events = [chunk([{ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }], includeUsage)];
  for (const piece of replyPieces) events.push(chunk([{ index: 0, delta: { content: piece }, logprobs: null, finish_reason: null }], includeUsage));
  events.push(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }], includeUsage));
  if (includeUsage) events.push(chunk([], true, usage));
  events.push('data: [DONE]\n\n');
  return Buffer.from(events.join(''));
}

const streamWithUsage = streamBytes(true);
const streamWithoutUsage = streamBytes(false);
let chatCompletions = 0;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const bytes = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(bytes) });
  res.end(bytes);
}

function sendError(res: ServerResponse, status: number, message: string): void {
  sendJson(res, status, { error: { message, type: 'invalid_request_error', param: null, code: null } });
}

function answerChat(res: ServerResponse, raw: string): void {
  let body: { stream?: unknown; stream_options?: { include_usage?: unknown } | null };
  try {
    body = JSON.parse(raw) as typeof body;
  } catch {
    sendError(res, 400, 'We could not parse the JSON body of your request.');
    return;
  }
  chatCompletions += 1;
  if (body.stream !== true) {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': completionBytes.byteLength });
    res.end(completionBytes);
    return;
  }
  // Written without a length, as OpenAI does: the client sees a chunked event stream.
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
  res.write(body.stream_options?.include_usage === true ? streamWithUsage : streamWithoutUsage);
  res.end();
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'GET' && req.url === '/_stats') {
    sendJson(res, 200, { chatCompletions });
    return;
  }
  if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
    sendError(res, 404, `Unknown request URL: ${req.method} ${req.url}.`);
    return;
  }
  const parts: Buffer[] = [];
  let size = 0;
  req.on('data', (part: Buffer) => {
    size += part.byteLength;
    if (size > bodyLimitBytes) {
      sendError(res, 413, 'Request too large.');
      req.destroy();
      return;
    }
    parts.push(part);
  });
  req.on('end', () => {
    if (size <= bodyLimitBytes) answerChat(res, Buffer.concat(parts).toString('utf8'));
  });
}

const port = Number(process.env.PORT ?? 0);
const server = createServer({ keepAliveTimeout: keepAliveTimeoutMs }, handle);
server.listen(port, process.env.HOST ?? '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`mock upstream listening on ${typeof address === 'object' && address ? address.port : port}\n`);
});
process.once('SIGTERM', () => server.close(() => process.exit(0)));

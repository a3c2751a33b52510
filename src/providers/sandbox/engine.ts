// The sandbox's deterministic "model": the same request always gets the same answer text, tool
// call and token counts (from the real o200k tokenizer), in OpenAI's exact wire objects. The
// in-process sandbox provider serves it, and the test upstream mocks reuse it.
import { createHash, randomBytes } from 'node:crypto';
import type {
  ChatChunk,
  ChatMessage,
  ChatRequest,
  ChatResponse,
  EmbeddingsRequest,
  EmbeddingsResponse,
  FinishReason,
  ImagesRequest,
  ImagesResponse,
  OpenAIUsage,
  ToolCall,
} from '../types.ts';
import { countMessagesTokens, countTokens, decodeTokens, encodeTokens } from '../tokenizer.ts';

/** How much of the last user message the reply quotes. */
export const quotedChars = 40;
export const sandboxSentence = 'This answer is deterministic: no model was called.';
/** The arguments of every tool call the sandbox makes. */
export const sandboxToolArguments = '{"location":"Paris"}';
/** Stream pieces hold 1, 2, 3, 1, 2, 3... tokens, like a real model's uneven chunks. */
const piecePattern = [1, 2, 3];
export const defaultEmbeddingDimensions = 8;
export const maxEmbeddingDimensions = 4096;
export const maxImagesPerRequest = 10;
export const systemFingerprint = 'fp_tollgate_sandbox';
/** A 1×1 transparent PNG. */
export const sandboxPngBase64 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

export interface ChatAnswer {
  /** Answer text, null when the answer is a tool call. */
  content: string | null;
  /** The content as streamed: consecutive pieces of 1-3 tokens, joined they are `content`. */
  pieces: string[];
  toolCalls: ToolCall[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Tokens of the produced text: content, or the tool calls' arguments. */
  completionTokens: number;
}

/** Text of a message's content (text parts joined), for quoting and tool decisions. */
export function messageText(message: ChatMessage | undefined): string {
  const content = message?.content;
  if (content == null) return '';
  if (typeof content === 'string') return content;
  return content
    .filter((part) => part.type === 'text')
    .map((part) => part.text ?? '')
    .join(' ');
}

function lastUserMessage(messages: ChatMessage[]): ChatMessage | undefined {
  for (let i = messages.length - 1; i >= 0; i--) if (messages[i].role === 'user') return messages[i];
  return undefined;
}

/** The function the answer calls, or null for a text answer (always after a tool result). */
function chosenTool(req: ChatRequest, userText: string): string | null {
  const tools = (req.tools ?? []).filter((tool) => tool.type === 'function');
  if (tools.length === 0 || req.tool_choice === 'none') return null;
  if (req.messages[req.messages.length - 1]?.role === 'tool') return null;
  if (typeof req.tool_choice === 'object') return req.tool_choice.function.name;
  if (req.tool_choice === 'required' || /\bweather\b/i.test(userText)) return tools[0].function.name;
  return null;
}

export function replyText(userText: string, name: string): string {
  const quoted = Array.from(userText.replace(/\s+/g, ' ').trim()).slice(0, quotedChars).join('');
  return `${name} reply to: "${quoted}". ${sandboxSentence}`;
}

/** Splits tokens into pieces of 1-3 tokens, never cutting a character in two. */
export function streamPieces(tokens: number[]): string[] {
  const pieces: string[] = [];
  let emitted = '';
  let end = 0;
  let step = 0;
  while (end < tokens.length) {
    end = Math.min(tokens.length, end + piecePattern[step++ % piecePattern.length]);
    const text = decodeTokens(tokens.slice(0, end));
    if (end < tokens.length && text.endsWith('\uFFFD')) continue; // a multi-byte character is incomplete
    pieces.push(text.slice(emitted.length));
    emitted = text;
  }
  return pieces;
}

/** Prompt tokens as the gateway estimates them: the messages, plus the tool definitions' JSON. */
export function promptTokensOf(req: Pick<ChatRequest, 'messages' | 'tools'>): number {
  const toolTokens = req.tools && req.tools.length > 0 ? countTokens(JSON.stringify(req.tools)) : 0;
  return countMessagesTokens(req.messages) + toolTokens;
}

/**
 * The answer to a chat request. `name` starts the reply ("Sandbox reply to: ..."), so a test can
 * tell which upstream answered; `replyText` replaces the generated text (no tool call then). The
 * reply quotes the last user message, or the tool result when the conversation ends with one.
 * max_completion_tokens / max_tokens cut the reply (finish 'length').
 */
export function answerChat(req: ChatRequest, options: { name?: string; replyText?: string } = {}): ChatAnswer {
  const userText = messageText(lastUserMessage(req.messages));
  const promptTokens = promptTokensOf(req);
  const tool = options.replyText === undefined ? chosenTool(req, userText) : null;
  if (tool !== null) {
    const id = `call_${createHash('sha256').update(`${tool}\n${userText}`).digest('hex').slice(0, 24)}`;
    return {
      content: null,
      pieces: [],
      toolCalls: [{ id, type: 'function', function: { name: tool, arguments: sandboxToolArguments } }],
      finishReason: 'tool_calls',
      promptTokens,
      completionTokens: countTokens(sandboxToolArguments),
    };
  }
  const last = req.messages[req.messages.length - 1];
  const quoted = last?.role === 'tool' ? messageText(last) : userText;
  let tokens = encodeTokens(options.replyText ?? replyText(quoted, options.name ?? 'Sandbox'));
  const limit = req.max_completion_tokens ?? req.max_tokens;
  let finishReason: FinishReason = 'stop';
  if (typeof limit === 'number' && limit >= 0 && tokens.length > limit) {
    tokens = tokens.slice(0, limit);
    finishReason = 'length';
  }
  const pieces = streamPieces(tokens);
  const content = pieces.join('');
  return { content, pieces, toolCalls: [], finishReason, promptTokens, completionTokens: countTokens(content) };
}

export function openaiUsageOf(answer: ChatAnswer): OpenAIUsage {
  return {
    prompt_tokens: answer.promptTokens,
    completion_tokens: answer.completionTokens,
    total_tokens: answer.promptTokens + answer.completionTokens,
    prompt_tokens_details: { cached_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0 },
  };
}

export function newCompletionId(): string {
  return `chatcmpl-${randomBytes(12).toString('base64url')}`;
}

/** The non-streamed OpenAI answer (`model` is the model the request named); usage null omits it. */
export function chatCompletionOf(req: ChatRequest, answer: ChatAnswer, usage: OpenAIUsage | null = openaiUsageOf(answer)): ChatResponse {
  const message: ChatResponse['choices'][number]['message'] = { role: 'assistant', content: answer.content, refusal: null };
  if (answer.toolCalls.length > 0) message.tool_calls = answer.toolCalls;
  const response: ChatResponse = {
    id: newCompletionId(),
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: req.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: answer.finishReason }],
    system_fingerprint: systemFingerprint,
  };
  if (usage) response.usage = usage;
  return response;
}

/**
 * The streamed OpenAI answer, chunk by chunk, as the real API sends it: a role chunk, content
 * (or tool-call argument) pieces, a finish chunk, and, only when the request asked
 * `stream_options.include_usage`, `usage: null` on every chunk plus a final usage-only chunk
 * (left out when `usage` is null: an upstream that ignores include_usage).
 */
export function chatChunksOf(req: ChatRequest, answer: ChatAnswer, usage: OpenAIUsage | null = openaiUsageOf(answer)): ChatChunk[] {
  const includeUsage = req.stream_options?.include_usage === true;
  const id = newCompletionId();
  const created = Math.floor(Date.now() / 1000);
  const chunk = (delta: ChatChunk['choices'][number]['delta'], finishReason: FinishReason | null): ChatChunk => {
    const c: ChatChunk = {
      id,
      object: 'chat.completion.chunk',
      created,
      model: req.model,
      choices: [{ index: 0, delta, finish_reason: finishReason }],
    };
    (c as ChatChunk & { system_fingerprint: string }).system_fingerprint = systemFingerprint;
    if (includeUsage) c.usage = null;
    return c;
  };
  const chunks: ChatChunk[] = [];
  const call = answer.toolCalls[0];
  if (call) {
    chunks.push(
      chunk(
        { role: 'assistant', content: null, tool_calls: [{ index: 0, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } }] },
        null,
      ),
    );
    for (const piece of splitText(call.function.arguments, 3)) {
      chunks.push(chunk({ tool_calls: [{ index: 0, function: { arguments: piece } }] }, null));
    }
  } else {
    chunks.push(chunk({ role: 'assistant', content: '', refusal: null }, null));
    for (const piece of answer.pieces) chunks.push(chunk({ content: piece }, null));
  }
  chunks.push(chunk({}, answer.finishReason));
  if (includeUsage && usage) {
    chunks.push({ id, object: 'chat.completion.chunk', created, model: req.model, choices: [], usage });
  }
  return chunks;
}

/** Cuts text into `parts` nearly equal pieces (used for tool-call arguments). */
export function splitText(text: string, parts: number): string[] {
  const size = Math.ceil(text.length / parts);
  const pieces: string[] = [];
  for (let i = 0; i < text.length; i += size) pieces.push(text.slice(i, i + size));
  return pieces;
}

export function sseOf(chunks: unknown[]): string[] {
  return [...chunks.map((chunk) => `data: ${JSON.stringify(chunk)}\n\n`), 'data: [DONE]\n\n'];
}

// ---- embeddings and images ----

function embeddingInputs(input: EmbeddingsRequest['input']): Array<{ text: string; tokens: number }> {
  if (typeof input === 'string') return [{ text: input, tokens: countTokens(input) }];
  if (input.length > 0 && input.every((item) => typeof item === 'number')) {
    return [{ text: (input as number[]).join(','), tokens: input.length }];
  }
  return (input as Array<string | number[]>).map((item) =>
    typeof item === 'string' ? { text: item, tokens: countTokens(item) } : { text: item.join(','), tokens: item.length },
  );
}

/** A unit vector derived from a hash of the text: equal texts, equal vectors. */
export function embeddingVector(text: string, dimensions: number): number[] {
  const values: number[] = [];
  for (let block = 0; values.length < dimensions; block++) {
    const digest = createHash('sha256').update(`${block}\n${text}`).digest();
    for (let i = 0; i + 1 < digest.length && values.length < dimensions; i += 2) {
      values.push(digest.readUInt16BE(i) / 32768 - 1);
    }
  }
  const norm = Math.sqrt(values.reduce((sum, v) => sum + v * v, 0)) || 1;
  return values.map((v) => Math.fround(v / norm));
}

export function embeddingsOf(req: EmbeddingsRequest): EmbeddingsResponse {
  const dimensions = Math.min(maxEmbeddingDimensions, Math.max(1, req.dimensions ?? defaultEmbeddingDimensions));
  const inputs = embeddingInputs(req.input);
  const promptTokens = inputs.reduce((sum, item) => sum + item.tokens, 0);
  const data = inputs.map((item, index) => {
    const vector = embeddingVector(item.text, dimensions);
    const embedding = req.encoding_format === 'base64' ? Buffer.from(Float32Array.from(vector).buffer).toString('base64') : vector;
    return { object: 'embedding' as const, index, embedding };
  });
  return { object: 'list', data, model: req.model, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } };
}

export function imagesOf(req: ImagesRequest): ImagesResponse {
  const n = Math.min(maxImagesPerRequest, Math.max(1, req.n ?? 1));
  const image = req.response_format === 'url' ? { url: `data:image/png;base64,${sandboxPngBase64}` } : { b64_json: sandboxPngBase64 };
  return { created: Math.floor(Date.now() / 1000), data: Array.from({ length: n }, () => ({ ...image })) };
}

/** OpenAI's error body. */
export function openaiErrorBody(message: string, type: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type, param, code } };
}

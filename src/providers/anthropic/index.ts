// The Anthropic Messages API adapter: canonical (OpenAI chat) requests become `POST /v1/messages`
// bodies, and Anthropic's messages, SSE events and errors become canonical answers and Usage.
import { invalid } from '../../lib/errors.ts';
import { clip, isRetryableStatus, malformedResponse, openAIUsageOf, streamProtocolError, unsupportedRequest } from '../common.ts';
import { SseParser, type SseEvent } from '../sse.ts';
import type {
  ChatAdapter,
  ChatChunk,
  ChatMessage,
  ChatRequest,
  ChatResponse,
  ContentPart,
  FinishReason,
  PreparedRequest,
  ProviderAdapter,
  StreamTranslator,
  ToolCall,
  UpstreamError,
  UpstreamTarget,
  Usage,
} from '../types.ts';
import {
  anthropicErrorTypeForStatus,
  anthropicVersion,
  isAnthropicErrorType,
  statusByAnthropicErrorType,
  type AnthropicContentBlock,
  type AnthropicDocumentBlock,
  type AnthropicImageBlock,
  type AnthropicMessage,
  type AnthropicMessageParam,
  type AnthropicRequest,
  type AnthropicTextBlock,
  type AnthropicTool,
  type AnthropicToolChoice,
  type AnthropicToolResultBlock,
  type AnthropicUsage,
} from './wire.ts';

/** Anthropic requires max_tokens; this is what a request that names none gets. */
export const defaultMaxTokens = 4096;
/** Anthropic's temperature range is [0, 1]; OpenAI's is [0, 2]. */
export const maxAnthropicTemperature = 1;

export const jsonObjectInstruction = 'Respond with a single valid JSON object and nothing else: no prose, no code fences.';

// ---------------------------------------------------------------------------------------------
// Canonical request → Anthropic request

export function messagesUrl(baseUrl: string): string {
  const base = baseUrl.replace(/\/+$/, '');
  return /\/v1$/.test(base) ? `${base}/messages` : `${base}/v1/messages`;
}

export function buildMessagesRequest(req: ChatRequest, target: UpstreamTarget, stream: boolean): PreparedRequest {
  const body = toAnthropicRequest(req, target.upstreamModel, stream);
  return {
    url: messagesUrl(target.baseUrl),
    method: 'POST',
    headers: {
      'x-api-key': target.apiKey,
      'anthropic-version': target.apiVersion ?? anthropicVersion,
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
    },
    body: JSON.stringify(body),
  };
}

/** The Anthropic body for a canonical request (pure; throws invalid_request_error AppErrors). */
export function toAnthropicRequest(req: ChatRequest, upstreamModel: string, stream: boolean): AnthropicRequest {
  if (typeof req.n === 'number' && req.n > 1) {
    throw unsupportedRequest('Anthropic models return one choice per request: n must be 1.', 'n');
  }
  const system: AnthropicTextBlock[] = [];
  const messages: AnthropicMessageParam[] = [];
  req.messages.forEach((message, i) => {
    switch (message.role) {
      case 'system':
      case 'developer':
        system.push(...systemBlocks(message, i));
        break;
      case 'user':
        appendTurn(messages, 'user', userBlocks(message.content, i));
        break;
      case 'assistant':
        appendTurn(messages, 'assistant', assistantBlocks(message, i));
        break;
      case 'tool':
        appendTurn(messages, 'user', [toolResultBlock(message, i)]);
        break;
      default:
        throw invalid('invalid_role', `Unsupported message role '${String(message.role)}'.`, `messages[${i}].role`);
    }
  });
  const instruction = responseFormatInstruction(req.response_format);
  if (instruction) system.push({ type: 'text', text: instruction });

  const body: AnthropicRequest = {
    model: upstreamModel,
    max_tokens: req.max_completion_tokens ?? req.max_tokens ?? defaultMaxTokens,
    messages: messages.map(compactTurn),
  };
  if (system.length > 0) body.system = compactSystem(system);
  const stop = stopSequences(req.stop);
  if (stop.length > 0) body.stop_sequences = stop;
  if (typeof req.temperature === 'number') body.temperature = Math.min(maxAnthropicTemperature, Math.max(0, req.temperature));
  if (typeof req.top_p === 'number') body.top_p = req.top_p;
  const tools = (req.tools ?? []).map(toAnthropicTool);
  if (tools.length > 0) {
    body.tools = tools;
    const choice = toAnthropicToolChoice(req.tool_choice, req.parallel_tool_calls === false);
    if (choice) body.tool_choice = choice;
  }
  if (typeof req.user === 'string' && req.user !== '') body.metadata = { user_id: req.user };
  if (stream) body.stream = true;
  return body;
}

function systemBlocks(message: ChatMessage, i: number): AnthropicTextBlock[] {
  const content = message.content;
  if (content == null) return [];
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  return content.flatMap((part, j): AnthropicTextBlock[] => {
    if (part.type !== 'text') {
      throw unsupportedRequest(`System messages can only hold text parts, not '${part.type}'.`, `messages[${i}].content[${j}]`);
    }
    return part.text ? [withCacheControl<AnthropicTextBlock>({ type: 'text', text: part.text }, part)] : [];
  });
}

function userBlocks(content: ChatMessage['content'], i: number): AnthropicContentBlock[] {
  if (content == null) return [];
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  return content.flatMap((part, j) => partBlocks(part, `messages[${i}].content[${j}]`));
}

function partBlocks(part: ContentPart, param: string): AnthropicContentBlock[] {
  switch (part.type) {
    case 'text':
      return part.text ? [withCacheControl<AnthropicTextBlock>({ type: 'text', text: part.text }, part)] : [];
    case 'image_url':
      return [withCacheControl(imageBlock(part.image_url?.url, param), part)];
    case 'file':
      return [withCacheControl(documentBlock(part.file, param), part)];
    default:
      throw unsupportedRequest(`Anthropic models do not accept '${part.type}' content parts.`, param);
  }
}

const dataUrlPattern = /^data:([^;,]+)((?:;[^;,]*)*),(.*)$/s;

function parseDataUrl(url: string, param: string): { mediaType: string; data: string } {
  const match = dataUrlPattern.exec(url);
  if (!match || !match[2].split(';').includes('base64')) {
    throw invalid('invalid_image_url', 'Data URLs must be base64-encoded (data:<media type>;base64,<data>).', param);
  }
  return { mediaType: match[1], data: match[3] };
}

function imageBlock(url: unknown, param: string): AnthropicImageBlock {
  if (typeof url !== 'string' || url === '') throw invalid('invalid_image_url', 'image_url.url is required.', param);
  if (url.startsWith('data:')) {
    const { mediaType, data } = parseDataUrl(url, param);
    return { type: 'image', source: { type: 'base64', media_type: mediaType, data } };
  }
  if (/^https?:\/\//i.test(url)) return { type: 'image', source: { type: 'url', url } };
  throw invalid('invalid_image_url', 'image_url.url must be an http(s) URL or a base64 data URL.', param);
}

function documentBlock(file: unknown, param: string): AnthropicDocumentBlock {
  const f = (file ?? {}) as { file_data?: unknown; filename?: unknown };
  if (typeof f.file_data !== 'string') {
    throw unsupportedRequest('Only inline files (file.file_data as a base64 data URL) can be sent to Anthropic models.', param);
  }
  const { mediaType, data } = parseDataUrl(f.file_data, param);
  const block: AnthropicDocumentBlock = { type: 'document', source: { type: 'base64', media_type: mediaType, data } };
  if (typeof f.filename === 'string' && f.filename !== '') block.title = f.filename;
  return block;
}

function assistantBlocks(message: ChatMessage, i: number): AnthropicContentBlock[] {
  const blocks: AnthropicContentBlock[] = [];
  const content = message.content;
  if (typeof content === 'string') {
    if (content !== '') blocks.push({ type: 'text', text: content });
  } else if (Array.isArray(content)) {
    content.forEach((part, j) => {
      // Assistant history may hold refusal parts; they are text the model produced.
      const text = part.type === 'refusal' ? part.refusal : part.text;
      if (part.type !== 'text' && part.type !== 'refusal') {
        throw unsupportedRequest(`Assistant messages can only hold text parts, not '${part.type}'.`, `messages[${i}].content[${j}]`);
      }
      if (typeof text === 'string' && text !== '') blocks.push(withCacheControl<AnthropicTextBlock>({ type: 'text', text }, part));
    });
  }
  (message.tool_calls ?? []).forEach((call, j) => {
    blocks.push({
      type: 'tool_use',
      id: call.id,
      name: call.function.name,
      input: parseToolArguments(call.function.arguments, `messages[${i}].tool_calls[${j}].function.arguments`),
    });
  });
  return blocks;
}

function parseToolArguments(args: string, param: string): Record<string, unknown> {
  if (args.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(args);
  } catch {
    throw invalid('invalid_tool_arguments', 'Tool call arguments must be a JSON object.', param);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw invalid('invalid_tool_arguments', 'Tool call arguments must be a JSON object.', param);
  }
  return parsed as Record<string, unknown>;
}

function toolResultBlock(message: ChatMessage, i: number): AnthropicToolResultBlock {
  if (typeof message.tool_call_id !== 'string' || message.tool_call_id === '') {
    throw invalid('missing_tool_call_id', 'Tool messages need a tool_call_id.', `messages[${i}].tool_call_id`);
  }
  const block: AnthropicToolResultBlock = { type: 'tool_result', tool_use_id: message.tool_call_id };
  const content = message.content;
  if (typeof content === 'string') {
    if (content !== '') block.content = content;
  } else if (Array.isArray(content)) {
    const parts = content.flatMap((part, j) => partBlocks(part, `messages[${i}].content[${j}]`));
    const onlyText = parts.every((b) => b.type === 'text');
    block.content = onlyText ? parts.map((b) => (b as AnthropicTextBlock).text).join('') : (parts as AnthropicToolResultBlock['content']);
  }
  return block;
}

/** Anthropic wants user and assistant turns to alternate: consecutive same-role messages merge. */
function appendTurn(messages: AnthropicMessageParam[], role: 'user' | 'assistant', blocks: AnthropicContentBlock[]): void {
  if (blocks.length === 0) return;
  const last = messages.at(-1);
  if (last && last.role === role) (last.content as AnthropicContentBlock[]).push(...blocks);
  else messages.push({ role, content: [...blocks] });
}

/** Tool results must open a user turn; a lone plain text block is sent as a string. */
function compactTurn(message: AnthropicMessageParam): AnthropicMessageParam {
  const blocks = message.content as AnthropicContentBlock[];
  const ordered = message.role === 'user'
    ? [...blocks.filter((b) => b.type === 'tool_result'), ...blocks.filter((b) => b.type !== 'tool_result')]
    : blocks;
  const only = ordered[0];
  if (ordered.length === 1 && only.type === 'text' && Object.keys(only).length === 2) return { role: message.role, content: only.text };
  return { role: message.role, content: ordered };
}

function compactSystem(blocks: AnthropicTextBlock[]): string | AnthropicTextBlock[] {
  if (blocks.length === 1 && Object.keys(blocks[0]).length === 2) return blocks[0].text;
  return blocks;
}

/** Carries Anthropic's prompt-caching marker when a canonical part holds one (Anthropic clients). */
function withCacheControl<T extends { cache_control?: unknown }>(block: T, part: ContentPart): T {
  if (part.cache_control !== undefined) block.cache_control = part.cache_control;
  return block;
}

function responseFormatInstruction(format: ChatRequest['response_format']): string | null {
  if (!format || format.type === 'text') return null;
  if (format.type === 'json_schema') {
    const spec = format.json_schema as { schema?: unknown } | undefined;
    const schema = spec?.schema ?? spec;
    return `${jsonObjectInstruction} The object must conform to this JSON schema: ${JSON.stringify(schema)}`;
  }
  return jsonObjectInstruction;
}

function stopSequences(stop: ChatRequest['stop']): string[] {
  if (stop == null) return [];
  return (typeof stop === 'string' ? [stop] : stop).filter((s) => s !== '');
}

function toAnthropicTool(tool: NonNullable<ChatRequest['tools']>[number], i: number): AnthropicTool {
  if (tool.type !== 'function' || !tool.function?.name) {
    throw unsupportedRequest('Only function tools can be sent to Anthropic models.', `tools[${i}]`);
  }
  const out: AnthropicTool = {
    name: tool.function.name,
    input_schema: tool.function.parameters ?? { type: 'object', properties: {} },
  };
  if (tool.function.description) out.description = tool.function.description;
  const cacheControl = (tool as { cache_control?: unknown }).cache_control;
  if (cacheControl !== undefined) out.cache_control = cacheControl;
  return out;
}

function toAnthropicToolChoice(choice: ChatRequest['tool_choice'], noParallel: boolean): AnthropicToolChoice | undefined {
  const parallel = noParallel ? { disable_parallel_tool_use: true } : {};
  if (choice === undefined) return noParallel ? { type: 'auto', ...parallel } : undefined;
  if (choice === 'none') return { type: 'none' };
  if (choice === 'auto') return { type: 'auto', ...parallel };
  if (choice === 'required') return { type: 'any', ...parallel };
  if (typeof choice === 'object' && choice.type === 'function' && choice.function?.name) {
    return { type: 'tool', name: choice.function.name, ...parallel };
  }
  throw invalid('invalid_tool_choice', 'Unsupported tool_choice.', 'tool_choice');
}

// ---------------------------------------------------------------------------------------------
// Anthropic answer → canonical answer

export function finishReasonFromAnthropic(reason: string | null | undefined): FinishReason | null {
  switch (reason) {
    case 'end_turn':
    case 'stop_sequence':
    case 'pause_turn':
      return 'stop';
    case 'max_tokens':
    case 'model_context_window_exceeded':
      return 'length';
    case 'tool_use':
      return 'tool_calls';
    case 'refusal':
      return 'content_filter';
    case null:
    case undefined:
      return null;
    default:
      return 'stop';
  }
}

/** Cache writes are billed by Anthropic as (dearer) input, cache reads as cached input. */
export function usageFromAnthropic(u: Partial<AnthropicUsage> | null | undefined): Usage {
  return {
    inputTokens: (u?.input_tokens ?? 0) + (u?.cache_creation_input_tokens ?? 0),
    cachedInputTokens: u?.cache_read_input_tokens ?? 0,
    outputTokens: u?.output_tokens ?? 0,
    reasoningTokens: 0,
    images: 0,
  };
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

export function parseMessagesResponse(body: unknown, requestedModel: string): { response: ChatResponse; usage: Usage | null } {
  const msg = body as Partial<AnthropicMessage> | null;
  if (!msg || typeof msg !== 'object' || !Array.isArray(msg.content)) {
    throw malformedResponse('a Messages answer without a content array');
  }
  let text = '';
  const toolCalls: ToolCall[] = [];
  for (const block of msg.content) {
    if (block.type === 'text') text += block.text;
    else if (block.type === 'tool_use') {
      toolCalls.push({ id: block.id, type: 'function', function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) } });
    }
  }
  const usage = msg.usage ? usageFromAnthropic(msg.usage) : null;
  const message: ChatResponse['choices'][number]['message'] = {
    role: 'assistant',
    content: text === '' && toolCalls.length > 0 ? null : text,
    refusal: null,
  };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  const response: ChatResponse = {
    id: typeof msg.id === 'string' ? msg.id : 'msg_unknown',
    object: 'chat.completion',
    created: nowSeconds(),
    model: requestedModel,
    choices: [{ index: 0, message, finish_reason: finishReasonFromAnthropic(msg.stop_reason), logprobs: null }],
  };
  if (usage) response.usage = openAIUsageOf(usage);
  return { response, usage };
}

// ---------------------------------------------------------------------------------------------
// Anthropic SSE → canonical chunks

interface StreamState {
  id: string;
  created: number;
  model: string;
  usage: AnthropicUsage | null;
  /** Anthropic content-block index → OpenAI tool_calls index. */
  toolIndexByBlock: Map<number, number>;
  output: string;
  error: UpstreamError | null;
}

export function createMessagesStreamTranslator(requestedModel: string): StreamTranslator {
  const sse = new SseParser();
  const state: StreamState = {
    id: 'msg_unknown',
    created: nowSeconds(),
    model: requestedModel,
    usage: null,
    toolIndexByBlock: new Map(),
    output: '',
    error: null,
  };
  const onEvents = (events: SseEvent[]): ChatChunk[] => events.flatMap((e) => translateEvent(state, e));
  return {
    push: (text) => onEvents(sse.push(text)),
    end: () => onEvents(sse.end()),
    usage: () => (state.usage ? usageFromAnthropic(state.usage) : null),
    outputText: () => state.output,
    error: () => state.error,
  };
}

function chunk(state: StreamState, delta: ChatChunk['choices'][number]['delta'], finishReason: FinishReason | null = null): ChatChunk {
  return {
    id: state.id,
    object: 'chat.completion.chunk',
    created: state.created,
    model: state.model,
    choices: [{ index: 0, delta, finish_reason: finishReason }],
  };
}

// Event payloads are read loosely: an upstream may add fields, and a missing one must not throw.
type Loose = Record<string, any>;

function translateEvent(state: StreamState, event: SseEvent): ChatChunk[] {
  let payload: unknown;
  try {
    payload = JSON.parse(event.data);
  } catch {
    payload = null;
  }
  if (typeof payload !== 'object' || payload === null) {
    state.error ??= streamProtocolError(`The Anthropic upstream sent an unparseable stream event: ${event.data}`);
    return [];
  }
  return translatePayload(state, payload as Loose, event.event);
}

function translatePayload(state: StreamState, payload: Loose, eventName: string | null): ChatChunk[] {
  const type = typeof payload.type === 'string' ? payload.type : eventName;
  switch (type) {
    case 'message_start': {
      const message = (payload.message ?? {}) as Loose;
      if (typeof message.id === 'string') state.id = message.id;
      state.usage = mergeUsage(null, message.usage);
      return [chunk(state, { role: 'assistant', content: '' })];
    }
    case 'content_block_start':
      return blockStart(state, Number(payload.index), (payload.content_block ?? {}) as Loose);
    case 'content_block_delta':
      return blockDelta(state, Number(payload.index), (payload.delta ?? {}) as Loose);
    case 'message_delta': {
      state.usage = mergeUsage(state.usage, payload.usage);
      const finish = finishReasonFromAnthropic(payload.delta?.stop_reason);
      return finish ? [chunk(state, {}, finish)] : [];
    }
    case 'message_stop': {
      if (!state.usage) return [];
      return [{ ...chunk(state, {}), choices: [], usage: openAIUsageOf(usageFromAnthropic(state.usage)) }];
    }
    case 'error': {
      state.error = upstreamErrorFromBody(payload, null);
      return [];
    }
    default: // ping, content_block_stop and event types added later carry nothing to translate
      return [];
  }
}

function blockStart(state: StreamState, index: number, block: Loose): ChatChunk[] {
  if (block.type === 'text' && typeof block.text === 'string' && block.text !== '') {
    state.output += block.text;
    return [chunk(state, { content: block.text })];
  }
  if (block.type !== 'tool_use') return [];
  const toolIndex = state.toolIndexByBlock.size;
  state.toolIndexByBlock.set(index, toolIndex);
  // Anthropic starts tool_use blocks with `input: {}` and streams the JSON; a filled input is whole.
  const input = block.input && typeof block.input === 'object' && Object.keys(block.input).length > 0
    ? JSON.stringify(block.input)
    : '';
  state.output += input;
  return [chunk(state, {
    tool_calls: [{ index: toolIndex, id: String(block.id), type: 'function', function: { name: String(block.name), arguments: input } }],
  })];
}

function blockDelta(state: StreamState, index: number, delta: Loose): ChatChunk[] {
  if (delta.type === 'text_delta' && typeof delta.text === 'string') {
    if (delta.text === '') return [];
    state.output += delta.text;
    return [chunk(state, { content: delta.text })];
  }
  if (delta.type === 'input_json_delta' && typeof delta.partial_json === 'string') {
    const toolIndex = state.toolIndexByBlock.get(index);
    if (toolIndex === undefined || delta.partial_json === '') return [];
    state.output += delta.partial_json;
    return [chunk(state, { tool_calls: [{ index: toolIndex, function: { arguments: delta.partial_json } }] })];
  }
  return []; // thinking, signature and citation deltas are not part of the canonical answer
}

/**
 * Anthropic's stream counters are whole-message totals: message_delta repeats (and may correct)
 * what message_start said, so later values replace earlier ones and are never added.
 */
function mergeUsage(previous: AnthropicUsage | null, next: unknown): AnthropicUsage | null {
  if (!next || typeof next !== 'object') return previous;
  const n = next as Partial<AnthropicUsage>;
  const merged: AnthropicUsage = previous ? { ...previous } : { input_tokens: 0, output_tokens: 0 };
  if (typeof n.input_tokens === 'number') merged.input_tokens = n.input_tokens;
  if (typeof n.output_tokens === 'number') merged.output_tokens = n.output_tokens;
  if (typeof n.cache_creation_input_tokens === 'number') merged.cache_creation_input_tokens = n.cache_creation_input_tokens;
  if (typeof n.cache_read_input_tokens === 'number') merged.cache_read_input_tokens = n.cache_read_input_tokens;
  return merged;
}

// ---------------------------------------------------------------------------------------------
// Errors

function isRetryable(status: number, type: string): boolean {
  return isRetryableStatus(status) || type === 'overloaded_error' || type === 'rate_limit_error';
}

/** An UpstreamError from an Anthropic error body; status null means "take it from the type". */
function upstreamErrorFromBody(body: Loose | null, status: number | null): UpstreamError {
  const error = (body?.error ?? null) as Loose | null;
  const type = typeof error?.type === 'string' ? error.type : anthropicErrorTypeForStatus(status ?? 500);
  const resolvedStatus = status ?? (isAnthropicErrorType(type) ? statusByAnthropicErrorType[type] : 500);
  const message = typeof error?.message === 'string' ? clip(error.message) : `Anthropic upstream error (${type}).`;
  return { status: resolvedStatus, type, message, retryable: isRetryable(resolvedStatus, type) };
}

export function parseMessagesError(status: number, body: string): UpstreamError {
  let parsed: Loose | null = null;
  try {
    parsed = JSON.parse(body) as Loose;
  } catch {
    parsed = null;
  }
  if (parsed && typeof parsed === 'object' && parsed.error && typeof parsed.error === 'object') {
    return upstreamErrorFromBody(parsed, status);
  }
  const type = anthropicErrorTypeForStatus(status);
  const preview = clip(body.trim());
  const message = preview === '' ? `Anthropic upstream answered HTTP ${status}.` : `Anthropic upstream answered HTTP ${status}: ${preview}`;
  return { status, type, message, retryable: isRetryable(status, type) };
}

// ---------------------------------------------------------------------------------------------

const chat: ChatAdapter = {
  buildRequest: buildMessagesRequest,
  parseResponse: parseMessagesResponse,
  createStreamTranslator: createMessagesStreamTranslator,
};

export const anthropicAdapter: ProviderAdapter = {
  type: 'anthropic',
  chat,
  parseError: parseMessagesError,
};

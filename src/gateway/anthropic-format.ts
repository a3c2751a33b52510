// The Anthropic front door's translation (`POST /v1/messages`): Anthropic Messages requests become
// canonical chat requests, and canonical answers, chunks and errors go back in Anthropic's format.
// Pure functions: the route that serves them owns the HTTP, the hold and the settlement.
import { invalid } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import {
  anthropicErrorTypeForStatus,
  isAnthropicErrorType,
  sseFrame,
  type AnthropicErrorBody,
  type AnthropicMessage,
  type AnthropicStopReason,
  type AnthropicTextBlock,
  type AnthropicToolUseBlock,
} from '../providers/anthropic/wire.ts';
import type {
  ChatChunk,
  ChatMessage,
  ChatRequest,
  ChatResponse,
  ContentPart,
  FinishReason,
  ToolCall,
  ToolDefinition,
  Usage,
} from '../providers/types.ts';

export type { AnthropicErrorBody, AnthropicMessage, AnthropicStopReason } from '../providers/anthropic/wire.ts';

// Request bodies are read loosely and checked field by field: they come from any client.
type Loose = Record<string, any>;

// ---------------------------------------------------------------------------------------------
// Anthropic request → canonical request

/**
 * The canonical request for an Anthropic Messages body. Dropped (no canonical equivalent):
 * top_k, thinking, cache_control markers, tool_result.is_error, server tools (rejected).
 */
export function anthropicRequestToCanonical(body: unknown): ChatRequest {
  if (!isObject(body)) throw invalid('invalid_body', 'The request body must be a JSON object.');
  if (typeof body.model !== 'string' || body.model === '') throw invalid('missing_model', 'model: Field required', 'model');
  if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1) {
    throw invalid('invalid_max_tokens', 'max_tokens: must be a positive integer', 'max_tokens');
  }
  if (!Array.isArray(body.messages)) throw invalid('missing_messages', 'messages: Field required', 'messages');

  const messages: ChatMessage[] = [];
  const system = systemMessage(body.system);
  if (system) messages.push(system);
  body.messages.forEach((message: unknown, i: number) => messages.push(...canonicalMessages(message, i)));

  const req: ChatRequest = { model: body.model, messages, max_tokens: body.max_tokens };
  if (Array.isArray(body.stop_sequences) && body.stop_sequences.length > 0) {
    req.stop = body.stop_sequences.map((s: unknown, i: number) => requireString(s, `stop_sequences[${i}]`));
  }
  if (typeof body.temperature === 'number') req.temperature = body.temperature;
  if (typeof body.top_p === 'number') req.top_p = body.top_p;
  if (Array.isArray(body.tools) && body.tools.length > 0) req.tools = body.tools.map(canonicalTool);
  if (body.tool_choice !== undefined && body.tool_choice !== null) applyToolChoice(req, body.tool_choice);
  if (isObject(body.metadata) && typeof body.metadata.user_id === 'string') req.user = body.metadata.user_id;
  if (body.stream === true) {
    req.stream = true;
    req.stream_options = { include_usage: true };
  }
  return req;
}

function isObject(value: unknown): value is Loose {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function requireString(value: unknown, param: string): string {
  if (typeof value !== 'string') throw invalid('invalid_type', `${param}: must be a string`, param);
  return value;
}

function systemMessage(system: unknown): ChatMessage | null {
  if (system === undefined || system === null || system === '') return null;
  if (typeof system === 'string') return { role: 'system', content: system };
  if (!Array.isArray(system)) throw invalid('invalid_system', 'system: must be a string or a list of text blocks', 'system');
  const parts: ContentPart[] = system.map((block: unknown, i: number) => {
    if (!isObject(block) || block.type !== 'text') {
      throw invalid('invalid_system', `system[${i}]: only text blocks are allowed`, `system[${i}]`);
    }
    return { type: 'text', text: requireString(block.text, `system[${i}].text`) };
  });
  if (parts.length === 0) return null;
  return { role: 'system', content: parts.length === 1 ? parts[0].text : parts };
}

function canonicalMessages(message: unknown, i: number): ChatMessage[] {
  const param = `messages[${i}]`;
  if (!isObject(message)) throw invalid('invalid_message', `${param}: must be an object`, param);
  const { role, content } = message;
  if (role !== 'user' && role !== 'assistant') {
    throw invalid('invalid_role', `${param}.role: must be 'user' or 'assistant'`, `${param}.role`);
  }
  if (typeof content === 'string') return [{ role, content }];
  if (!Array.isArray(content)) throw invalid('invalid_content', `${param}.content: must be a string or a list of blocks`, `${param}.content`);
  return role === 'user' ? userMessages(content, param) : [assistantMessage(content, param)];
}

/** A user turn: its tool results become `tool` messages (first, as Anthropic orders them), the rest one user message. */
function userMessages(blocks: unknown[], param: string): ChatMessage[] {
  const toolMessages: ChatMessage[] = [];
  const parts: ContentPart[] = [];
  blocks.forEach((block, j) => {
    const at = `${param}.content[${j}]`;
    if (isObject(block) && block.type === 'tool_result') {
      const { message, media } = toolMessage(block, at);
      toolMessages.push(message);
      parts.push(...media);
    } else {
      parts.push(contentPart(block, at));
    }
  });
  if (parts.length === 0) return toolMessages;
  const only = parts[0];
  const content = parts.length === 1 && only.type === 'text' ? (only.text ?? '') : parts;
  return [...toolMessages, { role: 'user', content }];
}

function contentPart(block: unknown, param: string): ContentPart {
  if (!isObject(block)) throw invalid('invalid_content', `${param}: must be a content block`, param);
  switch (block.type) {
    case 'text':
      return { type: 'text', text: requireString(block.text, `${param}.text`) };
    case 'image':
      return { type: 'image_url', image_url: { url: sourceUrl(block.source, param) } };
    case 'document': {
      if (!isObject(block.source) || block.source.type !== 'base64') {
        throw invalid('unsupported_content', `${param}: only base64 documents can be sent through the gateway`, param);
      }
      const file: Loose = { file_data: sourceUrl(block.source, param) };
      if (typeof block.title === 'string') file.filename = block.title;
      return { type: 'file', file };
    }
    default:
      throw invalid('unsupported_content', `${param}: content blocks of type '${String(block.type)}' are not supported`, param);
  }
}

/** An image or document source as an image_url-style URL (base64 becomes a data URL). */
function sourceUrl(source: unknown, param: string): string {
  if (isObject(source) && source.type === 'base64') {
    const mediaType = requireString(source.media_type, `${param}.source.media_type`);
    return `data:${mediaType};base64,${requireString(source.data, `${param}.source.data`)}`;
  }
  if (isObject(source) && source.type === 'url') return requireString(source.url, `${param}.source.url`);
  throw invalid('invalid_source', `${param}.source: must be a base64 or url source`, `${param}.source`);
}

/**
 * A tool_result block as a `tool` message. Its text stays in the tool message; its images cannot
 * (OpenAI tool messages hold text only) and follow in the user message instead.
 */
function toolMessage(block: Loose, param: string): { message: ChatMessage; media: ContentPart[] } {
  const toolCallId = requireString(block.tool_use_id, `${param}.tool_use_id`);
  const content = block.content;
  if (content === undefined || content === null || typeof content === 'string') {
    return { message: { role: 'tool', tool_call_id: toolCallId, content: content ?? '' }, media: [] };
  }
  if (!Array.isArray(content)) throw invalid('invalid_content', `${param}.content: must be a string or a list of blocks`, `${param}.content`);
  let text = '';
  const media: ContentPart[] = [];
  content.forEach((inner: unknown, k: number) => {
    const part = contentPart(inner, `${param}.content[${k}]`);
    if (part.type === 'text') text += part.text;
    else media.push(part);
  });
  return { message: { role: 'tool', tool_call_id: toolCallId, content: text }, media };
}

function assistantMessage(blocks: unknown[], param: string): ChatMessage {
  let text = '';
  const toolCalls: ToolCall[] = [];
  blocks.forEach((block, j) => {
    const at = `${param}.content[${j}]`;
    if (!isObject(block)) throw invalid('invalid_content', `${at}: must be a content block`, at);
    switch (block.type) {
      case 'text':
        text += requireString(block.text, `${at}.text`);
        break;
      case 'tool_use':
        toolCalls.push({
          id: requireString(block.id, `${at}.id`),
          type: 'function',
          function: { name: requireString(block.name, `${at}.name`), arguments: JSON.stringify(block.input ?? {}) },
        });
        break;
      case 'thinking':
      case 'redacted_thinking':
        break; // reasoning of an earlier turn: no canonical place, and upstreams do not need it back
      default:
        throw invalid('unsupported_content', `${at}: assistant blocks of type '${String(block.type)}' are not supported`, at);
    }
  });
  const message: ChatMessage = { role: 'assistant', content: text === '' && toolCalls.length > 0 ? null : text };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  return message;
}

function canonicalTool(tool: unknown, i: number): ToolDefinition {
  const param = `tools[${i}]`;
  if (!isObject(tool)) throw invalid('invalid_tool', `${param}: must be an object`, param);
  if (tool.type !== undefined && tool.type !== null && tool.type !== 'custom') {
    throw invalid('unsupported_tool', `${param}: server tools ('${String(tool.type)}') are not supported by the gateway`, param);
  }
  const fn: ToolDefinition['function'] = { name: requireString(tool.name, `${param}.name`) };
  if (typeof tool.description === 'string') fn.description = tool.description;
  if (isObject(tool.input_schema)) fn.parameters = tool.input_schema;
  return { type: 'function', function: fn };
}

function applyToolChoice(req: ChatRequest, choice: unknown): void {
  if (!isObject(choice)) throw invalid('invalid_tool_choice', 'tool_choice: must be an object', 'tool_choice');
  switch (choice.type) {
    case 'auto':
      req.tool_choice = 'auto';
      break;
    case 'any':
      req.tool_choice = 'required';
      break;
    case 'none':
      req.tool_choice = 'none';
      break;
    case 'tool':
      req.tool_choice = { type: 'function', function: { name: requireString(choice.name, 'tool_choice.name') } };
      break;
    default:
      throw invalid('invalid_tool_choice', `tool_choice.type: '${String(choice.type)}' is not one of auto, any, tool, none`, 'tool_choice');
  }
  if (choice.disable_parallel_tool_use === true) req.parallel_tool_calls = false;
}

// ---------------------------------------------------------------------------------------------
// Canonical answer → Anthropic answer

export function anthropicStopReason(finish: FinishReason | null | undefined): AnthropicStopReason {
  switch (finish) {
    case 'length':
      return 'max_tokens';
    case 'tool_calls':
    case 'function_call':
      return 'tool_use';
    case 'content_filter':
      return 'refusal';
    default:
      return 'end_turn';
  }
}

/** Anthropic's tool_use input must be an object; arguments a model left unparseable become {}. */
function toolInput(args: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(args);
    return isObject(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

function anthropicUsage(usage: Usage) {
  return {
    input_tokens: usage.inputTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: usage.cachedInputTokens,
    output_tokens: usage.outputTokens,
  };
}

/**
 * The Anthropic message for a canonical answer. `model` is the name the client asked for; the id
 * is `messageId`, else the upstream's when it is already a `msg_` id, else a new one.
 */
export function canonicalResponseToAnthropic(resp: ChatResponse, usage: Usage, model: string, messageId?: string): AnthropicMessage {
  const choice = resp.choices[0];
  const content: AnthropicMessage['content'] = [];
  const text = choice?.message.content || choice?.message.refusal || '';
  if (text !== '') content.push({ type: 'text', text });
  for (const call of choice?.message.tool_calls ?? []) {
    content.push({ type: 'tool_use', id: call.id, name: call.function.name, input: toolInput(call.function.arguments) });
  }
  return {
    id: messageId ?? (resp.id.startsWith('msg_') ? resp.id : newId('msg')),
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason: anthropicStopReason(choice?.finish_reason),
    stop_sequence: null,
    usage: anthropicUsage(usage),
  };
}

// ---------------------------------------------------------------------------------------------
// Canonical chunks → Anthropic SSE

export interface AnthropicStreamEncoder {
  /** The message_start (and ping) frames; `inputTokens` is the gateway's estimate until finish. */
  start(inputTokens: number): string;
  /** The frames for one canonical chunk (message_start first if start() was not called). */
  push(chunk: ChatChunk): string;
  /** Closes the open block, then message_delta (stop reason, final usage) and message_stop. */
  finish(usage: Usage, finishReason?: FinishReason | null): string;
  /** An in-stream `error` event; the stream is over after it. */
  error(type: string, message: string): string;
}

type OpenBlock = { index: number; kind: 'text' } | { index: number; kind: 'tool'; toolIndex: number };

export function createAnthropicStreamEncoder(model: string, messageId: string = newId('msg')): AnthropicStreamEncoder {
  let started = false;
  let ended = false;
  let open: OpenBlock | null = null;
  let nextBlockIndex = 0;
  let lastFinish: FinishReason | null = null;
  /** OpenAI tool_calls index → Anthropic content-block index. */
  const toolBlocks = new Map<number, number>();

  const start = (inputTokens: number): string => {
    if (started) return '';
    started = true;
    const message: AnthropicMessage = {
      id: messageId,
      type: 'message',
      role: 'assistant',
      model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 0 },
    };
    return sseFrame('message_start', { type: 'message_start', message }) + sseFrame('ping', { type: 'ping' });
  };

  const closeOpen = (): string => {
    if (!open) return '';
    const frame = sseFrame('content_block_stop', { type: 'content_block_stop', index: open.index });
    open = null;
    return frame;
  };

  const openBlock = (block: OpenBlock, contentBlock: AnthropicTextBlock | AnthropicToolUseBlock): string => {
    const frames = closeOpen() + sseFrame('content_block_start', { type: 'content_block_start', index: block.index, content_block: contentBlock });
    open = block;
    return frames;
  };

  const text = (value: string): string => {
    let frames = '';
    if (open?.kind !== 'text') frames += openBlock({ index: nextBlockIndex++, kind: 'text' }, { type: 'text', text: '' });
    return frames + sseFrame('content_block_delta', { type: 'content_block_delta', index: open!.index, delta: { type: 'text_delta', text: value } });
  };

  const toolCall = (call: NonNullable<ChatChunk['choices'][number]['delta']['tool_calls']>[number]): string => {
    let frames = '';
    let index = toolBlocks.get(call.index);
    if (index === undefined) {
      index = nextBlockIndex++;
      toolBlocks.set(call.index, index);
      const block: AnthropicToolUseBlock = { type: 'tool_use', id: call.id ?? newId('toolu'), name: call.function?.name ?? '', input: {} };
      frames += openBlock({ index, kind: 'tool', toolIndex: call.index }, block);
    }
    const args = call.function?.arguments ?? '';
    if (args !== '') {
      frames += sseFrame('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: args } });
    }
    return frames;
  };

  return {
    start,
    push(chunk) {
      if (ended) return '';
      let frames = start(0);
      for (const choice of chunk.choices) {
        if (choice.index !== 0) continue;
        const { content, refusal, tool_calls: toolCalls } = choice.delta;
        if (typeof content === 'string' && content !== '') frames += text(content);
        if (typeof refusal === 'string' && refusal !== '') frames += text(refusal);
        for (const call of toolCalls ?? []) frames += toolCall(call);
        if (choice.finish_reason) lastFinish = choice.finish_reason;
      }
      return frames;
    },
    finish(usage, finishReason) {
      if (ended) return '';
      ended = true;
      const delta = { stop_reason: anthropicStopReason(finishReason ?? lastFinish), stop_sequence: null };
      return start(usage.inputTokens)
        + closeOpen()
        + sseFrame('message_delta', { type: 'message_delta', delta, usage: anthropicUsage(usage) })
        + sseFrame('message_stop', { type: 'message_stop' });
    },
    error(type, message) {
      if (ended) return '';
      ended = true;
      const errorType = isAnthropicErrorType(type) ? type : 'api_error';
      return sseFrame('error', { type: 'error', error: { type: errorType, message } });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * Anthropic's error body. `type` is kept when it is one of Anthropic's error types; anything else
 * (a gateway error type such as insufficient_credits, or null) is replaced by the status's type.
 */
export function anthropicError(status: number, type: string | null | undefined, message: string, requestId?: string): AnthropicErrorBody {
  const errorType = isAnthropicErrorType(type) ? type : anthropicErrorTypeForStatus(status);
  const body: AnthropicErrorBody = { type: 'error', error: { type: errorType, message } };
  if (requestId !== undefined) body.request_id = requestId;
  return body;
}

// Google Gemini (generativelanguage.googleapis.com, v1beta): canonical chat requests become
// generateContent bodies, and GenerateContentResponses (whole, or one per SSE event when streamed)
// become chat completions and chunks, with usage from usageMetadata.
import { randomBytes } from 'node:crypto';
import type {
  ChatAdapter,
  ChatChunk,
  ChatMessage,
  ChatRequest,
  ChatResponse,
  ContentPart,
  EmbeddingsAdapter,
  EmbeddingsRequest,
  EmbeddingsResponse,
  FinishReason,
  OpenAIUsage,
  PreparedRequest,
  ProviderAdapter,
  StreamTranslator,
  ToolCall,
  UpstreamError,
  UpstreamTarget,
  Usage,
} from '../types.ts';
import { SseParser } from '../sse.ts';
import {
  clip,
  count,
  defaultErrorType,
  isRecord,
  isRetryableStatus,
  joinUrl,
  malformedResponse,
  parseJson,
  streamProtocolError,
  stringOr,
  unsupportedRequest,
  openAIUsageOf,
} from '../common.ts';

// ---- Gemini wire types (the parts Tollgate reads or writes) ----

export interface GeminiPart {
  text?: string;
  thought?: boolean;
  inlineData?: { mimeType: string; data: string };
  fileData?: { mimeType?: string; fileUri: string };
  functionCall?: { id?: string; name: string; args?: Record<string, unknown> };
  functionResponse?: { name: string; response: Record<string, unknown> };
  [extra: string]: unknown;
}

export interface GeminiContent {
  role?: 'user' | 'model';
  parts: GeminiPart[];
}

export interface GeminiRequest {
  contents: GeminiContent[];
  systemInstruction?: { parts: GeminiPart[] };
  tools?: Array<{ functionDeclarations: Array<Record<string, unknown>> }>;
  toolConfig?: { functionCallingConfig: { mode: 'AUTO' | 'ANY' | 'NONE'; allowedFunctionNames?: string[] } };
  generationConfig?: Record<string, unknown>;
}

// ---- canonical → Gemini ----

/** The generateContent body for a canonical chat request. */
export function toGeminiRequest(req: ChatRequest): GeminiRequest {
  const systemParts: GeminiPart[] = [];
  const contents: GeminiContent[] = [];
  const toolNames = new Map<string, string>(); // tool_call_id → function name, for tool results
  const append = (role: 'user' | 'model', parts: GeminiPart[]) => {
    if (parts.length === 0) return;
    const last = contents[contents.length - 1];
    // Gemini wants turns to alternate; consecutive same-role messages become one turn.
    if (last && last.role === role) last.parts.push(...parts);
    else contents.push({ role, parts });
  };

  for (const message of req.messages) {
    switch (message.role) {
      case 'system':
      case 'developer': {
        const text = textOf(message.content);
        if (text) systemParts.push({ text });
        break;
      }
      case 'user':
        append('user', userParts(message.content));
        break;
      case 'assistant': {
        const parts: GeminiPart[] = [];
        const text = textOf(message.content);
        if (text) parts.push({ text });
        for (const call of message.tool_calls ?? []) {
          toolNames.set(call.id, call.function.name);
          parts.push({ functionCall: { name: call.function.name, args: argsObject(call.function.arguments) } });
        }
        append('model', parts);
        break;
      }
      case 'tool': {
        const name = toolNames.get(message.tool_call_id ?? '') ?? message.name;
        if (!name) throw unsupportedRequest('A tool message must answer a tool call made earlier in the conversation.', 'messages');
        append('user', [{ functionResponse: { name, response: responseObject(textOf(message.content)) } }]);
        break;
      }
    }
  }

  const body: GeminiRequest = { contents };
  if (systemParts.length > 0) body.systemInstruction = { parts: systemParts };
  const declarations = (req.tools ?? [])
    .filter((tool) => tool.type === 'function')
    .map((tool) => {
      const declaration: Record<string, unknown> = { name: tool.function.name };
      if (tool.function.description) declaration.description = tool.function.description;
      // JSON Schema as OpenAI clients write it; the OpenAPI-subset `parameters` would reject
      // common keywords such as additionalProperties.
      if (tool.function.parameters) declaration.parametersJsonSchema = tool.function.parameters;
      return declaration;
    });
  if (declarations.length > 0) body.tools = [{ functionDeclarations: declarations }];
  const toolConfig = toGeminiToolConfig(req.tool_choice);
  if (toolConfig && declarations.length > 0) body.toolConfig = toolConfig;
  const generationConfig = toGenerationConfig(req);
  if (Object.keys(generationConfig).length > 0) body.generationConfig = generationConfig;
  return body;
}

function toGeminiToolConfig(choice: ChatRequest['tool_choice']): GeminiRequest['toolConfig'] | undefined {
  if (choice === undefined) return undefined;
  if (choice === 'none') return { functionCallingConfig: { mode: 'NONE' } };
  if (choice === 'auto') return { functionCallingConfig: { mode: 'AUTO' } };
  if (choice === 'required') return { functionCallingConfig: { mode: 'ANY' } };
  return { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: [choice.function.name] } };
}

function toGenerationConfig(req: ChatRequest): Record<string, unknown> {
  const config: Record<string, unknown> = {};
  const maxTokens = req.max_completion_tokens ?? req.max_tokens;
  if (typeof maxTokens === 'number') config.maxOutputTokens = maxTokens;
  if (typeof req.temperature === 'number') config.temperature = req.temperature;
  if (typeof req.top_p === 'number') config.topP = req.top_p;
  if (typeof req.stop === 'string') config.stopSequences = [req.stop];
  else if (Array.isArray(req.stop) && req.stop.length > 0) config.stopSequences = req.stop;
  if (typeof req.n === 'number') config.candidateCount = req.n;
  if (typeof req.seed === 'number') config.seed = req.seed;
  if (typeof req.presence_penalty === 'number') config.presencePenalty = req.presence_penalty;
  if (typeof req.frequency_penalty === 'number') config.frequencyPenalty = req.frequency_penalty;
  const format = req.response_format;
  if (format?.type === 'json_object') config.responseMimeType = 'application/json';
  if (format?.type === 'json_schema') {
    config.responseMimeType = 'application/json';
    const schema = isRecord(format.json_schema) ? format.json_schema.schema : undefined;
    if (isRecord(schema)) config.responseJsonSchema = schema;
  }
  return config;
}

function textOf(content: ChatMessage['content']): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  return content
    .filter((part) => part.type === 'text' && typeof part.text === 'string')
    .map((part) => part.text)
    .join('\n');
}

function userParts(content: ChatMessage['content']): GeminiPart[] {
  if (content == null || content === '') return [];
  if (typeof content === 'string') return [{ text: content }];
  return content.map(toGeminiPart);
}

function toGeminiPart(part: ContentPart): GeminiPart {
  if (part.type === 'text') return { text: part.text ?? '' };
  if (part.type === 'image_url' && part.image_url) return mediaPart(part.image_url.url, guessMimeType(part.image_url.url, 'image/jpeg'));
  if (part.type === 'input_audio' && isRecord(part.input_audio) && typeof part.input_audio.data === 'string') {
    const format = stringOr(part.input_audio.format, 'wav');
    return { inlineData: { mimeType: `audio/${format}`, data: part.input_audio.data } };
  }
  if (part.type === 'file' && isRecord(part.file) && typeof part.file.file_data === 'string') {
    return mediaPart(part.file.file_data, 'application/pdf');
  }
  throw unsupportedRequest(`Content parts of type '${part.type}' cannot be sent to Gemini.`, 'messages');
}

/** A data: URL becomes inline bytes; any other URL is passed as a file reference. */
function mediaPart(url: string, fallbackMimeType: string): GeminiPart {
  const match = /^data:([^;,]+)?(?:;[^,]*)?;base64,(.*)$/s.exec(url);
  if (match) return { inlineData: { mimeType: match[1] ?? fallbackMimeType, data: match[2] } };
  return { fileData: { mimeType: fallbackMimeType, fileUri: url } };
}

const mimeByExtension: Record<string, string> = {
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  webp: 'image/webp',
  gif: 'image/gif',
  heic: 'image/heic',
  pdf: 'application/pdf',
};

function guessMimeType(url: string, fallback: string): string {
  const extension = /\.([a-z0-9]+)(?:[?#]|$)/i.exec(url)?.[1]?.toLowerCase();
  return (extension && mimeByExtension[extension]) || fallback;
}

/** Gemini wants arguments as an object; a model's malformed argument text is kept, not dropped. */
function argsObject(argumentsText: string): Record<string, unknown> {
  const parsed = parseJson(argumentsText || '{}');
  return isRecord(parsed) ? parsed : { arguments: argumentsText };
}

/** functionResponse.response must be an object: a JSON object result as is, anything else wrapped. */
function responseObject(text: string): Record<string, unknown> {
  const parsed = parseJson(text);
  return isRecord(parsed) ? parsed : { content: parsed ?? text };
}

// ---- Gemini → canonical ----

const finishReasons: Record<string, FinishReason> = {
  STOP: 'stop',
  MAX_TOKENS: 'length',
  SAFETY: 'content_filter',
  RECITATION: 'content_filter',
  BLOCKLIST: 'content_filter',
  PROHIBITED_CONTENT: 'content_filter',
  SPII: 'content_filter',
  IMAGE_SAFETY: 'content_filter',
};

function toFinishReason(reason: unknown, calledTools: boolean): FinishReason {
  if (calledTools) return 'tool_calls';
  return (typeof reason === 'string' && finishReasons[reason]) || 'stop';
}

/**
 * usageMetadata → Tollgate usage. promptTokenCount includes cached tokens, and tool-use prompt
 * tokens are billed as input; thoughts are billed as output but reported apart from candidates.
 */
export function usageFromGemini(raw: unknown): Usage | null {
  if (!isRecord(raw)) return null;
  const promptTokens = count(raw.promptTokenCount) + count(raw.toolUsePromptTokenCount);
  const cachedTokens = Math.min(promptTokens, count(raw.cachedContentTokenCount));
  const thoughtsTokens = count(raw.thoughtsTokenCount);
  return {
    inputTokens: promptTokens - cachedTokens,
    cachedInputTokens: cachedTokens,
    outputTokens: count(raw.candidatesTokenCount) + thoughtsTokens,
    reasoningTokens: thoughtsTokens,
    images: 0,
  };
}

/** The same usage in OpenAI's shape, for the `usage` field clients read. */
export function openaiUsageFromGemini(raw: unknown): OpenAIUsage | undefined {
  const usage = usageFromGemini(raw);
  return usage ? openAIUsageOf(usage) : undefined;
}

function newToolCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

function newCompletionId(): string {
  return `chatcmpl-${randomBytes(12).toString('hex')}`;
}

/** The parts of one candidate, sorted into answer text, thought text and function calls. */
function readParts(candidate: Record<string, unknown>): { text: string; hasText: boolean; thoughts: string; calls: ToolCall[] } {
  const content = isRecord(candidate.content) ? candidate.content : {};
  const parts = Array.isArray(content.parts) ? content.parts : [];
  let text = '';
  let hasText = false;
  let thoughts = '';
  const calls: ToolCall[] = [];
  for (const part of parts) {
    if (!isRecord(part)) continue;
    if (typeof part.text === 'string') {
      if (part.thought === true) thoughts += part.text;
      else {
        text += part.text;
        hasText = true;
      }
    }
    if (isRecord(part.functionCall) && typeof part.functionCall.name === 'string') {
      calls.push({
        id: stringOr(part.functionCall.id, newToolCallId()),
        type: 'function',
        function: { name: part.functionCall.name, arguments: JSON.stringify(part.functionCall.args ?? {}) },
      });
    }
  }
  return { text, hasText, thoughts, calls };
}

function candidatesOf(body: Record<string, unknown>): Array<Record<string, unknown>> {
  return Array.isArray(body.candidates) ? body.candidates.filter(isRecord) : [];
}

function blockReason(body: Record<string, unknown>): string | undefined {
  return isRecord(body.promptFeedback) && typeof body.promptFeedback.blockReason === 'string'
    ? body.promptFeedback.blockReason
    : undefined;
}

export function parseGeminiChatResponse(body: unknown, requestedModel: string): { response: ChatResponse; usage: Usage | null } {
  if (!isRecord(body)) throw malformedResponse('a generateContent answer that is not an object');
  const candidates = candidatesOf(body);
  const choices: ChatResponse['choices'] = candidates.map((candidate, position) => {
    const { text, hasText, calls } = readParts(candidate);
    const message: ChatResponse['choices'][number]['message'] = { role: 'assistant', content: hasText ? text : null };
    if (calls.length > 0) message.tool_calls = calls;
    return {
      index: typeof candidate.index === 'number' ? candidate.index : position,
      message,
      finish_reason: toFinishReason(candidate.finishReason, calls.length > 0),
    };
  });
  if (choices.length === 0) {
    // No candidate at all: the prompt was blocked (promptFeedback says why).
    const finishReason: FinishReason = blockReason(body) ? 'content_filter' : 'stop';
    choices.push({ index: 0, message: { role: 'assistant', content: null }, finish_reason: finishReason });
  }
  const response: ChatResponse = {
    id: typeof body.responseId === 'string' ? `chatcmpl-${body.responseId}` : newCompletionId(),
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: requestedModel,
    choices,
  };
  const openaiUsage = openaiUsageFromGemini(body.usageMetadata);
  if (openaiUsage) response.usage = openaiUsage;
  return { response, usage: usageFromGemini(body.usageMetadata) };
}

/**
 * Each SSE event of streamGenerateContent?alt=sse is a whole GenerateContentResponse holding the
 * next piece of each candidate. Usage arrives on every event, cumulative: the last one wins, and
 * end() turns it into a final usage-only chunk, as OpenAI sends with include_usage.
 */
export class GeminiStreamTranslator implements StreamTranslator {
  private readonly parser = new SseParser();
  private readonly created = Math.floor(Date.now() / 1000);
  private id = newCompletionId();
  private idFixed = false;
  private usageMetadata: unknown = undefined;
  private errorSeen: UpstreamError | null = null;
  private output = '';
  private done = false;
  private readonly roleSent = new Set<number>();
  private readonly toolCallCount = new Map<number, number>();
  private readonly finished = new Set<number>();

  constructor(private readonly requestedModel: string) {}

  push(text: string): ChatChunk[] {
    if (this.done) return [];
    try {
      return this.translate(this.parser.push(text));
    } catch (err) {
      return this.fail(err);
    }
  }

  end(): ChatChunk[] {
    if (this.done) return [];
    let chunks: ChatChunk[];
    try {
      chunks = this.translate(this.parser.end());
    } catch (err) {
      chunks = this.fail(err);
    }
    this.done = true;
    const usage = openaiUsageFromGemini(this.usageMetadata);
    if (usage) chunks.push(this.chunk([], usage));
    return chunks;
  }

  usage(): Usage | null {
    return usageFromGemini(this.usageMetadata);
  }

  outputText(): string {
    return this.output;
  }

  error(): UpstreamError | null {
    return this.errorSeen;
  }

  private fail(err: unknown): ChatChunk[] {
    this.errorSeen ??= streamProtocolError(err instanceof Error ? err.message : String(err));
    return [];
  }

  private translate(events: Array<{ data: string }>): ChatChunk[] {
    const chunks: ChatChunk[] = [];
    for (const event of events) {
      const payload = parseJson(event.data);
      if (!isRecord(payload)) continue;
      if (isRecord(payload.error)) {
        this.errorSeen ??= geminiErrorFromObject(payload.error, 500);
        continue;
      }
      if (!this.idFixed && typeof payload.responseId === 'string') this.id = `chatcmpl-${payload.responseId}`;
      this.idFixed = true;
      if (isRecord(payload.usageMetadata)) this.usageMetadata = payload.usageMetadata;
      const candidates = candidatesOf(payload);
      candidates.forEach((candidate, position) => {
        const index = typeof candidate.index === 'number' ? candidate.index : position;
        chunks.push(...this.candidateChunks(index, candidate));
      });
      if (candidates.length === 0 && blockReason(payload) && !this.finished.has(0)) {
        this.finished.add(0);
        chunks.push(this.chunk([{ index: 0, delta: this.roleDelta(0), finish_reason: 'content_filter' }]));
      }
    }
    return chunks;
  }

  private candidateChunks(index: number, candidate: Record<string, unknown>): ChatChunk[] {
    const chunks: ChatChunk[] = [];
    const { text, thoughts, calls } = readParts(candidate);
    this.output += thoughts + text;
    const delta: ChatChunk['choices'][number]['delta'] = {};
    if (text) delta.content = text;
    if (calls.length > 0) {
      let next = this.toolCallCount.get(index) ?? 0;
      delta.tool_calls = calls.map((call) => {
        this.output += call.function.arguments;
        return { index: next++, id: call.id, type: 'function' as const, function: call.function };
      });
      this.toolCallCount.set(index, next);
    }
    if (delta.content !== undefined || delta.tool_calls) {
      chunks.push(this.chunk([{ index, delta: { ...this.roleDelta(index), ...delta }, finish_reason: null }]));
    }
    if (typeof candidate.finishReason === 'string' && !this.finished.has(index)) {
      this.finished.add(index);
      const finishReason = toFinishReason(candidate.finishReason, this.toolCallCount.has(index));
      chunks.push(this.chunk([{ index, delta: this.roleDelta(index), finish_reason: finishReason }]));
    }
    return chunks;
  }

  /** `{role:'assistant'}` the first time a choice appears, `{}` after. */
  private roleDelta(index: number): { role?: 'assistant' } {
    if (this.roleSent.has(index)) return {};
    this.roleSent.add(index);
    return { role: 'assistant' };
  }

  private chunk(choices: ChatChunk['choices'], usage?: OpenAIUsage): ChatChunk {
    const chunk: ChatChunk = {
      id: this.id,
      object: 'chat.completion.chunk',
      created: this.created,
      model: this.requestedModel,
      choices,
    };
    if (usage) chunk.usage = usage;
    return chunk;
  }
}

// ---- errors ----

function geminiErrorFromObject(raw: Record<string, unknown>, fallbackStatus: number): UpstreamError {
  const status = typeof raw.code === 'number' && raw.code >= 400 ? raw.code : fallbackStatus;
  return {
    status,
    type: stringOr(raw.status, defaultErrorType(status)),
    message: clip(stringOr(raw.message, `Gemini answered HTTP ${status}.`)),
    retryable: isRetryableStatus(status),
  };
}

/** `{error:{code,message,status}}` (status is Google's code name, e.g. RESOURCE_EXHAUSTED). */
export function parseGeminiError(status: number, body: string): UpstreamError {
  let parsed = parseJson(body);
  // Errors of streamed calls may come as a one-element JSON array.
  if (Array.isArray(parsed)) parsed = parsed[0];
  if (isRecord(parsed) && isRecord(parsed.error)) {
    return { ...geminiErrorFromObject(parsed.error, status), status, retryable: isRetryableStatus(status) };
  }
  return {
    status,
    type: defaultErrorType(status),
    message: clip(body.trim() || `Gemini answered HTTP ${status}.`),
    retryable: isRetryableStatus(status),
  };
}

// ---- embeddings ----

function modelResource(upstreamModel: string): string {
  return upstreamModel.includes('/') ? upstreamModel : `models/${upstreamModel}`;
}

function embedRequest(model: string, text: string, dimensions: number | undefined): Record<string, unknown> {
  const request: Record<string, unknown> = { model, content: { parts: [{ text }] } };
  if (dimensions !== undefined) request.outputDimensionality = dimensions;
  return request;
}

/**
 * Gemini does not report tokens for embeddings: usage is null (the gateway counts the input) and
 * the response's usage is zero until the gateway fills it in.
 */
export function parseGeminiEmbeddings(body: unknown, requestedModel: string): { response: EmbeddingsResponse; usage: Usage | null } {
  if (!isRecord(body)) throw malformedResponse('an embeddings answer that is not an object');
  const raw = Array.isArray(body.embeddings) ? body.embeddings : isRecord(body.embedding) ? [body.embedding] : null;
  if (!raw) throw malformedResponse('an embeddings answer without embeddings');
  const data = raw.map((item, index) => {
    const values = isRecord(item) && Array.isArray(item.values) ? item.values : null;
    if (!values || values.some((v) => typeof v !== 'number')) throw malformedResponse('an embedding without values');
    return { object: 'embedding' as const, index, embedding: values as number[] };
  });
  return { response: { object: 'list', data, model: requestedModel, usage: { prompt_tokens: 0, total_tokens: 0 } }, usage: null };
}

// ---- the adapter ----

function geminiHeaders(apiKey: string, stream: boolean): Record<string, string> {
  return {
    'content-type': 'application/json',
    accept: stream ? 'text/event-stream' : 'application/json',
    'x-goog-api-key': apiKey,
  };
}

const chat: ChatAdapter = {
  buildRequest(req: ChatRequest, target: UpstreamTarget, stream: boolean): PreparedRequest {
    const method = stream ? ':streamGenerateContent?alt=sse' : ':generateContent';
    return {
      url: joinUrl(target.baseUrl, `/${modelResource(target.upstreamModel)}${method}`),
      method: 'POST',
      headers: geminiHeaders(target.apiKey, stream),
      body: JSON.stringify(toGeminiRequest(req)),
    };
  },
  parseResponse: parseGeminiChatResponse,
  createStreamTranslator: (requestedModel) => new GeminiStreamTranslator(requestedModel),
};

const embeddings: EmbeddingsAdapter = {
  buildRequest(req: EmbeddingsRequest, target: UpstreamTarget): PreparedRequest {
    const model = modelResource(target.upstreamModel);
    const input = req.input;
    let method: string;
    let body: Record<string, unknown>;
    if (typeof input === 'string') {
      method = ':embedContent';
      body = embedRequest(model, input, req.dimensions);
    } else if (Array.isArray(input) && input.every((item): item is string => typeof item === 'string')) {
      method = ':batchEmbedContents';
      body = { requests: input.map((text) => embedRequest(model, text, req.dimensions)) };
    } else {
      throw unsupportedRequest('Gemini embeds text only; token arrays cannot be sent to it.', 'input');
    }
    return { url: joinUrl(target.baseUrl, `/${model}${method}`), method: 'POST', headers: geminiHeaders(target.apiKey, false), body: JSON.stringify(body) };
  },
  parseResponse: parseGeminiEmbeddings,
};

export const geminiAdapter: ProviderAdapter = {
  type: 'gemini',
  chat,
  embeddings,
  parseError: parseGeminiError,
};

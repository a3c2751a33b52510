// The contract every upstream adapter implements. Adapters are pure translation: they turn the
// gateway's canonical request (OpenAI's wire format) into the upstream's, and the upstream's
// answers (JSON or SSE events) back into canonical ones plus the usage the upstream reported.
// They never move money, touch the store or open sockets themselves.

/** One chat message in OpenAI's format; content parts (text, image_url...) pass through. */
export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content?: string | ContentPart[] | null;
  name?: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  [extra: string]: unknown;
}

export interface ContentPart {
  type: string; // 'text' | 'image_url' | 'input_audio' | ...
  text?: string;
  image_url?: { url: string; detail?: string };
  [extra: string]: unknown;
}

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface ToolDefinition {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
}

/** The canonical chat request: an OpenAI `POST /v1/chat/completions` body. */
export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean } | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  stop?: string | string[] | null;
  tools?: ToolDefinition[];
  tool_choice?: 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };
  response_format?: { type: 'text' | 'json_object' | 'json_schema'; json_schema?: unknown };
  user?: string;
  [extra: string]: unknown;
}

/** The canonical non-streamed answer: an OpenAI `chat.completion` object. */
export interface ChatResponse {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: { role: 'assistant'; content: string | null; tool_calls?: ToolCall[]; refusal?: string | null };
    finish_reason: FinishReason | null;
    logprobs?: unknown;
  }>;
  usage?: OpenAIUsage;
  system_fingerprint?: string | null;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call';

/** The canonical stream event: an OpenAI `chat.completion.chunk` object. */
export interface ChatChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: {
      role?: 'assistant';
      content?: string | null;
      tool_calls?: Array<{ index: number; id?: string; type?: 'function'; function?: { name?: string; arguments?: string } }>;
      refusal?: string | null;
    };
    finish_reason: FinishReason | null;
  }>;
  usage?: OpenAIUsage | null;
}

export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number };
  completion_tokens_details?: { reasoning_tokens?: number };
}

/** Usage in the units Tollgate prices. inputTokens excludes cached input tokens. */
export interface Usage {
  inputTokens: number;
  cachedInputTokens: number;
  outputTokens: number; // includes reasoning tokens
  reasoningTokens: number;
  images: number;
}

export interface EmbeddingsRequest {
  model: string;
  input: string | string[] | number[] | number[][];
  encoding_format?: 'float' | 'base64';
  dimensions?: number;
  user?: string;
}

export interface EmbeddingsResponse {
  object: 'list';
  data: Array<{ object: 'embedding'; index: number; embedding: number[] | string }>;
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

export interface ImagesRequest {
  model: string;
  prompt: string;
  n?: number;
  size?: string;
  quality?: string;
  response_format?: 'url' | 'b64_json';
  user?: string;
}

export interface ImagesResponse {
  created: number;
  data: Array<{ url?: string; b64_json?: string; revised_prompt?: string }>;
}

/** Where and how to reach the upstream, resolved by routing from a provider and credential. */
export interface UpstreamTarget {
  baseUrl: string; // e.g. https://api.openai.com/v1, https://api.anthropic.com, https://x.openai.azure.com
  apiKey: string;
  upstreamModel: string; // model id (or Azure deployment name)
  apiVersion?: string; // Azure api-version, Anthropic-Version override
}

/** An HTTP request ready to send. */
export interface PreparedRequest {
  url: string;
  method: 'POST' | 'GET';
  headers: Record<string, string>;
  body: string;
}

/** A streamed upstream answer is fed through one of these, one decoded text piece at a time. */
export interface StreamTranslator {
  /** Feed raw upstream text (any split); returns the canonical chunks completed by it. */
  push(text: string): ChatChunk[];
  /** The upstream closed the stream; returns any final chunks. */
  end(): ChatChunk[];
  /** Usage the upstream reported so far (null if none yet). */
  usage(): Usage | null;
  /** Output text produced so far (content + tool-call arguments), for counting when usage is missing. */
  outputText(): string;
  /** An error event the upstream sent inside the stream, if any. */
  error(): UpstreamError | null;
}

export interface UpstreamError {
  status: number;
  type: string;
  message: string;
  retryable: boolean; // 429, 5xx, overloaded
}

export interface ChatAdapter {
  buildRequest(req: ChatRequest, target: UpstreamTarget, stream: boolean): PreparedRequest;
  parseResponse(body: unknown, requestedModel: string): { response: ChatResponse; usage: Usage | null };
  createStreamTranslator(requestedModel: string): StreamTranslator;
}

export interface EmbeddingsAdapter {
  buildRequest(req: EmbeddingsRequest, target: UpstreamTarget): PreparedRequest;
  parseResponse(body: unknown, requestedModel: string): { response: EmbeddingsResponse; usage: Usage | null };
}

export interface ImagesAdapter {
  buildRequest(req: ImagesRequest, target: UpstreamTarget): PreparedRequest;
  parseResponse(body: unknown): { response: ImagesResponse; usage: Usage | null };
}

/** What cancels an upstream call (the client left, the call's deadline passed): an AbortSignal or the like. */
export interface CancelSignal {
  readonly aborted: boolean;
  readonly reason?: unknown;
}

/** An in-process upstream (the sandbox): answers a PreparedRequest without a socket. */
export interface LocalTransport {
  send(req: PreparedRequest, signal: CancelSignal): Promise<{ status: number; headers: Record<string, string>; body: AsyncIterable<Uint8Array> }>;
}

export type ProviderType = 'openai' | 'openai-compatible' | 'anthropic' | 'gemini' | 'azure-openai' | 'sandbox';

export interface ProviderAdapter {
  type: ProviderType;
  chat: ChatAdapter;
  embeddings?: EmbeddingsAdapter;
  images?: ImagesAdapter;
  /** Turns a non-2xx upstream answer into an error. */
  parseError(status: number, body: string): UpstreamError;
  /** Present for providers that run in-process (sandbox). */
  local?: LocalTransport;
}

// Token counting with OpenAI's o200k_base encoding: the gateway's estimate of input tokens for
// holds, the fallback when an upstream reports no usage, and the sandbox's and mocks' usage.
import { Tiktoken } from 'js-tiktoken/lite';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import type { ChatMessage } from './types.ts';

/** OpenAI's overhead per chat message (role and separators). */
export const tokensPerMessage = 3;
/** Every reply is primed with `<|start|>assistant<|message|>`. */
export const tokensPerReplyPriming = 3;
/** A `name` field costs one token more than its text. */
export const tokensPerName = 1;
/** A flat estimate for a non-text content part (image, audio...): OpenAI's low-detail image cost. */
export const tokensPerMediaPart = 85;
/**
 * Text is tokenized in slices of at most this many characters, cut before whitespace, so one huge
 * input never goes to the encoder in a single call.
 */
export const sliceChars = 16_384;
/**
 * BPE merging is quadratic in the length of one pre-tokenized piece (a 1 MB run of letters takes
 * seconds), so a run without whitespace (or of whitespace) longer than this is encoded in pieces
 * of this length: off by about a token per piece at worst, exact for most runs (JSON, URLs).
 */
export const maxRunChars = 64;
/**
 * Characters of such long runs encoded per countTokens call; the rest is counted at the
 * tokens-per-character ratio of the part encoded (so a megabyte of base64 costs milliseconds).
 */
export const exactRunBudgetChars = 4096;

const longRun = new RegExp(`\\S{${maxRunChars + 1},}|\\s{${maxRunChars + 1},}`);
const runs = /\S+|\s+/g;

let encoder: Tiktoken | null = null;

function getEncoder(): Tiktoken {
  // Building the rank maps takes up to a second and tens of MB: done once, on first use.
  encoder ??= new Tiktoken(o200kBase);
  return encoder;
}

function encode(text: string): number[] {
  return getEncoder().encode(text, [], []);
}

/**
 * Tokens of `text` (special-token markers count as plain text, never as control tokens). Unlike
 * countTokens it encodes every long run, so it is for bounded texts such as generated replies.
 */
export function encodeTokens(text: string): number[] {
  if (isSimple(text)) return encode(text);
  const tokens: number[] = [];
  for (const slice of sliceText(text)) {
    for (const piece of slice.longRun ? chop(slice.text, maxRunChars) : [slice.text]) {
      for (const t of encode(piece)) tokens.push(t);
    }
  }
  return tokens;
}

export function decodeTokens(tokens: number[]): string {
  return getEncoder().decode(tokens);
}

/**
 * Counts of recent texts. Chat clients resend the whole conversation every turn and the same
 * system prompt with every call, so most of a call's messages were counted before; a hit costs a
 * hash of the string instead of a BPE pass. Least recently used first out, bounded in characters.
 */
const countCache = new Map<string, number>();
const cacheMaxTextChars = 256 * 1024;
const cacheMaxTotalChars = 8 * 1024 * 1024;
let cachedChars = 0;

export function countTokens(text: string): number {
  if (text.length === 0 || text.length > cacheMaxTextChars) return countUncached(text);
  const hit = countCache.get(text);
  if (hit !== undefined) {
    countCache.delete(text);
    countCache.set(text, hit);
    return hit;
  }
  const n = countUncached(text);
  countCache.set(text, n);
  cachedChars += text.length;
  for (const old of countCache.keys()) {
    if (cachedChars <= cacheMaxTotalChars) break;
    countCache.delete(old);
    cachedChars -= old.length;
  }
  return n;
}

function countUncached(text: string): number {
  if (text.length === 0) return 0;
  if (isSimple(text)) return encode(text).length;
  let count = 0;
  let budgetChars = exactRunBudgetChars;
  let encodedRunChars = 0;
  let encodedRunTokens = 0;
  let deferredRunChars = 0;
  for (const slice of sliceText(text)) {
    if (!slice.longRun) {
      count += encode(slice.text).length;
      continue;
    }
    for (const piece of chop(slice.text, maxRunChars)) {
      if (budgetChars <= 0) {
        deferredRunChars += piece.length;
        continue;
      }
      const tokens = encode(piece).length;
      count += tokens;
      encodedRunTokens += tokens;
      encodedRunChars += piece.length;
      budgetChars -= piece.length;
    }
  }
  if (deferredRunChars > 0) count += Math.ceil((deferredRunChars * encodedRunTokens) / encodedRunChars);
  return count;
}

/** Prompt tokens of a chat, the way OpenAI's cookbook counts them. */
export function countMessagesTokens(messages: ChatMessage[]): number {
  let count = tokensPerReplyPriming;
  for (const message of messages) {
    count += tokensPerMessage + countTokens(message.role);
    count += countContentTokens(message.content);
    if (typeof message.name === 'string') count += tokensPerName + countTokens(message.name);
    if (typeof message.tool_call_id === 'string') count += countTokens(message.tool_call_id);
    for (const call of message.tool_calls ?? []) {
      count += countTokens(call.function.name) + countTokens(call.function.arguments);
    }
  }
  return count;
}

function countContentTokens(content: ChatMessage['content']): number {
  if (content == null) return 0;
  if (typeof content === 'string') return countTokens(content);
  let count = 0;
  for (const part of content) {
    if (part.type === 'text') count += countTokens(part.text ?? '');
    else count += tokensPerMediaPart;
  }
  return count;
}

function isSimple(text: string): boolean {
  return text.length <= sliceChars && !longRun.test(text);
}

/** Cuts text into whitespace-bounded slices of at most sliceChars; long runs come out whole. */
function* sliceText(text: string): Generator<{ text: string; longRun: boolean }> {
  let buffer = '';
  for (const match of text.matchAll(runs)) {
    const run = match[0];
    if (run.length > maxRunChars) {
      if (buffer) yield { text: buffer, longRun: false };
      buffer = '';
      yield { text: run, longRun: true };
      continue;
    }
    // Cut before whitespace: a slice starting with " word" tokenizes as it would unsliced.
    const whitespace = /^\s/.test(run);
    const full = whitespace ? buffer.length + run.length > sliceChars - 2 * maxRunChars : buffer.length + run.length > sliceChars;
    if (full && buffer) {
      yield { text: buffer, longRun: false };
      buffer = '';
    }
    buffer += run;
  }
  if (buffer) yield { text: buffer, longRun: false };
}

function* chop(run: string, size: number): Generator<string> {
  let start = 0;
  while (start < run.length) {
    let end = Math.min(start + size, run.length);
    // Never split a surrogate pair.
    if (end < run.length && isHighSurrogate(run.charCodeAt(end - 1))) end -= 1;
    yield run.slice(start, end);
    start = end;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

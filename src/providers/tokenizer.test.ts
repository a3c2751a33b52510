import { describe, expect, it } from 'vitest';
import { Tiktoken } from 'js-tiktoken/lite';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import { countMessagesTokens, countTokens, decodeTokens, encodeTokens, maxRunChars, sliceChars, tokensPerMediaPart } from './tokenizer.ts';

describe('tokenizer (o200k_base)', () => {
  it('counts tokens like OpenAI', () => {
    expect(countTokens('')).toBe(0);
    expect(countTokens('Hello world')).toBe(2);
    expect(countTokens('tiktoken is great!')).toBe(encodeTokens('tiktoken is great!').length);
    expect(decodeTokens(encodeTokens('Grüße, 世界 🌍'))).toBe('Grüße, 世界 🌍');
  });

  it('treats special-token markers as plain text', () => {
    expect(countTokens('<|endoftext|>')).toBeGreaterThan(1);
  });

  it('adds OpenAI chat overheads: 3 per message, 1 per name, 3 for the reply, 85 per media part', () => {
    expect(countMessagesTokens([])).toBe(3);
    expect(countMessagesTokens([{ role: 'user', content: 'Hello world' }])).toBe(3 + 3 + countTokens('user') + 2);
    expect(countMessagesTokens([{ role: 'user', name: 'ann', content: 'Hello world' }])).toBe(3 + 3 + 1 + 2 + 1 + countTokens('ann'));
    const withImage = countMessagesTokens([
      { role: 'user', content: [{ type: 'text', text: 'Hello world' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] },
    ]);
    expect(withImage).toBe(3 + 3 + 1 + 2 + tokensPerMediaPart);
    const toolTurn = countMessagesTokens([
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } }] },
    ]);
    expect(toolTurn).toBe(3 + 3 + countTokens('assistant') + countTokens('get_weather') + countTokens('{"location":"Paris"}'));
  });

  it('answers repeated texts (resent conversations, system prompts) from its cache with the same counts', () => {
    const exact = new Tiktoken(o200kBase);
    const texts = Array.from({ length: 50 }, (_, i) => `Message ${i}: ${'the conversation so far, resent on every turn. '.repeat(1 + (i % 7))}`);
    for (let round = 0; round < 3; round++) {
      for (const t of texts) expect(countTokens(t)).toBe(exact.encode(t).length);
    }
    // Texts that differ in one character are counted apart.
    expect(countTokens(`${texts[0]}!`)).toBe(exact.encode(`${texts[0]}!`).length);
  });

  it('estimates huge unbroken runs quickly instead of stalling', () => {
    // Counted from the ratio of the part encoded (exactly this formula), not by encoding 2 MB.
    const count = countTokens('a'.repeat(2_000_000));
    expect(count).toBe(Math.ceil((2_000_000 * countTokens('a'.repeat(maxRunChars))) / maxRunChars));
    // Ordinary text is counted exactly even past the slice size.
    const prose = 'The quick brown fox jumps over the lazy dog. '.repeat(1000);
    expect(prose.length).toBeGreaterThan(sliceChars);
    expect(countTokens(prose)).toBe(new Tiktoken(o200kBase).encode(prose).length);
    expect(countTokens('x'.repeat(maxRunChars))).toBe(encodeTokens('x'.repeat(maxRunChars)).length);
  });
});

import { describe, expect, it } from 'vitest';
import { affordableOutputTokens, chargeMicros, costNanos, formatNanos, isPricedFor, parseRateCard, parseScaled } from './price.ts';

const u = (inputTokens: number, outputTokens: number, extra: Partial<{ cachedInputTokens: number; reasoningTokens: number; images: number }> = {}) => ({
  inputTokens,
  outputTokens,
  cachedInputTokens: extra.cachedInputTokens ?? 0,
  reasoningTokens: extra.reasoningTokens ?? 0,
  images: extra.images ?? 0,
});

describe('pricing', () => {
  it('prices per million tokens exactly and rounds up once per call', () => {
    // 1,000 input at 4 credits/1M + 500 output at 12 credits/1M = 0.004 + 0.006 = 0.01 credits.
    expect(chargeMicros({ inputPer1M: '4', outputPer1M: '12' }, u(1000, 500))).toBe(10_000n);
    // 7 tokens at 0.15/1M = 1.05 micros → 2 micros (ceil), never a float on the way.
    expect(chargeMicros({ inputPer1M: '0.15', outputPer1M: '0' }, u(7, 0))).toBe(2n);
    expect(chargeMicros({ inputPer1M: '0.000000001', outputPer1M: '0' }, u(1, 0))).toBe(1n);
    expect(chargeMicros({ inputPer1M: '0', outputPer1M: '0' }, u(1_000_000, 1_000_000))).toBe(0n);
  });

  it('prices cached input, reasoning, images and requests at their own rates, with safe fallbacks', () => {
    const card = { inputPer1M: '10', cachedInputPer1M: '1', outputPer1M: '30', reasoningPer1M: '60', perImage: '0.5', perRequest: '0.001' };
    const charge = chargeMicros(card, u(1_000_000, 1_000_000, { cachedInputTokens: 1_000_000, reasoningTokens: 500_000, images: 2 }));
    // 10 + 1 + 30*0.5 + 60*0.5 + 1 + 0.001 credits
    expect(charge).toBe(57_001_000n);
    // No cached or reasoning rate: they cost as much as input and output, never zero.
    expect(chargeMicros({ inputPer1M: '10', outputPer1M: '30' }, u(0, 1_000_000, { cachedInputTokens: 1_000_000, reasoningTokens: 1_000_000 }))).toBe(40_000_000n);
  });

  it('computes provider cost in nano-units of money', () => {
    expect(costNanos({ currency: 'USD', inputPer1M: '2.50', outputPer1M: '10' }, u(1000, 100))).toBe(3_500_000n);
    expect(formatNanos(3_500_000n)).toBe('0.0035');
  });

  it('rejects malformed rates', () => {
    expect(() => parseScaled('-1', 'x')).toThrow(/non-negative/);
    expect(() => parseScaled('1e3', 'x')).toThrow();
    expect(() => parseScaled('0.0000000001', 'x')).toThrow(/decimals/);
    expect(() => parseRateCard({ perToken: '1' }, 'rates')).toThrow(/Unknown rate unit/);
    expect(parseRateCard({ inputPer1M: 2.5 }, 'rates')).toEqual({ inputPer1M: '2.5' });
  });

  it('fails closed on unpriced workloads', () => {
    expect(isPricedFor({ inputPer1M: '1' }, 'text')).toBe(false);
    expect(isPricedFor({ inputPer1M: '1', outputPer1M: '0' }, 'text')).toBe(true);
    expect(isPricedFor({}, 'embedding')).toBe(false);
    expect(isPricedFor({ perImage: '1' }, 'image')).toBe(true);
  });

  it('finds how many output tokens a budget affords', () => {
    const card = { inputPer1M: '1', outputPer1M: '2' };
    // 1,000 input = 1,000 micros; 1,000,000 micros budget leaves 999,000 micros = 499,500 output tokens.
    expect(affordableOutputTokens(card, u(1000, 0), 1_000_000n)).toBe(499_500);
    expect(affordableOutputTokens(card, u(1000, 0), 500n)).toBe(0);
  });
});

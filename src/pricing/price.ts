// Pricing, exactly. Rates are decimal strings (credits per unit; provider cost in money per unit)
// held as integers scaled by 10^9. A call's charge is the exact sum over its units, rounded UP to
// the next micro-credit once per call (the one rounding rule); its provider cost likewise to the
// next nano-unit of its currency. Nothing here is a float.
import { invalid } from '../lib/errors.ts';
import type { Usage } from '../providers/types.ts';

export const rateUnits = ['inputPer1M', 'cachedInputPer1M', 'outputPer1M', 'reasoningPer1M', 'perImage', 'perRequest'] as const;
export type RateUnit = (typeof rateUnits)[number];
export type RateCard = Partial<Record<RateUnit, string>>;

export interface CostCard extends RateCard {
  currency: string;
}

const scaleDigits = 9;
const scale = 10n ** BigInt(scaleDigits);
const maxRateWhole = 10n ** 12n;
const decimalPattern = /^(\d+)(?:\.(\d+))?$/;

/** "2.5" → 2_500_000_000n (value × 10^9). At most 9 decimals, never negative. */
export function parseScaled(value: unknown, param: string): bigint {
  const text = typeof value === 'number' && Number.isFinite(value) && !/e/i.test(String(value)) ? String(value) : value;
  if (typeof text !== 'string') throw invalid('invalid_rate', `'${param}' must be a decimal string such as "2.50".`, param);
  const m = decimalPattern.exec(text.trim());
  if (!m) throw invalid('invalid_rate', `'${param}' must be a non-negative decimal such as "2.50".`, param);
  const [, whole, frac = ''] = m;
  if (frac.length > scaleDigits) throw invalid('invalid_rate', `'${param}' has more than ${scaleDigits} decimals.`, param);
  if (BigInt(whole) >= maxRateWhole) throw invalid('invalid_rate', `'${param}' is too large.`, param);
  return BigInt(whole) * scale + BigInt(frac.padEnd(scaleDigits, '0'));
}

// Rates are read on every call from a handful of distinct strings: parse each once.
const parsedRates = new Map<string, bigint>();
const maxParsedRates = 10_000;

function scaledRate(value: string, unit: RateUnit): bigint {
  let v = parsedRates.get(value);
  if (v === undefined) {
    v = parseScaled(value, unit);
    if (parsedRates.size >= maxParsedRates) parsedRates.clear();
    parsedRates.set(value, v);
  }
  return v;
}

/** Validates a rate card: known units, decimal strings; returns it normalised. */
export function parseRateCard(value: unknown, param: string): RateCard {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('invalid_rate', `'${param}' must be an object of rates.`, param);
  const out: RateCard = {};
  for (const [unit, rate] of Object.entries(value)) {
    if (!(rateUnits as readonly string[]).includes(unit)) {
      throw invalid('invalid_rate', `Unknown rate unit '${unit}' in '${param}' (use ${rateUnits.join(', ')}).`, `${param}.${unit}`);
    }
    parseScaled(rate, `${param}.${unit}`);
    out[unit as RateUnit] = typeof rate === 'number' ? String(rate) : (rate as string).trim();
  }
  return out;
}

export function parseCostCard(value: unknown, param: string): CostCard {
  if (typeof value !== 'object' || value === null) throw invalid('invalid_cost', `'${param}' must be an object.`, param);
  const { currency, ...rates } = value as Record<string, unknown>;
  if (typeof currency !== 'string' || !/^[A-Z]{3}$/.test(currency)) {
    throw invalid('invalid_cost', `'${param}.currency' must be an ISO 4217 code such as "USD".`, `${param}.currency`);
  }
  return { currency, ...parseRateCard(rates, param) };
}

/** The units a workload must have priced before it is callable (fail closed, never free by accident). */
export function isPricedFor(card: RateCard, workload: string): boolean {
  switch (workload) {
    case 'embedding':
      return card.inputPer1M !== undefined || card.perRequest !== undefined;
    case 'image':
      return card.perImage !== undefined || card.perRequest !== undefined;
    case 'audio':
    case 'video':
      return card.perRequest !== undefined || (card.inputPer1M !== undefined && card.outputPer1M !== undefined);
    default:
      return card.inputPer1M !== undefined && card.outputPer1M !== undefined;
  }
}

/**
 * The exact amount, times 10^9, in the card's unit (credits or money) for this usage. Cached input
 * falls back to the input rate and reasoning to the output rate: a missing rate never makes a unit free.
 */
export function exactAmount(card: RateCard, usage: Usage, requests = 1): bigint {
  const r = (unit: RateUnit, fallback?: RateUnit) => {
    const v = card[unit] ?? (fallback ? card[fallback] : undefined);
    return v === undefined ? 0n : scaledRate(v, unit);
  };
  const perToken = (tokens: number, rate: bigint) => BigInt(tokens) * rate; // per 1M tokens → ×10^-6
  const visibleOutput = Math.max(usage.outputTokens - usage.reasoningTokens, 0);
  const tokenPart =
    perToken(usage.inputTokens, r('inputPer1M')) +
    perToken(usage.cachedInputTokens, r('cachedInputPer1M', 'inputPer1M')) +
    perToken(visibleOutput, r('outputPer1M')) +
    perToken(usage.reasoningTokens, r('reasoningPer1M', 'outputPer1M'));
  const unitPart = BigInt(usage.images) * r('perImage') + BigInt(requests) * r('perRequest');
  // tokenPart is in (units × 10^9) per 10^6 tokens; unitPart in units × 10^9. Common base: ×10^-15.
  return tokenPart + unitPart * 1_000_000n;
}

/** Exact amount ×10^15 → integer micro-units (×10^6), rounded up. */
function toMicrosCeil(exact: bigint): bigint {
  const divisor = 10n ** 9n;
  return (exact + divisor - 1n) / divisor;
}

/** The charge in micro-credits, rounded up once per call. */
export function chargeMicros(card: RateCard, usage: Usage, requests = 1): bigint {
  return toMicrosCeil(exactAmount(card, usage, requests));
}

/** The provider cost in nano-units of its currency (10^-9), rounded up once per call. */
export function costNanos(card: CostCard, usage: Usage, requests = 1): bigint {
  const divisor = 10n ** 6n;
  return (exactAmount(card, usage, requests) + divisor - 1n) / divisor;
}

export const zeroUsage: Usage = { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0, reasoningTokens: 0, images: 0 };

/** How many output tokens `budgetMicros` buys after the input: floor, for strict admission. */
export function affordableOutputTokens(card: RateCard, inputUsage: Usage, budgetMicros: bigint): number {
  const inputExact = exactAmount(card, inputUsage);
  const outRate = card.outputPer1M ? parseScaled(card.outputPer1M, 'outputPer1M') : 0n;
  const budgetExact = budgetMicros * 10n ** 9n;
  if (budgetExact < inputExact) return 0;
  if (outRate === 0n) return Number.MAX_SAFE_INTEGER;
  const tokens = (budgetExact - inputExact) / outRate;
  return tokens > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(tokens);
}

/** Formats an integer amount scaled by 10^9 (nanos) as an exact decimal string: 1500n → "0.0000015". */
export function formatNanos(nanos: bigint): string {
  const negative = nanos < 0n;
  const abs = negative ? -nanos : nanos;
  const frac = (abs % scale).toString().padStart(scaleDigits, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${abs / scale}${frac ? `.${frac}` : ''}`;
}

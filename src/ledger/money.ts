// Credits in and out of the API. Internally every amount is an integer number of micro-credits
// (1 credit = 1,000,000 micros) held in a BigInt; outside it is an exact decimal string.
import { invalid } from '../lib/errors.ts';

export const microsPerCredit = 1_000_000n;
const maxCreditDecimals = 6;
/** The largest single amount: 100 billion credits (10^17 micros), so sums stay far inside int64. */
export const maxAbsMicros = 10n ** 17n;
/** No account total may pass this (int64 holds 9.22 * 10^18); writes that would are refused. */
export const maxAccountMicros = 4n * 10n ** 18n;

const decimalPattern = /^(-)?(\d+)(?:\.(\d+))?$/;

/**
 * Parses credits given as a decimal string or a JSON number ("12.5", 12.5, "0.000001").
 * Rejects exponents, more than 6 decimals, non-finite numbers and values out of range.
 */
export function parseCredits(value: unknown, param = 'credits'): bigint {
  let text: string;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalid('invalid_amount', `'${param}' must be a finite number.`, param);
    text = String(value);
    if (/e/i.test(text)) throw invalid('invalid_amount', `'${param}' is out of range or has more than ${maxCreditDecimals} decimals; send it as a decimal string.`, param);
  } else if (typeof value === 'string') {
    text = value.trim();
  } else {
    throw invalid('invalid_amount', `'${param}' must be a decimal string or a number of credits.`, param);
  }
  const m = decimalPattern.exec(text);
  if (!m) throw invalid('invalid_amount', `'${param}' must be a decimal number of credits, like "12.5".`, param);
  const [, minus, whole, frac = ''] = m;
  if (frac.length > maxCreditDecimals) {
    throw invalid('invalid_amount', `'${param}' has more than ${maxCreditDecimals} decimals (1 micro-credit is the smallest amount).`, param);
  }
  const micros = BigInt(whole) * microsPerCredit + BigInt(frac.padEnd(maxCreditDecimals, '0'));
  if (micros > maxAbsMicros) throw invalid('invalid_amount', `'${param}' is too large.`, param);
  return minus ? -micros : micros;
}

/** Parses credits that must be strictly positive. */
export function parsePositiveCredits(value: unknown, param = 'credits'): bigint {
  const micros = parseCredits(value, param);
  if (micros <= 0n) throw invalid('invalid_amount', `'${param}' must be greater than zero.`, param);
  return micros;
}

/** Formats micros as an exact decimal string of credits without trailing zeros: 4700250000n → "4700.25". */
export function formatCredits(micros: bigint): string {
  const negative = micros < 0n;
  const abs = negative ? -micros : micros;
  const whole = abs / microsPerCredit;
  const frac = (abs % microsPerCredit).toString().padStart(maxCreditDecimals, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${whole}${frac ? `.${frac}` : ''}`;
}

/** Reads a bigint column whichever way the driver returned it (bigint, number or string). */
export function toBigInt(value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new Error(`unsafe integer from the database: ${value}`);
    return BigInt(value);
  }
  if (typeof value === 'string') return BigInt(value);
  if (value === null || value === undefined) return 0n;
  throw new Error(`not an integer: ${String(value)}`);
}

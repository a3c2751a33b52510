// Margin before traffic opens: for each unit, what a customer is charged (credits) against what
// the upstream costs (money), with the same fallbacks the charge and cost use (cached input at the
// input rate, reasoning at the output rate, an absent rate at zero), so it shows what billing will do.
import { formatNanos, parseScaled, rateUnits, type CostCard, type RateCard, type RateUnit } from './price.ts';

export interface UnitMargin {
  unit: RateUnit;
  price: string;
  cost: string;
  margin: string;
}

const fallbackOf: Partial<Record<RateUnit, RateUnit>> = { cachedInputPer1M: 'inputPer1M', reasoningPer1M: 'outputPer1M' };

/**
 * Price − cost per unit named by either card, counting one credit as one unit of the cost's
 * currency (credits are denominated in the operator's currency). Negative means sold below cost.
 */
export function unitMargins(rates: RateCard, cost: CostCard): UnitMargin[] {
  const resolve = (card: RateCard, unit: RateUnit): bigint => {
    const fallback = fallbackOf[unit];
    const value = card[unit] ?? (fallback ? card[fallback] : undefined);
    return value === undefined ? 0n : parseScaled(value, unit);
  };
  const out: UnitMargin[] = [];
  for (const unit of rateUnits) {
    if (rates[unit] === undefined && cost[unit] === undefined) continue;
    const price = resolve(rates, unit);
    const upstream = resolve(cost, unit);
    out.push({ unit, price: formatNanos(price), cost: formatNanos(upstream), margin: formatNanos(price - upstream) });
  }
  return out;
}

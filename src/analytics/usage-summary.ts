// A workspace's usage over a time range, grouped by key, by model, or by a metadata field of its
// keys (department, project, downstream customer...). Sums are taken per key or model in SQL over
// the (workspace, time) index; keys are then folded into their metadata groups here, since key
// metadata is JSON text that the two engines read with different functions.
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import { invalid } from '../lib/errors.ts';
import { toBigInt } from '../ledger/money.ts';

export type UsageGroupBy = { kind: 'key' } | { kind: 'model' } | { kind: 'metadata'; field: string };

export interface UsageSummaryRow {
  /** The key id, the model name, or the metadata value (null: keys without that field). */
  group: string | null;
  /** Grouped by key: the key's name. */
  keyName?: string;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  chargeMicros: bigint;
  /** Provider cost per currency, in nano-units (calls without a known cost count nothing). */
  costNanos: Map<string, bigint>;
}

export const maxSummarySpanMs = 366 * 86_400_000;
const maxMetadataFieldChars = 100;

/** `key`, `model` or `metadata.<field>`. */
export function parseGroupBy(value: string): UsageGroupBy {
  if (value === 'key' || value === 'model') return { kind: value };
  const field = value.startsWith('metadata.') ? value.slice('metadata.'.length) : '';
  if (field.length === 0 || field.length > maxMetadataFieldChars) {
    throw invalid('invalid_group_by', "'groupBy' must be key, model or metadata.<field> (a key metadata field such as metadata.department).", 'groupBy');
  }
  return { kind: 'metadata', field };
}

/** Usage with `fromMs` ≤ created_at < `toMs`, heaviest charge first. */
export async function summarizeUsage(
  db: Kysely<Database>,
  workspaceId: string,
  query: { groupBy: UsageGroupBy; fromMs: number; toMs: number },
): Promise<UsageSummaryRow[]> {
  const { groupBy, fromMs, toMs } = query;
  if (fromMs >= toMs) throw invalid('invalid_time_range', "'from' must be before 'to'.", 'from');
  if (toMs - fromMs > maxSummarySpanMs) throw invalid('invalid_time_range', "'from' and 'to' may be at most 366 days apart.", 'from');
  const column = groupBy.kind === 'model' ? 'model' : 'key_id';
  const sums = await db
    .selectFrom('usage_records')
    .select((eb) => [
      eb.ref(column).as('g'),
      'cost_currency',
      eb.fn.countAll<number | bigint | string>().as('requests'),
      eb.fn.sum<number | bigint | string>('input_tokens').as('input_tokens'),
      eb.fn.sum<number | bigint | string>('output_tokens').as('output_tokens'),
      eb.fn.sum<number | bigint | string>('charge_micros').as('charge_micros'),
      eb.fn.sum<number | bigint | string | null>('cost_nanos').as('cost_nanos'),
    ])
    .where('workspace_id', '=', workspaceId)
    .where('created_at', '>=', BigInt(fromMs))
    .where('created_at', '<', BigInt(toMs))
    .groupBy([column, 'cost_currency'])
    .execute();

  let groupOf = (g: string): string | null => g;
  const keyNames = new Map<string, string>();
  if (groupBy.kind !== 'model' && sums.length > 0) {
    const ids = [...new Set(sums.map((s) => s.g as string))];
    const keys = await db.selectFrom('api_keys').select(['id', 'name', 'metadata']).where('id', 'in', ids).execute();
    for (const k of keys) keyNames.set(k.id, k.name);
    if (groupBy.kind === 'metadata') {
      const values = new Map(keys.map((k) => [k.id, (JSON.parse(k.metadata) as Record<string, string>)[groupBy.field] ?? null]));
      groupOf = (g) => values.get(g) ?? null;
    }
  }

  const rows = new Map<string | null, UsageSummaryRow>();
  for (const s of sums) {
    const group = groupOf(s.g as string);
    let row = rows.get(group);
    if (!row) {
      row = { group, requests: 0, inputTokens: 0, outputTokens: 0, chargeMicros: 0n, costNanos: new Map() };
      if (groupBy.kind === 'key') row.keyName = keyNames.get(s.g as string) ?? '';
      rows.set(group, row);
    }
    row.requests += Number(s.requests);
    row.inputTokens += Number(toBigInt(s.input_tokens));
    row.outputTokens += Number(toBigInt(s.output_tokens));
    row.chargeMicros += toBigInt(s.charge_micros);
    if (s.cost_currency !== null && s.cost_nanos !== null) {
      row.costNanos.set(s.cost_currency, (row.costNanos.get(s.cost_currency) ?? 0n) + toBigInt(s.cost_nanos));
    }
  }
  return [...rows.values()].sort((a, b) => {
    if (a.chargeMicros !== b.chargeMicros) return a.chargeMicros > b.chargeMicros ? -1 : 1;
    const [x, y] = [a.group ?? '', b.group ?? ''];
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

// Cursor pagination and time parameters shared by every list route.
import { Type } from '@sinclair/typebox';
import { invalid } from '../lib/errors.ts';
import { defaultPageSize, maxPageSize } from '../ledger/reads.ts';

export const pageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: maxPageSize })),
  cursor: Type.Optional(Type.String({ maxLength: 64 })),
};

export function readPage(q: { limit?: number; cursor?: string }): { limit: number; cursor?: string } {
  return { limit: q.limit ?? defaultPageSize, cursor: q.cursor || undefined };
}

const isoPattern = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** Reads an ISO 8601 timestamp (a date alone means midnight UTC) into epoch milliseconds. */
export function parseTime(value: string, param: string): number {
  const ms = isoPattern.test(value) ? Date.parse(value.length === 10 ? `${value}T00:00:00Z` : value) : NaN;
  if (!Number.isFinite(ms)) throw invalid('invalid_time', `'${param}' must be an ISO 8601 time such as 2026-01-31T00:00:00Z.`, param);
  return ms;
}

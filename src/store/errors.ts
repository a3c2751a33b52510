// Recognising database errors the same way on both engines, so use cases can turn a lost race on
// a unique column into a clear conflict instead of a 500.

/** True when the error is a unique (or primary key) constraint violation on SQLite or PostgreSQL. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/** True for any integrity constraint violation (unique, foreign key, check, not null) on SQLite or PostgreSQL (class 23). */
export function isConstraintViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('SQLITE_CONSTRAINT') || /^23[0-9A-Z]{3}$/.test(code));
}

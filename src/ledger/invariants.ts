// What must hold after every ledger write; a broken invariant aborts the write's transaction.

/** A broken ledger invariant: never caught and ignored; it aborts the transaction it happened in. */
export class InvariantViolation extends Error {}

export function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new InvariantViolation(`ledger invariant violated: ${message}`);
}

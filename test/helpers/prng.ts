// Seeded randomness for the ledger's random-sequence tests: the same sequence on every machine.
const credit = 1_000_000n;

/** mulberry32: small, fast, and the same sequence on every machine for a seed. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  return {
    next,
    int,
    chance: (p: number) => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)],
    /** A random amount from `loCredits` to `hiCredits` (and up to a credit more), in micro-credits. */
    micros: (loCredits: number, hiCredits: number) => BigInt(int(loCredits, hiCredits)) * credit + BigInt(int(0, 999_999)),
  };
}

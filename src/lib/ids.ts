// Prefixed, time-ordered identifiers (`ws_...`, `txn_...`): 10 characters of millisecond time, 4 of
// a per-process sequence within that millisecond, then 12 random ones, in Crockford base32, so ids
// sort by creation time (in order within one process) and carry what they name.
import { randomBytes, randomFillSync } from 'node:crypto';

const alphabet = '0123456789abcdefghjkmnpqrstvwxyz';
const timeChars = 10;
const seqChars = 4;
const randomChars = 12;
let lastTimeMs = -1;
let seq = 0;
// Random bytes are drawn from the OS a pool at a time: one syscall per ~340 ids instead of one each.
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

export function newId(prefix: string, nowMs: number = Date.now()): string {
  let time = '';
  let t = nowMs;
  for (let i = 0; i < timeChars; i++) {
    time = alphabet[t % 32] + time;
    t = Math.floor(t / 32);
  }
  seq = nowMs === lastTimeMs ? (seq + 1) % 32 ** seqChars : 0;
  lastTimeMs = nowMs;
  let sequence = '';
  for (let i = 0, n = seq; i < seqChars; i++, n = Math.floor(n / 32)) sequence = alphabet[n % 32] + sequence;
  if (poolOffset + randomChars > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  let rand = '';
  for (let i = 0; i < randomChars; i++) rand += alphabet[pool[poolOffset + i] & 31];
  poolOffset += randomChars;
  return `${prefix}_${time}${sequence}${rand}`;
}

/** A random secret of `bytes` bytes, URL-safe. */
export function newSecret(bytes = 24): string {
  return randomBytes(bytes).toString('base64url');
}

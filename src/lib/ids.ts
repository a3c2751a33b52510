// Prefixed, time-ordered identifiers (`ws_...`, `txn_...`): 10 characters of millisecond time, 4 of
// a per-process sequence within that millisecond, then 12 random ones, in Crockford base32, so ids
// sort by creation time (in order within one process) and carry what they name.
import { randomBytes } from 'node:crypto';

const alphabet = '0123456789abcdefghjkmnpqrstvwxyz';
const timeChars = 10;
const seqChars = 4;
const randomChars = 12;
let lastTimeMs = -1;
let seq = 0;

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
  const bytes = randomBytes(randomChars);
  let rand = '';
  for (let i = 0; i < randomChars; i++) rand += alphabet[bytes[i] & 31];
  return `${prefix}_${time}${sequence}${rand}`;
}

/** A random secret of `bytes` bytes, URL-safe. */
export function newSecret(bytes = 24): string {
  return randomBytes(bytes).toString('base64url');
}

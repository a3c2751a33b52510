// Secrets at rest: AES-256-GCM under TOLLGATE_SECRET_KEY. Each ciphertext names the key that made
// it (`tg1.<keyId>.<iv>.<tag>.<data>`), so keys can be rotated: new writes use the current key and
// older ciphertexts still open with a previous key until they are re-encrypted.
import fs from 'node:fs';
import path from 'node:path';
import { createCipheriv, createDecipheriv, createHash, hash, randomBytes, timingSafeEqual } from 'node:crypto';

const ivBytes = 12;
const keyFileName = 'secret.key';

export class SecretBox {
  readonly #current: { id: string; key: Buffer };
  readonly #byId = new Map<string, Buffer>();

  constructor(currentHex: string, previousHex: string[] = []) {
    this.#current = { id: keyIdOf(currentHex), key: Buffer.from(currentHex, 'hex') };
    for (const hex of [currentHex, ...previousHex]) this.#byId.set(keyIdOf(hex), Buffer.from(hex, 'hex'));
  }

  get keyId(): string {
    return this.#current.id;
  }

  encrypt(plaintext: string): string {
    const iv = randomBytes(ivBytes);
    const cipher = createCipheriv('aes-256-gcm', this.#current.key, iv);
    const data = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return ['tg1', this.#current.id, iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), data.toString('base64url')].join('.');
  }

  decrypt(sealed: string): string {
    const [version, id, iv, tag, data] = sealed.split('.');
    if (version !== 'tg1' || !id || !iv || !tag || data === undefined) throw new Error('not a Tollgate ciphertext');
    const key = this.#byId.get(id);
    if (!key) throw new Error(`secret was encrypted with key ${id}, which is not configured (TOLLGATE_PREVIOUS_SECRET_KEYS)`);
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(data, 'base64url')), decipher.final()]).toString('utf8');
  }

  /** True when the ciphertext was made with an older key and should be re-encrypted. */
  isStale(sealed: string): boolean {
    return sealed.split('.')[1] !== this.#current.id;
  }
}

function keyIdOf(hex: string): string {
  return createHash('sha256').update(Buffer.from(hex, 'hex')).digest('hex').slice(0, 8);
}

/** The configured key, or the one in the data folder, generated there (mode 0600) on first use. */
export function loadOrCreateSecretKey(configured: string | null, dataDir: string): { hex: string; generatedAt: string | null } {
  if (configured) return { hex: configured.toLowerCase(), generatedAt: null };
  const file = path.join(dataDir, keyFileName);
  if (fs.existsSync(file)) {
    const hex = fs.readFileSync(file, 'utf8').trim();
    if (!/^[0-9a-f]{64}$/i.test(hex)) throw new Error(`${file} does not hold a 64-hex-character key`);
    return { hex, generatedAt: null };
  }
  fs.mkdirSync(dataDir, { recursive: true });
  const hex = randomBytes(32).toString('hex');
  fs.writeFileSync(file, `${hex}\n`, { mode: 0o600, flag: 'wx' });
  return { hex, generatedAt: file };
}

export function sha256Hex(value: string): string {
  // The one-shot form: no Hash object per call (every gateway call hashes its API key).
  return hash('sha256', value, 'hex');
}

/** Constant-time comparison of two hex digests of equal length. */
export function digestsEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}

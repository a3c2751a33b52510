// The operator's master key: from TOLLGATE_MASTER_KEY, or generated on first start, stored only as
// a SHA-256 digest in settings and printed once. Admin requests present it as a bearer token.
import type { Kysely } from 'kysely';
import type { FastifyRequest } from 'fastify';
import type { Database } from '../store/schema.ts';
import { getSetting, putSetting, putSettingIfAbsent } from '../store/settings.ts';
import { AppError } from '../lib/errors.ts';
import { newSecret } from '../lib/ids.ts';
import { digestsEqual, sha256Hex } from '../lib/secrets.ts';

const masterKeySetting = 'master_key_sha256';

export interface MasterKey {
  digest: string;
  /** Set only when this start generated the key: the one time it can be shown. */
  generated: string | null;
}

export async function resolveMasterKey(db: Kysely<Database>, configured: string | null): Promise<MasterKey> {
  if (configured) return { digest: sha256Hex(configured), generated: null };
  const stored = await getSetting<string>(db, masterKeySetting);
  if (stored) return { digest: stored, generated: null };
  const key = `tg_admin_${newSecret(24)}`;
  // Two processes starting at once: the first to store wins; the other uses the stored one.
  if (await putSettingIfAbsent(db, masterKeySetting, sha256Hex(key))) return { digest: sha256Hex(key), generated: key };
  return { digest: (await getSetting<string>(db, masterKeySetting))!, generated: null };
}

export async function rotateMasterKey(db: Kysely<Database>): Promise<string> {
  const key = `tg_admin_${newSecret(24)}`;
  await putSetting(db, masterKeySetting, sha256Hex(key));
  return key;
}

export function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1] : null;
}

export function requireMasterKey(digest: string) {
  return async (request: FastifyRequest) => {
    const token = bearerToken(request);
    if (!token || !digestsEqual(sha256Hex(token), digest)) {
      throw new AppError('authentication_error', 'invalid_master_key', 'Send the operator master key as `Authorization: Bearer <TOLLGATE_MASTER_KEY>`.');
    }
  };
}

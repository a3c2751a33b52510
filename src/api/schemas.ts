// Schema pieces shared by the admin routes.
import { Type, type Static, type TSchema } from '@sinclair/typebox';

/**
 * `T | null` as one JSON Schema type list. A union would not do: with type coercion on, Ajv's
 * null branch turns 0, "" and false into null, so `rpm: 0` would quietly mean "no limit".
 */
export function Nullable<T extends TSchema & { type: string }>(schema: T) {
  return Type.Unsafe<Static<T> | null>({ ...schema, type: [schema.type, 'null'] });
}

// What the gateway reads on every request, all from memory: the catalog, API keys and operator
// settings, each cached and reloaded when the admin API changes them (or every 30 s, so changes
// made by another process are seen too).
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import { getSetting } from '../store/settings.ts';

export const settingsReloadMs = 30_000;
export const defaultHoldOutputCapTokens = 32_768;
export const defaultOutputAllowanceTokens = 4_096;

export interface GatewaySettings {
  creditPaymentLink: string | null;
  /** The most output tokens a hold reserves for, whatever max_tokens asks (an operator cap). */
  holdOutputCapTokens: number;
}

export class SettingsCache {
  readonly #db: Kysely<Database>;
  #value: GatewaySettings | null = null;
  #loadedAt = 0;
  #loading: Promise<GatewaySettings> | null = null;

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async get(): Promise<GatewaySettings> {
    if (this.#value && Date.now() - this.#loadedAt < settingsReloadMs) return this.#value;
    if (!this.#loading) {
      this.#loading = this.#load().finally(() => {
        this.#loading = null;
      });
    }
    if (this.#value) return this.#value; // serve the old value while reloading in the background
    return this.#loading;
  }

  invalidate(): void {
    this.#loadedAt = 0;
    this.#value = null;
  }

  async #load(): Promise<GatewaySettings> {
    const link = (await getSetting<string | null>(this.#db, 'credit_payment_link')) ?? null;
    const cap = (await getSetting<number>(this.#db, 'hold_output_cap_tokens')) ?? defaultHoldOutputCapTokens;
    this.#value = {
      creditPaymentLink: link,
      holdOutputCapTokens: cap,
    };
    this.#loadedAt = Date.now();
    return this.#value;
  }
}

// The catalog as the request path sees it: loaded once, then served from memory with no database
// query. A change made through this process's admin API calls invalidate(), and the next get()
// waits for a fresh load (concurrent callers share one). Changes made by other processes against
// the same database are picked up by a background reload every `catalogRefreshMs` (30 s): that is
// the longest another instance may keep serving an old configuration.
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../store/schema.ts';
import type { SecretBox } from '../lib/secrets.ts';
import type { Catalog } from './types.ts';
import { loadCatalog } from './catalog.ts';

export const catalogRefreshMs = 30_000;

export interface CatalogCacheOptions {
  /** Background reload period; 0 turns it off. */
  refreshMs?: number;
  log?: Logger;
}

export class CatalogCache {
  readonly #db: Kysely<Database>;
  readonly #secrets: SecretBox;
  readonly #refreshMs: number;
  readonly #log: Logger | undefined;
  #catalog: Catalog | null = null;
  /** Bumped by invalidate(); the cached catalog is fresh while it was loaded at the current value. */
  #generation = 0;
  #catalogGeneration = -1;
  #loading: { generation: number; promise: Promise<Catalog> } | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(db: Kysely<Database>, secrets: SecretBox, opts: CatalogCacheOptions = {}) {
    this.#db = db;
    this.#secrets = secrets;
    this.#refreshMs = opts.refreshMs ?? catalogRefreshMs;
    this.#log = opts.log;
  }

  /** The current catalog: from memory, or (first call, or after invalidate) from one shared load. */
  get(): Promise<Catalog> {
    if (this.#catalog !== null && this.#catalogGeneration === this.#generation) return Promise.resolve(this.#catalog);
    return this.#load();
  }

  /** Something changed: the next get() reloads. Loads already running cannot satisfy it. */
  invalidate(): void {
    this.#generation++;
  }

  /** Stops the background reload. */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  #load(): Promise<Catalog> {
    const generation = this.#generation;
    if (this.#loading?.generation === generation) return this.#loading.promise;
    const promise = loadCatalog(this.#db, this.#secrets).then(
      (catalog) => {
        // A slower load that began before a newer one finished must not put older data back.
        if (generation >= this.#catalogGeneration) {
          this.#catalog = catalog;
          this.#catalogGeneration = generation;
        }
        this.#clearLoading(promise);
        this.#startTimer();
        return catalog;
      },
      (err: unknown) => {
        this.#clearLoading(promise);
        throw err;
      },
    );
    this.#loading = { generation, promise };
    return promise;
  }

  #clearLoading(promise: Promise<Catalog>): void {
    if (this.#loading?.promise === promise) this.#loading = null;
  }

  #startTimer(): void {
    if (this.#timer || this.#refreshMs <= 0) return;
    this.#timer = setInterval(() => this.#refresh(), this.#refreshMs);
    this.#timer.unref();
  }

  /** Background reload at the current generation: callers keep the old catalog until it lands. */
  #refresh(): void {
    if (this.#loading) return;
    this.#load().catch((err: unknown) => this.#log?.warn({ err }, 'catalog reload failed; serving the previous catalog'));
  }
}

// Workspaces as the request path reads them (policy, price book, logging, key defaults), from
// memory. A workspace seen in the last `ttlMs` (30 s) costs no query; after that, or after
// invalidate(), one lookup shared by concurrent callers. Changes made through this process's admin
// API invalidate at once (`workspace.changed`); other processes' changes show within the TTL.
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import { notFound } from '../lib/errors.ts';
import type { WorkspaceEntry } from './policy.ts';
import { workspaceEntryOf } from './workspaces.ts';

export const workspaceCacheTtlMs = 30_000;
export const maxCachedWorkspaces = 100_000;

export interface WorkspaceCacheOptions {
  ttlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

export class WorkspaceCache {
  readonly #db: Kysely<Database>;
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, { entry: WorkspaceEntry; freshUntilMs: number }>();
  readonly #inflight = new Map<string, Promise<WorkspaceEntry>>();
  /** Bumped by invalidate(), so a lookup that began before it does not refill the cache. */
  #generation = 0;

  constructor(db: Kysely<Database>, opts: WorkspaceCacheOptions = {}) {
    this.#db = db;
    this.#ttlMs = opts.ttlMs ?? workspaceCacheTtlMs;
    this.#maxEntries = opts.maxEntries ?? maxCachedWorkspaces;
    this.#now = opts.now ?? Date.now;
  }

  /** The workspace's rules; throws `workspace_not_found` for an unknown id. */
  get(workspaceId: string): Promise<WorkspaceEntry> {
    const hit = this.#entries.get(workspaceId);
    if (hit && hit.freshUntilMs > this.#now()) return Promise.resolve(hit.entry);
    return this.#lookup(workspaceId);
  }

  /** Forgets one workspace, or all of them. */
  invalidate(workspaceId?: string): void {
    this.#generation++;
    if (workspaceId === undefined) {
      this.#entries.clear();
      this.#inflight.clear();
    } else {
      this.#entries.delete(workspaceId);
      this.#inflight.delete(workspaceId);
    }
  }

  #lookup(workspaceId: string): Promise<WorkspaceEntry> {
    const pending = this.#inflight.get(workspaceId);
    if (pending) return pending;
    const generation = this.#generation;
    const promise = this.#load(workspaceId).then(
      (entry) => {
        if (generation === this.#generation) this.#remember(workspaceId, entry);
        if (this.#inflight.get(workspaceId) === promise) this.#inflight.delete(workspaceId);
        return entry;
      },
      (err: unknown) => {
        if (this.#inflight.get(workspaceId) === promise) this.#inflight.delete(workspaceId);
        throw err;
      },
    );
    this.#inflight.set(workspaceId, promise);
    return promise;
  }

  async #load(workspaceId: string): Promise<WorkspaceEntry> {
    const row = await this.#db
      .selectFrom('workspaces')
      .select(['id', 'status', 'price_book_id', 'policy', 'key_defaults'])
      .where('id', '=', workspaceId)
      .executeTakeFirst();
    if (!row) throw notFound('workspace', workspaceId);
    return workspaceEntryOf(row);
  }

  #remember(workspaceId: string, entry: WorkspaceEntry): void {
    // Map keeps insertion order: re-inserting makes this the newest, and the oldest go first.
    this.#entries.delete(workspaceId);
    while (this.#entries.size >= this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value as string);
    this.#entries.set(workspaceId, { entry, freshUntilMs: this.#now() + this.#ttlMs });
  }
}

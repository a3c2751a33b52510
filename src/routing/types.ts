// The in-memory view of the gateway's configuration that the request path reads: providers with
// decrypted credentials, models with routes and versioned rates, and customer API keys. Built from
// the store, cached, and rebuilt when the admin API changes anything.
import type { ProviderType } from '../providers/types.ts';
import type { CostCard, RateCard } from '../pricing/price.ts';
import type { KeyLimits } from '../workspaces/policy.ts';

export type Workload = 'text' | 'embedding' | 'image' | 'audio' | 'video' | 'coding';

export interface CredentialEntry {
  id: string;
  label: string;
  apiKey: string; // decrypted; never logged, never returned by an API
}

export interface ProviderEntry {
  id: string;
  name: string;
  type: ProviderType;
  baseUrl: string | null;
  apiVersion: string | null;
  regions: string[];
  retention: 'zero' | 'standard';
  status: 'active' | 'inactive';
  resale: 'approved' | 'pending';
  timeoutMs: number;
  credentials: CredentialEntry[]; // active ones only
}

export interface RouteEntry {
  id: string;
  provider: ProviderEntry;
  upstreamModel: string;
  priority: number; // 1 is tried before 2
  weight: number;
  region: string | null;
  cost: CostCard | null;
}

export interface RateEntry {
  id: string;
  priceBookId: string | null;
  effectiveAt: number;
  rates: RateCard;
}

export interface ModelEntry {
  id: string;
  name: string;
  workload: Workload;
  description: string | null;
  maxOutputTokens: number | null;
  status: 'active' | 'inactive';
  /** An alias: the models it stands for, tried in this order. Aliases have no routes of their own. */
  aliasOf: string[] | null;
  /** 'weighted': weighted random inside a priority group; 'cost': cheapest provider cost first. */
  routingStrategy: 'weighted' | 'cost';
  routes: RouteEntry[]; // sorted by priority
  rates: RateEntry[]; // every version, sorted by effectiveAt ascending
  createdAt: number;
}

export interface Catalog {
  models: Map<string, ModelEntry>; // by public name
  providers: Map<string, ProviderEntry>; // by id
}

export interface ApiKeyEntry {
  id: string;
  workspaceId: string;
  name: string;
  scopes: string[];
  models: string[] | null; // null: every model
  status: 'active' | 'revoked';
  expiresAt: number | null;
  metadata: Record<string, string>;
  /** The key's own limits (null fields fall back to the workspace's key defaults). */
  limits: KeyLimits;
}

export const keyScopes = ['chat.completions', 'embeddings', 'images', 'messages', 'models.read', 'usage.read'] as const;
export type KeyScope = (typeof keyScopes)[number];
export const defaultKeyScopes: KeyScope[] = ['chat.completions', 'embeddings', 'images', 'messages', 'models.read', 'usage.read'];

/** The rate in effect at `atMs` (latest effectiveAt ≤ atMs) for the default price book. */
export function rateAt(model: ModelEntry, atMs: number, priceBookId: string | null = null): RateEntry | null {
  let found: RateEntry | null = null;
  for (const r of model.rates) {
    if (r.priceBookId !== priceBookId) continue;
    if (r.effectiveAt <= atMs && (!found || r.effectiveAt >= found.effectiveAt)) found = r;
  }
  return found;
}

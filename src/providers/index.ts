// The adapter registry: one adapter per provider type, each living in its own folder.
import type { ProviderAdapter, ProviderType } from './types.ts';
import { anthropicAdapter } from './anthropic/index.ts';
import { azureOpenAIAdapter } from './azure-openai/index.ts';
import { geminiAdapter } from './gemini/index.ts';
import { createOpenAIAdapter, openaiAdapter } from './openai/index.ts';
import { sandboxAdapter } from './sandbox/index.ts';

const adapters: Record<ProviderType, ProviderAdapter> = {
  openai: openaiAdapter,
  'openai-compatible': createOpenAIAdapter('openai-compatible'),
  anthropic: anthropicAdapter,
  gemini: geminiAdapter,
  'azure-openai': azureOpenAIAdapter,
  sandbox: sandboxAdapter,
};

export const providerTypes = Object.keys(adapters) as ProviderType[];

export function isProviderType(value: string): value is ProviderType {
  return Object.hasOwn(adapters, value);
}

export function getAdapter(type: ProviderType): ProviderAdapter {
  const adapter = adapters[type];
  if (!adapter) throw new Error(`No upstream adapter for provider type '${type}'.`);
  return adapter;
}

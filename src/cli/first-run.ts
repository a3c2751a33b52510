// The first start on an empty database: a sandbox provider (no network needed), demo models with
// prices, a demo workspace with starter credits and a demo API key, so a newcomer can make a paid
// call at once. Runs once per database (guarded by a setting, safe with several processes).
import type { AppContext } from '../app.ts';
import { putSettingIfAbsent } from '../store/settings.ts';
import { createProvider } from '../routing/providers.ts';
import { createModel } from '../routing/models.ts';
import { createApiKey } from '../auth/keys.ts';
import { parseCredits } from '../ledger/money.ts';

export const demoModelName = 'sandbox-chat';
export const demoStarterCredits = '100';

export interface DemoSetup {
  workspaceId: string;
  apiKey: string;
  model: string;
}

export async function setUpDemoIfEmpty(ctx: AppContext): Promise<DemoSetup | null> {
  const db = ctx.store.db;
  const anyWorkspace = await db.selectFrom('workspaces').select('id').limit(1).executeTakeFirst();
  const anyProvider = await db.selectFrom('providers').select('id').limit(1).executeTakeFirst();
  if (anyWorkspace || anyProvider) return null;
  if (!(await putSettingIfAbsent(db, 'demo_set_up_at', new Date().toISOString()))) return null;

  const provider = await createProvider(db, ctx.secrets, { name: 'sandbox', type: 'sandbox', notes: 'Built-in offline provider for trying Tollgate.' });
  await createModel(db, {
    name: demoModelName,
    workload: 'text',
    description: 'Deterministic offline chat model (sandbox).',
    maxOutputTokens: 1024,
    routes: [{ providerId: provider.id, upstreamModel: 'sandbox-chat', cost: { currency: 'USD', inputPer1M: '0.10', outputPer1M: '0.40' } }],
    rates: { inputPer1M: '20', outputPer1M: '80' },
  });
  await createModel(db, {
    name: 'sandbox-embed',
    workload: 'embedding',
    description: 'Deterministic offline embeddings (sandbox).',
    routes: [{ providerId: provider.id, upstreamModel: 'sandbox-embed' }],
    rates: { inputPer1M: '2' },
  });
  await createModel(db, {
    name: 'sandbox-image',
    workload: 'image',
    description: 'Deterministic offline images (sandbox).',
    routes: [{ providerId: provider.id, upstreamModel: 'sandbox-image' }],
    rates: { perImage: '0.04' },
  });
  const workspace = await ctx.onboarding.createWorkspace({ name: 'Demo workspace' });
  await ctx.ledger.grant({
    workspaceId: workspace.id,
    amountMicros: parseCredits(demoStarterCredits),
    source: 'starter',
    note: 'Demo starter credits',
    idempotencyKey: `demo-starter:${workspace.id}`,
  });
  const { key } = await createApiKey(db, workspace.id, { name: 'Demo key' });
  ctx.events.emit('catalog.changed');
  return { workspaceId: workspace.id, apiKey: key, model: demoModelName };
}

// Operator settings over the admin API: starter credits for new workspaces and the credit payment
// link shown in 402 errors and low-balance warnings.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import { getSetting, putSetting } from '../../store/settings.ts';
import { formatCredits, parseCredits } from '../../ledger/money.ts';
import { invalid } from '../../lib/errors.ts';
import { starterCreditsSetting } from '../../workspaces/onboarding.ts';
import { Nullable } from '../schemas.ts';

export const creditPaymentLinkSetting = 'credit_payment_link';

const PatchSettings = Type.Object(
  {
    starterCredits: Type.Optional(Type.Union([Type.String({ maxLength: 40 }), Type.Number()])),
    creditPaymentLink: Type.Optional(Nullable(Type.String({ maxLength: 2000 }))),
  },
  { additionalProperties: false },
);

export async function adminSettingsRoutes(app: FastifyInstance, ctx: AppContext) {
  const db = ctx.store.db;
  const view = async () => {
    const starter = (await getSetting<string>(db, starterCreditsSetting)) ?? '0';
    return {
      object: 'settings',
      starterCredits: formatCredits(parseCredits(starter)),
      creditPaymentLink: (await getSetting<string | null>(db, creditPaymentLinkSetting)) ?? null,
    };
  };

  app.get('/api/admin/settings', async () => view());

  app.patch<{ Body: Static<typeof PatchSettings> }>('/api/admin/settings', { schema: { body: PatchSettings } }, async (req) => {
    const body = req.body;
    let starter: bigint | undefined;
    if (body.starterCredits !== undefined) {
      starter = parseCredits(body.starterCredits, 'starterCredits');
      if (starter < 0n) throw invalid('invalid_amount', "'starterCredits' must be zero or more.", 'starterCredits');
    }
    if (body.creditPaymentLink != null && !/^https?:\/\/\S+$/.test(body.creditPaymentLink)) {
      throw invalid('invalid_url', "'creditPaymentLink' must be an http(s) URL.", 'creditPaymentLink');
    }
    if (starter !== undefined) await putSetting(db, starterCreditsSetting, formatCredits(starter));
    if (body.creditPaymentLink !== undefined) await putSetting(db, creditPaymentLinkSetting, body.creditPaymentLink);
    ctx.events.emit('settings.changed');
    return view();
  });
}

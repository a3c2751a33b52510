// Admin API for upstream providers and their credentials. Credentials go in and never come out:
// every view shows a hint (`sk-...abcd`) at most.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import {
  addCredential,
  createProvider,
  deleteProvider,
  effectiveBaseUrl,
  getProvider,
  listCredentials,
  listProviders,
  removeCredential,
  updateProvider,
  type CredentialInfo,
  type Provider,
} from '../../routing/providers.ts';
import { iso, listView } from '../views.ts';
import { pageQuery, readPage } from '../pagination.ts';

const NullableText = (maxLength: number) => Type.Union([Type.Null(), Type.String({ maxLength })]);
const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const CredentialParams = Type.Object({ id: Type.String({ maxLength: 64 }), credentialId: Type.String({ maxLength: 64 }) });

const providerFields = {
  name: Type.String({ maxLength: 200 }),
  type: Type.String({ maxLength: 40 }),
  baseUrl: Type.Optional(NullableText(2000)),
  apiVersion: Type.Optional(NullableText(40)),
  regions: Type.Optional(Type.Array(Type.String({ maxLength: 40 }), { maxItems: 32 })),
  retention: Type.Optional(Type.String({ maxLength: 20 })),
  status: Type.Optional(Type.String({ maxLength: 20 })),
  resale: Type.Optional(Type.String({ maxLength: 20 })),
  sla: Type.Optional(NullableText(200)),
  supportOwner: Type.Optional(NullableText(200)),
  notes: Type.Optional(NullableText(2000)),
  timeoutMs: Type.Optional(Type.Integer()),
};
const CreateBody = Type.Object({ ...providerFields, apiKey: Type.Optional(Type.String({ maxLength: 4096 })) }, { additionalProperties: false });
const PatchBody = Type.Partial(Type.Object(providerFields), { additionalProperties: false });
const CredentialBody = Type.Object({ label: Type.Optional(Type.String({ maxLength: 100 })), apiKey: Type.String({ maxLength: 4096 }) }, { additionalProperties: false });
const ListQuery = Type.Object({ ...pageQuery, status: Type.Optional(Type.String({ maxLength: 20 })), type: Type.Optional(Type.String({ maxLength: 40 })) });

export function credentialView(c: CredentialInfo) {
  return { id: c.id, object: 'provider_credential', providerId: c.providerId, label: c.label, hint: c.hint, status: c.status, createdAt: iso(c.createdAt) };
}

export function providerView(p: Provider) {
  return {
    id: p.id,
    object: 'provider',
    name: p.name,
    type: p.type,
    baseUrl: effectiveBaseUrl(p.type, p.baseUrl),
    apiVersion: p.apiVersion,
    regions: p.regions,
    retention: p.retention,
    status: p.status,
    resale: p.resale,
    sla: p.sla,
    supportOwner: p.supportOwner,
    notes: p.notes,
    timeoutMs: p.timeoutMs,
    credentials: p.credentials.map(credentialView),
    createdAt: iso(p.createdAt),
    updatedAt: iso(p.updatedAt),
  };
}

export async function adminProviderRoutes(app: FastifyInstance, ctx: AppContext) {
  const db = ctx.store.db;
  const changed = () => ctx.events.emit('catalog.changed');

  app.post<{ Body: Static<typeof CreateBody> }>('/api/admin/providers', { schema: { body: CreateBody } }, async (req, reply) => {
    const provider = await createProvider(db, ctx.secrets, req.body);
    changed();
    return reply.status(201).send(providerView(provider));
  });

  app.get<{ Querystring: Static<typeof ListQuery> }>('/api/admin/providers', { schema: { querystring: ListQuery } }, async (req) => {
    const page = await listProviders(db, { ...readPage(req.query), status: req.query.status, type: req.query.type });
    return listView(page.data.map(providerView), page.nextCursor);
  });

  app.get<{ Params: Static<typeof IdParams> }>('/api/admin/providers/:id', { schema: { params: IdParams } }, async (req) =>
    providerView(await getProvider(db, req.params.id)),
  );

  app.patch<{ Params: Static<typeof IdParams>; Body: Static<typeof PatchBody> }>(
    '/api/admin/providers/:id',
    { schema: { params: IdParams, body: PatchBody } },
    async (req) => {
      const provider = await updateProvider(db, req.params.id, req.body);
      changed();
      return providerView(provider);
    },
  );

  app.delete<{ Params: Static<typeof IdParams> }>('/api/admin/providers/:id', { schema: { params: IdParams } }, async (req) => {
    await deleteProvider(db, req.params.id);
    changed();
    return { id: req.params.id, object: 'provider', deleted: true };
  });

  app.post<{ Params: Static<typeof IdParams>; Body: Static<typeof CredentialBody> }>(
    '/api/admin/providers/:id/credentials',
    { schema: { params: IdParams, body: CredentialBody } },
    async (req, reply) => {
      const credential = await addCredential(db, ctx.secrets, req.params.id, req.body);
      changed();
      return reply.status(201).send(credentialView(credential));
    },
  );

  app.get<{ Params: Static<typeof IdParams> }>('/api/admin/providers/:id/credentials', { schema: { params: IdParams } }, async (req) =>
    // At most maxCredentialsPerProvider, so one page holds them all.
    listView((await listCredentials(db, req.params.id)).map(credentialView), null),
  );

  app.delete<{ Params: Static<typeof CredentialParams> }>(
    '/api/admin/providers/:id/credentials/:credentialId',
    { schema: { params: CredentialParams } },
    async (req) => {
      await removeCredential(db, req.params.id, req.params.credentialId);
      changed();
      return { id: req.params.credentialId, object: 'provider_credential', deleted: true };
    },
  );
}

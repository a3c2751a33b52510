// Admin API for price books (customer groups with their own credit rates): create, list, read,
// rename and delete. A book's rates are added per model at POST /api/admin/models/{id}/rates with
// `priceBookId`; workspaces are assigned a book with PATCH /api/admin/workspaces/{id}.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import { createPriceBook, deletePriceBook, getPriceBook, listPriceBooks, updatePriceBook, type PriceBook } from '../../pricing/price-books.ts';
import { iso, listView } from '../views.ts';
import { pageQuery, readPage } from '../pagination.ts';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const fields = {
  name: Type.String({ maxLength: 200 }),
  description: Type.Optional(Type.Union([Type.Null(), Type.String({ maxLength: 1000 })])),
};
const CreateBody = Type.Object(fields, { additionalProperties: false });
const PatchBody = Type.Partial(Type.Object(fields), { additionalProperties: false });
const ListQuery = Type.Object(pageQuery);

export function priceBookView(b: PriceBook) {
  return {
    id: b.id,
    object: 'price_book',
    name: b.name,
    description: b.description,
    workspaceCount: b.workspaceCount,
    modelCount: b.modelCount,
    createdAt: iso(b.createdAt),
  };
}

export async function adminPriceBookRoutes(app: FastifyInstance, ctx: AppContext) {
  const db = ctx.store.db;

  app.post<{ Body: Static<typeof CreateBody> }>('/api/admin/price-books', { schema: { body: CreateBody } }, async (req, reply) =>
    reply.status(201).send(priceBookView(await createPriceBook(db, req.body))),
  );

  app.get<{ Querystring: Static<typeof ListQuery> }>('/api/admin/price-books', { schema: { querystring: ListQuery } }, async (req) => {
    const page = await listPriceBooks(db, readPage(req.query));
    return listView(page.data.map(priceBookView), page.nextCursor);
  });

  app.get<{ Params: Static<typeof IdParams> }>('/api/admin/price-books/:id', { schema: { params: IdParams } }, async (req) =>
    priceBookView(await getPriceBook(db, req.params.id)),
  );

  app.patch<{ Params: Static<typeof IdParams>; Body: Static<typeof PatchBody> }>(
    '/api/admin/price-books/:id',
    { schema: { params: IdParams, body: PatchBody } },
    async (req) => priceBookView(await updatePriceBook(db, req.params.id, req.body)),
  );

  app.delete<{ Params: Static<typeof IdParams> }>('/api/admin/price-books/:id', { schema: { params: IdParams } }, async (req) => {
    await deletePriceBook(db, req.params.id);
    // Its rates are gone from the catalog with it.
    ctx.events.emit('catalog.changed');
    return { id: req.params.id, object: 'price_book', deleted: true };
  });
}

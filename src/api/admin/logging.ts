// Admin API for prompt logging: which workspaces opted in (and what they hold), and the stored
// prompts and completions of one workspace. Opting in and out is PATCH /api/admin/workspaces/{id}.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppContext } from '../../app.ts';
import { listLoggingWorkspaces, listRequestLogs, type RequestLog } from '../../workspaces/request-logs.ts';
import { iso, listView } from '../views.ts';
import { pageQuery, readPage } from '../pagination.ts';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
/** Logged bodies can be up to a megabyte each, so pages of them stay short. */
export const maxRequestLogPage = 20;
const defaultRequestLogPage = 10;
const LogsQuery = Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: maxRequestLogPage })), cursor: pageQuery.cursor });
const ListQuery = Type.Object(pageQuery);

function requestLogView(l: RequestLog) {
  return {
    id: l.id,
    object: 'request_log',
    workspaceId: l.workspaceId,
    requestBody: l.requestBody,
    responseBody: l.responseBody,
    createdAt: iso(l.createdAt),
    expiresAt: iso(l.expiresAt),
  };
}

export async function adminLoggingRoutes(app: FastifyInstance, ctx: AppContext) {
  const db = ctx.store.db;

  app.get<{ Querystring: Static<typeof ListQuery> }>('/api/admin/logging', { schema: { querystring: ListQuery } }, async (req) => {
    const page = await listLoggingWorkspaces(db, readPage(req.query));
    const data = page.data.map((w) => ({
      id: w.id,
      object: 'logging_workspace',
      name: w.name,
      retentionDays: w.retentionDays,
      storedLogs: w.storedLogs,
      oldestLogAt: iso(w.oldestLogAt),
    }));
    return listView(data, page.nextCursor);
  });

  app.get<{ Params: Static<typeof IdParams>; Querystring: Static<typeof LogsQuery> }>(
    '/api/admin/workspaces/:id/request-logs',
    { schema: { params: IdParams, querystring: LogsQuery } },
    async (req) => {
      const page = await listRequestLogs(db, req.params.id, { limit: req.query.limit ?? defaultRequestLogPage, cursor: req.query.cursor || undefined });
      return listView(page.data.map(requestLogView), page.nextCursor);
    },
  );
}

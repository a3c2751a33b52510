// One error shape for the management API: { "error": { "type", "code", "message", "param" } }.
// Fastify's own errors (bad JSON, body too large, schema validation) are mapped into it too.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../lib/errors.ts';

export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const e = err as FastifyError & { validation?: Array<{ instancePath?: string; params?: { missingProperty?: string; additionalProperty?: string }; message?: string }> };
  if (e?.validation && e.validation.length > 0) {
    const v = e.validation[0];
    // A nested field is named by its whole path: 'logging.enabled', not 'enabled'.
    const path = v.instancePath?.replace(/^\//, '').replace(/\//g, '.') ?? '';
    const leaf = v.params?.missingProperty ?? v.params?.additionalProperty;
    const field = leaf ? (path ? `${path}.${leaf}` : leaf) : path;
    const where = e.validationContext ?? 'body';
    const message = v.params?.additionalProperty
      ? `Unknown parameter '${field}' in ${where}.`
      : `Invalid ${where}${field ? ` parameter '${field}'` : ''}: ${v.message ?? 'invalid value'}.`;
    return new AppError('invalid_request_error', 'invalid_parameter', message, { param: field || undefined });
  }
  switch (e?.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('invalid_request_error', 'invalid_json', 'The request body is not valid JSON.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('invalid_request_error', 'body_too_large', 'The request body is too large.', { status: 413 });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('invalid_request_error', 'unsupported_media_type', 'Send the body as application/json.', { status: 415 });
    case 'FST_ERR_NOT_FOUND':
      return new AppError('not_found_error', 'route_not_found', 'No such route.');
  }
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    // A Fastify client error (bad JSON, malformed header...): answer with its message, never a 500.
    const message = typeof e.message === 'string' && e.message ? e.message : 'Bad request.';
    return new AppError('invalid_request_error', (e.code ?? 'bad_request').toLowerCase(), message, { status: e.statusCode });
  }
  return new AppError('api_error', 'internal_error', 'An internal error occurred; it has been logged.');
}

export function sendAppError(request: FastifyRequest, reply: FastifyReply, err: unknown) {
  const appErr = toAppError(err);
  if (appErr.status >= 500) request.log.error({ err }, 'request failed');
  for (const [k, v] of Object.entries(appErr.headers)) reply.header(k, v);
  return reply.status(appErr.status).send(appErr.toJSON());
}

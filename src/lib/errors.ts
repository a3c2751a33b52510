// Typed errors that use cases return or throw; the HTTP layers map them to their own formats.

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'conflict_error'
  | 'insufficient_credits'
  | 'rate_limit_error'
  | 'upstream_error'
  | 'api_error';

const statusByType: Record<ErrorType, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  insufficient_credits: 402,
  permission_error: 403,
  not_found_error: 404,
  conflict_error: 409,
  rate_limit_error: 429,
  api_error: 500,
  upstream_error: 502,
};

export class AppError extends Error {
  readonly type: ErrorType;
  readonly code: string;
  readonly param: string | null;
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(
    type: ErrorType,
    code: string,
    message: string,
    opts: { param?: string; status?: number; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.type = type;
    this.code = code;
    this.param = opts.param ?? null;
    this.status = opts.status ?? statusByType[type];
    this.headers = opts.headers ?? {};
  }

  toJSON() {
    return { error: { type: this.type, code: this.code, message: this.message, param: this.param } };
  }
}

export const invalid = (code: string, message: string, param?: string) =>
  new AppError('invalid_request_error', code, message, { param });
export const notFound = (what: string, id: string, param?: string) =>
  new AppError('not_found_error', `${what}_not_found`, `No ${what.replace(/_/g, ' ')} with id '${id}'.`, { param });
export const conflict = (code: string, message: string) => new AppError('conflict_error', code, message);

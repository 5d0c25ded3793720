/**
 * One error type for the whole daemon. Every error carries a stable `code`; the api maps codes to HTTP
 * statuses in one table, and the code travels to clients as the `status` field of Fly's error body.
 * Codes are part of the public contract (docs/errors.md): never rename or reuse one.
 */
export const ERROR_HTTP_STATUS = {
  invalid_argument: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  deadline_exceeded: 408,
  lease_conflict: 409,
  failed_precondition: 412,
  payload_too_large: 413,
  unsupported_media_type: 415,
  name_taken: 422,
  quota_exceeded: 422,
  insufficient_capacity: 422,
  rate_limited: 429,
  internal: 500,
  runtime_unavailable: 501,
  unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_HTTP_STATUS;

export interface HangarErrorOptions {
  cause?: unknown;
  /** Seconds a client should wait before retrying (rate limits). */
  retryAfterSec?: number;
}

const BRAND = Symbol.for('hangar.error');

export class HangarError extends Error {
  readonly code: ErrorCode;
  readonly retryAfterSec: number | undefined;

  constructor(code: ErrorCode, message: string, options: HangarErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HangarError';
    this.code = code;
    this.retryAfterSec = options.retryAfterSec;
  }

  get httpStatus(): number {
    return ERROR_HTTP_STATUS[this.code];
  }

  /** Works across duplicate module copies, unlike a bare instanceof. */
  static is(value: unknown): value is HangarError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}
Object.defineProperty(HangarError.prototype, BRAND, { value: true });

export const invalidArgument = (message: string) => new HangarError('invalid_argument', message);
export const notFound = (message: string) => new HangarError('not_found', message);
export const failedPrecondition = (message: string) => new HangarError('failed_precondition', message);

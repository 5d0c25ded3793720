import type { ErrorBody } from './types.js';

/** Codes the SDK produces itself; every other code comes from the server's `status` field. */
export const SDK_ERROR_CODES = {
  /** The server's body had no `status` string. */
  unknown: 'unknown',
  /** The request never got an HTTP answer (DNS, refused connection, reset socket). */
  networkError: 'network_error',
  /** `waitForState` ran out of time. */
  timeout: 'timeout',
} as const;

// A global symbol, not `instanceof`: two copies of this package (say, one bundled in a CLI and one
// installed by the user) have two different classes, but they share Symbol.for keys.
const BRAND = Symbol.for('@hangar/sdk:MachinesApiError');

export interface MachinesApiErrorInit {
  method: string;
  path: string;
  /** HTTP status; 0 when no response arrived. */
  status: number;
  code?: string;
  requestId?: string;
  body?: unknown;
  /** Server-supplied text (`message` or `error`), without the request prefix. */
  detail?: string;
  /** From a 429's `Retry-After`, in milliseconds. */
  retryAfterMs?: number;
  cause?: unknown;
  /** Overrides the generated message. */
  message?: string;
}

/**
 * Every failure of a Machines API call. Match on `code` (stable strings such as `not_found`,
 * `name_taken`, `network_error`, `timeout`), or on `status` for the HTTP status.
 */
export class MachinesApiError extends Error {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly code: string;
  readonly requestId: string | undefined;
  readonly body: unknown;
  readonly detail: string | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(init: MachinesApiErrorInit) {
    super(init.message ?? formatMessage(init), init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'MachinesApiError';
    this.method = init.method;
    this.path = init.path;
    this.status = init.status;
    this.code = init.code ?? SDK_ERROR_CODES.unknown;
    this.requestId = init.requestId;
    this.body = init.body;
    this.detail = init.detail;
    this.retryAfterMs = init.retryAfterMs;
    Object.defineProperty(this, BRAND, { value: true });
  }
}

function formatMessage(init: MachinesApiErrorInit): string {
  const where = `${init.method} ${init.path}`;
  const what = init.status === 0 ? 'no response' : `HTTP ${init.status}`;
  return init.detail ? `${where} failed (${what}): ${init.detail}` : `${where} failed (${what})`;
}

/** True for a MachinesApiError from any copy of this SDK; with `code`, also checks the code. */
export function isMachinesApiError(err: unknown, code?: string): err is MachinesApiError {
  if (typeof err !== 'object' || err === null || !(BRAND in err)) return false;
  return code === undefined || (err as { code?: unknown }).code === code;
}

/** Builds the error for a non-2xx response from its parsed body (or raw text). */
export function errorFromResponse(args: {
  method: string;
  path: string;
  status: number;
  body: unknown;
  requestId: string | undefined;
  retryAfterMs?: number;
}): MachinesApiError {
  const { body } = args;
  let code: string | undefined;
  let detail: string | undefined;
  if (typeof body === 'object' && body !== null) {
    const b = body as ErrorBody;
    if (typeof b.status === 'string' && b.status !== '') code = b.status;
    // fly-go prefers `message` over `error` when both exist; do the same.
    if (typeof b.message === 'string' && b.message !== '') detail = b.message;
    else if (typeof b.error === 'string' && b.error !== '') detail = b.error;
  } else if (typeof body === 'string' && body.trim() !== '') {
    // Proxies in front of the API answer with HTML or text; keep it short.
    detail = body.trim().slice(0, 200);
  }
  return new MachinesApiError({ ...args, code, detail });
}

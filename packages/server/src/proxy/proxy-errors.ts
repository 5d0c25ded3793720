/**
 * The proxy's own answers when it cannot deliver a request. Each has a Fly-style code (fly-semantics
 * §5.7; the `PH` and `PQ` codes are Hangar's), shown in the body, in the `x-hangar-proxy-error` header and
 * in the log, and explained in docs/proxy.md. These are responses, not thrown errors: they never leave the
 * proxy.
 */
export const PROXY_ERRORS = {
  /** The Host header names no app of this Hangar. */
  PH01: { status: 404, title: 'unknown host' },
  /** The app exists but has no public address (v6 or shared_v4). */
  PH02: { status: 404, title: 'app has no public address' },
  /** Over TLS, the Host differs from the TLS server name (or a custom hostname came without SNI). */
  PT01: { status: 421, title: 'the Host does not match the TLS server name' },
  /** No machine of the app has a service covering this port, or none is usable. */
  PR01: { status: 503, title: 'no machine can serve this request' },
  /** fly-force-instance-id names a machine that cannot take the request. */
  PR02: { status: 503, title: 'the requested instance is not available' },
  /** Every machine stayed at its hard limit for the whole queue wait. */
  PR04: { status: 503, title: 'all machines are at their hard concurrency limit' },
  /** Too many requests held while machines wake (per app or in total). */
  PQ01: { status: 503, title: 'too many requests are waiting for machines to wake' },
  /** The app's machine refused or reset the connection. */
  PC01: { status: 502, title: 'the app is not listening on its internal port' },
  /** The app did not answer in time. */
  PC05: { status: 504, title: 'the app did not answer in time' },
  /** The machine did not become ready within its wake budget. */
  PM03: { status: 503, title: 'the machine did not become ready in time' },
  /** Starting the machine failed. */
  PM07: { status: 503, title: 'the machine could not be started' },
  /** A replay was asked for, but the request body is over the replayable 1 MB. */
  PA01: { status: 413, title: 'the request body is too large to replay' },
  /** More than 10 chained replays. */
  PA02: { status: 508, title: 'too many chained replays' },
  /** The fly-replay header or JSON body is invalid. */
  PA03: { status: 502, title: 'invalid fly-replay' },
  /** fly-replay names an app that does not exist. */
  PA04: { status: 502, title: 'fly-replay names an unknown app' },
  /** fly-replay names an app of another organization, which is not allowed. */
  PA05: { status: 403, title: 'fly-replay to another organization is not allowed' },
  /** The request may not wake a machine (wake_exempt) and none is running. */
  PW01: { status: 503, title: 'asleep' },
} as const;

export type ProxyErrorCode = keyof typeof PROXY_ERRORS;

export interface ProxyFailure {
  code: ProxyErrorCode;
  detail: string;
  /** Seconds, for a Retry-After header. */
  retryAfterSec?: number;
}

export function proxyFailure(code: ProxyErrorCode, detail: string, retryAfterSec?: number): ProxyFailure {
  return retryAfterSec === undefined ? { code, detail } : { code, detail, retryAfterSec };
}

export const isProxyFailure = (value: unknown): value is ProxyFailure =>
  typeof value === 'object' &&
  value !== null &&
  'code' in value &&
  (value as ProxyFailure).code in PROXY_ERRORS;

/** The plain-text page a client sees. */
export function errorPage(failure: ProxyFailure, requestId: string): string {
  const { title } = PROXY_ERRORS[failure.code];
  return `${failure.code}: ${title}\n${failure.detail}\nrequest id: ${requestId}\n`;
}

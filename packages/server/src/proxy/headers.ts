import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/**
 * The headers the proxy's `http` handler adds and removes (fly-semantics §5.2), pure.
 */

/** Hop-by-hop headers: they describe one connection and never travel further. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Client routing headers: read by the proxy, not passed to the app. */
const ROUTING = new Set(['fly-force-instance-id', 'fly-prefer-instance-id', 'fly-prefer-region']);

export const VIA = 'hangar';

export interface ForwardContext {
  clientIp: string;
  /** The port the client connected to. */
  listenerPort: number;
  /** Whether the client's connection was TLS, ended by the proxy (X-Forwarded-Proto, -SSL). */
  tls?: boolean;
  region: string;
  requestId: string;
  httpVersion: string;
  /** Keep `connection: upgrade` and `upgrade` (WebSockets). */
  upgrade?: boolean;
  /** Extra headers to set (replay source, preferred-instance notes). */
  extra?: Record<string, string>;
}

function dropHopByHop(headers: IncomingHttpHeaders, keepUpgrade: boolean): OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter((token) => token !== ''),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if ((HOP_BY_HOP.has(name) || named.has(name)) && !(keepUpgrade && name === 'upgrade')) continue;
    out[name] = value;
  }
  if (keepUpgrade) out.connection = 'upgrade';
  return out;
}

export function requestHeaders(headers: IncomingHttpHeaders, ctx: ForwardContext): OutgoingHttpHeaders {
  const out = dropHopByHop(headers, ctx.upgrade === true);
  for (const name of ROUTING) delete out[name];
  const forwardedFor = headers['x-forwarded-for'];
  out['fly-client-ip'] = ctx.clientIp;
  out['x-forwarded-for'] = forwardedFor ? `${forwardedFor}, ${ctx.clientIp}` : ctx.clientIp;
  out['x-forwarded-proto'] = ctx.tls ? 'https' : 'http';
  out['x-forwarded-ssl'] = ctx.tls ? 'on' : 'off';
  // The client may set X-Forwarded-Port (Fly keeps it); Fly-Forwarded-Port is always the proxy's.
  out['x-forwarded-port'] = headers['x-forwarded-port'] ?? String(ctx.listenerPort);
  out['fly-forwarded-port'] = String(ctx.listenerPort);
  out['fly-region'] = ctx.region;
  out['fly-request-id'] = ctx.requestId;
  out.via = appendVia(headers.via, ctx.httpVersion);
  for (const [name, value] of Object.entries(ctx.extra ?? {})) out[name] = value;
  return out;
}

export function responseHeaders(
  headers: IncomingHttpHeaders,
  ctx: { requestId: string; httpVersion: string; extra?: Record<string, string> },
): OutgoingHttpHeaders {
  const out = dropHopByHop(headers, false);
  out.via = appendVia(headers.via, ctx.httpVersion);
  out['fly-request-id'] = ctx.requestId;
  if (out.server === undefined) out.server = 'Hangar';
  for (const [name, value] of Object.entries(ctx.extra ?? {})) out[name] = value;
  return out;
}

function appendVia(existing: string | string[] | undefined, httpVersion: string): string {
  const own = `${httpVersion} ${VIA}`;
  const before = Array.isArray(existing) ? existing.join(', ') : existing;
  return before ? `${before}, ${own}` : own;
}

/** `a, b` header lists, lower-cased, empties dropped. */
export function headerList(value: string | string[] | undefined): string[] {
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  return text
    .split(',')
    .map((part) => part.trim().toLowerCase())
    .filter((part) => part !== '');
}

/** The single value of a header sent once; the first when sent several times. */
export function headerValue(value: string | string[] | undefined): string | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  const trimmed = first?.trim();
  return trimmed === '' ? undefined : trimmed;
}

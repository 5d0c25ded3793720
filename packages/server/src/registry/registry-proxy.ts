import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { Principal } from '../auth/tokens.js';
import type { Platform } from '../machines/platform.js';
import { HangarError } from '../shared/errors.js';
import { parseRegistryPath, type RegistryRoute, registryToken } from './registry-paths.js';

/**
 * The public address of Hangar's registry: an authenticating reverse proxy in front of the registry,
 * which itself listens only on a unix socket that only root can open (runtime/images/registry.ts).
 * Bodies are streamed both ways, never buffered.
 *
 * Who may do what (docs/images.md): every request needs a Hangar token, sent as the password of Basic
 * credentials with any user name (or as a Bearer token). `/v2/` needs any valid token; a repository
 * `<app>/…` is pulled and pushed with the rules of the Machines API for that app (machines/
 * registry-access.ts); `_catalog` lists only the spaces the token may read. hangard's own credential
 * (made at every start, held only in memory and in a root-only file) pulls anything and pushes nothing.
 */
export interface RegistryProxyOptions {
  host: string;
  port: number;
  /** The registry's unix socket. */
  upstreamSocket: string;
  /** hangard's own pull credential. */
  internalCredential: string;
  /** Where failures that are hangard's own go (hangard's log). */
  log?: (line: string) => void;
}

type Caller = { internal: true } | { internal: false; principal: Principal };
type Access = Pick<Platform, 'tokens' | 'registry'>;

const CHALLENGE = 'Basic realm="Hangar"';
/** Hop-by-hop headers (RFC 9110 §7.6.1) and the caller's credentials: never passed on. */
const NOT_FORWARDED = new Set([
  'authorization',
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
]);
/** The registry's largest catalog page (distribution's default `maxentries`). */
const CATALOG_PAGE = 1_000;

export class RegistryProxy {
  readonly #options: RegistryProxyOptions;
  readonly #server: Server;
  readonly #internalDigest: Buffer;
  #access: Access | undefined;
  #closing: Promise<void> | undefined;

  private constructor(options: RegistryProxyOptions, server: Server) {
    this.#options = options;
    this.#server = server;
    this.#internalDigest = sha256(options.internalCredential);
  }

  /**
   * Binds the public address at once (so a taken port is known before anything else starts); tenants'
   * requests get 503 until serve() gives it the token service.
   */
  static async listen(options: RegistryProxyOptions): Promise<RegistryProxy> {
    // No overall request deadline: pushing a large layer over a slow link may take long.
    const server = createServer({ requestTimeout: 0, headersTimeout: 60_000 });
    const proxy = new RegistryProxy(options, server);
    server.on('request', (request, response) => void proxy.#handle(request, response));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          new HangarError(
            'runtime_unavailable',
            error.code === 'EADDRINUSE'
              ? `cannot serve the image registry: ${options.host}:${options.port} is already in use by ` +
                  'another process (stop that process or configure another registry port)'
              : `cannot serve the image registry on ${options.host}:${options.port}: ${error.message}`,
          ),
        ),
      );
      server.listen({ host: options.host, port: options.port, exclusive: true }, resolve);
    });
    return proxy;
  }

  /** From now on, tenants' tokens are checked with `access`. */
  serve(access: Access): void {
    this.#access = access;
  }

  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    return this.#closing;
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    try {
      const url = new URL(request.url ?? '/', 'http://registry.invalid');
      const route = parseRegistryPath(request.method ?? 'GET', url.pathname, url.searchParams);
      if (route.kind === 'unknown') {
        return sendError(response, 404, 'UNSUPPORTED', 'not a registry API path this registry serves');
      }
      const caller = await this.#authenticate(request.headers.authorization);
      if (caller === undefined) {
        return sendError(
          response,
          401,
          'UNAUTHORIZED',
          'authentication required: use any user name and a Hangar token as the password',
        );
      }
      await this.#authorize(caller, route);
      if (route.kind === 'catalog' && !caller.internal)
        return await this.#catalog(caller.principal, response);
      // The normalized path (`..` resolved), so that the registry serves exactly what was authorized.
      this.#forward(request, response, `${url.pathname}${url.search}`);
    } catch (error) {
      if (HangarError.is(error) && error.code === 'unauthorized') {
        return sendError(response, 401, 'UNAUTHORIZED', error.message);
      }
      if (HangarError.is(error) && error.code === 'forbidden')
        return sendError(response, 403, 'DENIED', error.message);
      if (HangarError.is(error) && error.code === 'not_found') {
        return sendError(response, 404, 'NAME_UNKNOWN', error.message);
      }
      if (HangarError.is(error) && error.code === 'unavailable') {
        return sendError(response, 503, 'UNAVAILABLE', error.message);
      }
      this.#options.log?.(
        `image registry: ${request.method} ${request.url} failed: ${(error as Error).message}`,
      );
      sendError(response, 500, 'UNKNOWN', "internal error; the host operator can find it in hangard's log");
    }
  }

  async #authenticate(header: string | undefined): Promise<Caller | undefined> {
    const token = registryToken(header);
    if (token === undefined) return undefined;
    const digest = sha256(token);
    if (timingSafeEqual(digest, this.#internalDigest)) return { internal: true };
    const access = this.#accessOrWait();
    return { internal: false, principal: await access.tokens.authenticate(`Bearer ${token}`) };
  }

  #accessOrWait(): Access {
    if (!this.#access) throw new HangarError('unavailable', 'hangard is starting; try again in a moment');
    return this.#access;
  }

  async #authorize(caller: Caller, route: RegistryRoute): Promise<void> {
    if (route.kind !== 'repository') return;
    if (caller.internal) {
      if (route.action !== 'pull') throw new HangarError('forbidden', "hangard's own credential only pulls");
      return;
    }
    const access = this.#accessOrWait();
    for (const { repository, app, action } of [
      route,
      ...(route.mountFrom ? [{ ...route.mountFrom, action: 'pull' as const }] : []),
    ]) {
      if (app === undefined) {
        throw new HangarError(
          'forbidden',
          `repository ${repository} is outside every app's space: Hangar's registry keeps images under <app>/<name>`,
        );
      }
      await access.registry.authorize(caller.principal, app, action);
    }
  }

  async #catalog(principal: Principal, response: ServerResponse): Promise<void> {
    const apps = await this.#accessOrWait().registry.visibleApps(principal);
    // The catalog is filtered here, so it is read whole, page by page, and answered as one page.
    const repositories: string[] = [];
    let last = '';
    for (;;) {
      const query = `n=${CATALOG_PAGE}${last ? `&last=${encodeURIComponent(last)}` : ''}`;
      const body = await this.#upstreamJson(`/v2/_catalog?${query}`);
      const page = (body as { repositories?: unknown }).repositories;
      const names = (Array.isArray(page) ? page : []).filter((name) => typeof name === 'string');
      repositories.push(...names.filter((name) => apps.has(name.split('/')[0]!)));
      if (names.length < CATALOG_PAGE) break;
      last = names[names.length - 1]!;
    }
    send(response, 200, { repositories });
  }

  #forward(request: IncomingMessage, response: ServerResponse, path: string): void {
    const upstream = httpRequest(
      {
        socketPath: this.#options.upstreamSocket,
        method: request.method,
        path,
        headers: forwardable(request.headers),
      },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, forwardable(answer.headers));
        answer.pipe(response);
      },
    );
    upstream.once('error', (error) => {
      this.#options.log?.(`image registry: ${request.method} ${request.url}: ${error.message}`);
      if (!response.headersSent)
        sendError(response, 502, 'UNAVAILABLE', 'the image registry is not answering');
      else response.destroy();
    });
    // A client that goes away mid-transfer ends the upstream request too.
    response.once('close', () => {
      if (!response.writableFinished) upstream.destroy();
    });
    request.pipe(upstream);
  }

  #upstreamJson(path: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const upstream = httpRequest({ socketPath: this.#options.upstreamSocket, path }, (answer) => {
        const chunks: Buffer[] = [];
        answer.on('data', (chunk: Buffer) => chunks.push(chunk));
        answer.once('error', reject);
        answer.once('end', () => {
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          } catch (error) {
            reject(error);
          }
        });
      });
      upstream.once('error', reject);
      upstream.end();
    });
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function forwardable(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !NOT_FORWARDED.has(name)));
}

function send(
  response: ServerResponse,
  status: number,
  body: unknown,
  extra: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'docker-distribution-api-version': 'registry/2.0',
    ...extra,
  });
  response.end(text);
}

/** The Docker registry API's error body; a 401 carries the challenge that makes clients send credentials. */
function sendError(response: ServerResponse, status: number, code: string, message: string): void {
  send(
    response,
    status,
    { errors: [{ code, message, detail: null }] },
    status === 401 ? { 'www-authenticate': CHALLENGE } : {},
  );
}

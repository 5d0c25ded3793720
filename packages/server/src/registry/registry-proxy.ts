import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { Transform } from 'node:stream';
import type { Principal } from '../auth/tokens.js';
import type { Platform } from '../machines/platform.js';
import { HangarError } from '../shared/errors.js';
import { KeyedQueue } from '../shared/keyed-queue.js';
import { formatBytes } from '../shared/limits.js';
import { parseRegistryPath, type RegistryRoute, registryToken } from './registry-paths.js';
import { spaceUsage } from './registry-usage.js';

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
  /**
   * Each app's space: its manifests and bytes stay within these (settings quotas.registryImagesPerApp,
   * quotas.registryBytesPerApp), read from the registry's storage under `storageRoot`.
   */
  quotas?: { storageRoot: string; imagesPerApp: number; bytesPerApp: number };
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
/** Manifests are a few KiB; a manifest push above this is refused before it is read further. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** A push the app's registry quotas refuse: 403 DENIED, whose message docker and skopeo show. */
class QuotaRefusal extends Error {}

export class RegistryProxy {
  readonly #options: RegistryProxyOptions;
  readonly #server: Server;
  readonly #internalDigest: Buffer;
  #access: Access | undefined;
  #closing: Promise<void> | undefined;
  /** Manifest pushes of one app, one at a time: two cannot both take its last image. */
  readonly #manifestPushes = new KeyedQueue();
  /** Per app: upload bytes passing through right now (not yet in the storage the usage reads). */
  readonly #uploading = new Map<string, number>();

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
      const path = `${url.pathname}${url.search}`;
      const quotas = this.#options.quotas;
      if (quotas && !caller.internal && route.kind === 'repository' && route.app !== undefined) {
        if (request.method === 'PUT' && /\/manifests\/[^/]+$/.test(url.pathname)) {
          return await this.#manifestPush(request, response, path, route.app, quotas);
        }
        if (
          /\/blobs\/uploads(\/[^/]*)?$/.test(url.pathname) &&
          ['POST', 'PATCH', 'PUT'].includes(request.method ?? '')
        ) {
          return await this.#upload(request, response, path, route.app, quotas);
        }
      }
      this.#forward(request, response, path);
    } catch (error) {
      if (error instanceof QuotaRefusal) return refuse(request, response, error.message);
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

  /**
   * A manifest push: a new manifest (one the app's space does not hold yet) must fit the app's image
   * count, and the space must not be over its bytes. The body is read whole (it is small) to know its
   * digest, then forwarded; the app's manifest pushes run one at a time.
   */
  async #manifestPush(
    request: IncomingMessage,
    response: ServerResponse,
    path: string,
    app: string,
    quotas: NonNullable<RegistryProxyOptions['quotas']>,
  ): Promise<void> {
    const body = await readBody(request, MAX_MANIFEST_BYTES);
    if (body === undefined)
      throw new QuotaRefusal(`a manifest is at most ${formatBytes(MAX_MANIFEST_BYTES)}`);
    await this.#manifestPushes.run(app, async () => {
      const usage = await spaceUsage(quotas.storageRoot, app);
      const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
      if (!usage.manifests.has(digest) && usage.manifests.size + 1 > quotas.imagesPerApp) {
        throw new QuotaRefusal(
          `quota exceeded: app ${app} may hold at most ${quotas.imagesPerApp} images (manifests) in Hangar's ` +
            `registry and holds ${usage.manifests.size}; delete images it no longer needs (skopeo delete), ` +
            "or the operator can raise the setting quotas.registryImagesPerApp in hangard's configuration",
        );
      }
      if (usage.bytes > quotas.bytesPerApp)
        throw new QuotaRefusal(bytesRefusal(app, usage.bytes, quotas.bytesPerApp));
      await new Promise<void>((resolve) => {
        this.#forward(request, response, path, body);
        response.once('close', resolve);
      });
    });
  }

  /**
   * An upload's bytes: refused at once when its declared length does not fit the app's remaining bytes,
   * and cut off when more than that passes through (what reaches the registry never takes the app's
   * space past its quota by more than the uploads running at the same time had in flight).
   */
  async #upload(
    request: IncomingMessage,
    response: ServerResponse,
    path: string,
    app: string,
    quotas: NonNullable<RegistryProxyOptions['quotas']>,
  ): Promise<void> {
    const usage = await spaceUsage(quotas.storageRoot, app);
    const used = usage.bytes + (this.#uploading.get(app) ?? 0);
    const room = quotas.bytesPerApp - used;
    const declared = Number(request.headers['content-length'] ?? 0);
    // Starting an upload needs room; finishing one (a PUT with no body) adds nothing, so a space filled
    // to the byte by its last chunk can still complete it.
    const starts = request.method === 'POST' && !path.includes('mount=');
    if ((starts && room <= 0) || (Number.isFinite(declared) && declared > 0 && declared > room)) {
      throw new QuotaRefusal(bytesRefusal(app, used, quotas.bytesPerApp, declared));
    }
    let passed = 0;
    const counted = (bytes: number) => this.#uploading.set(app, (this.#uploading.get(app) ?? 0) + bytes);
    const meter = new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        passed += chunk.length;
        counted(chunk.length);
        if (passed > room) {
          done(new QuotaRefusal(bytesRefusal(app, used, quotas.bytesPerApp, passed)));
          return;
        }
        done(null, chunk);
      },
    });
    response.once('close', () => {
      counted(-passed);
      if ((this.#uploading.get(app) ?? 0) <= 0) this.#uploading.delete(app);
    });
    this.#forward(request, response, path, undefined, meter);
  }

  #forward(
    request: IncomingMessage,
    response: ServerResponse,
    path: string,
    body?: Buffer,
    meter?: Transform,
  ): void {
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
    if (body !== undefined) {
      upstream.end(body);
      return;
    }
    if (meter) {
      meter.once('error', (error) => {
        // Past the quota: the registry gets no more (its partial upload is abandoned), the client its refusal.
        request.unpipe(meter);
        upstream.destroy();
        if (!response.headersSent) refuse(request, response, error.message);
        else response.destroy();
      });
      request.pipe(meter).pipe(upstream);
      return;
    }
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

function bytesRefusal(app: string, used: number, quota: number, more = 0): string {
  return (
    `quota exceeded: app ${app}'s images in Hangar's registry may take at most ${formatBytes(quota)} and take ` +
    `${formatBytes(used)}${more > 0 ? `, ${formatBytes(more)} more asked` : ''}; delete images it no longer needs ` +
    "(skopeo delete), or the operator can raise the setting quotas.registryBytesPerApp in hangard's configuration"
  );
}

/**
 * A push refused by a quota: 403 DENIED with the reason, after which the rest of the request body is
 * read and dropped (so the client, still sending, reads the answer instead of a broken pipe) and the
 * connection closed.
 */
function refuse(request: IncomingMessage, response: ServerResponse, message: string): void {
  response.shouldKeepAlive = false;
  sendError(response, 403, 'DENIED', message);
  request.resume();
}

/** The request body, or undefined once it passes `max` bytes. */
function readBody(request: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        request.removeAllListeners('data');
        resolve(undefined);
      } else chunks.push(chunk);
    });
    request.once('end', () => resolve(Buffer.concat(chunks)));
    request.once('error', reject);
  });
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

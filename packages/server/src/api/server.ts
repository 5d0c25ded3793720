import { createServer } from 'node:http';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, LogController } from 'fastify';
import { DEFAULT_API_LIMITS } from '../config/api-limits.js';
import type { RateLimitConfig } from '../config/rate-limits.js';
import type { Platform } from '../machines/platform.js';
import { ERROR_HTTP_STATUS, type ErrorCode, HangarError } from '../shared/errors.js';
import { newUlid } from '../shared/ids.js';
import { LIMITS } from '../shared/limits.js';
import { MetricsRegistry } from '../shared/metrics.js';
import { StoreConflictError } from '../store/store.js';
import { ApiRateLimits } from './rate-limits.js';
// Also declares what the hooks below read of a request (its principal, the route's rate class).
import './route-context.js';
import { appRoutes } from './routes/apps.js';
import { certificateRoutes } from './routes/certificates.js';
import { healthRoutes, type Readiness } from './routes/health.js';
import { ipRoutes } from './routes/ips.js';
import { machineRoutes } from './routes/machines.js';
import { platformRoutes } from './routes/platform.js';
import { secretRoutes } from './routes/secrets.js';
import { tokenRoutes } from './routes/tokens.js';
import { upgradeRoutes } from './routes/upgrades.js';
import { volumeRoutes } from './routes/volumes.js';

export interface ApiOptions {
  platform: Platform;
  rateLimits: RateLimitConfig;
  /** Bodies above this are refused with 413 (secrets and configs are small). */
  bodyLimitBytes?: number;
  /** Slow-client bounds (`api` in the configuration); the defaults are DEFAULT_API_TIMEOUTS. */
  timeouts?: ApiTimeouts;
  /** pino's options; `stream` is where its JSON lines go (see shared/log-format.ts). */
  logger?: boolean | { level: string; stream?: NodeJS.WritableStream };
  /** For /readyz; without it the API reports ready whenever it answers. */
  readiness?: () => Promise<Readiness>;
  /** Served at /metrics. */
  metrics?: MetricsRegistry;
}

export interface ApiTimeouts {
  /** The whole header block must arrive within this (slowloris). */
  headersMs: number;
  /** The whole request, body included, must arrive within this. Answers may take longer. */
  requestMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveMs: number;
  /**
   * A connection that sends and receives nothing for this long is closed. Longer than a `wait` long-poll
   * (60 s at most); followed logs and exec lift or lengthen it for their own connection.
   */
  idleMs: number;
}

export const DEFAULT_API_TIMEOUTS: ApiTimeouts = {
  headersMs: DEFAULT_API_LIMITS.headersTimeoutMs,
  requestMs: DEFAULT_API_LIMITS.requestTimeoutMs,
  keepAliveMs: DEFAULT_API_LIMITS.keepAliveTimeoutMs,
  idleMs: DEFAULT_API_LIMITS.idleTimeoutMs,
};

/** Builds the Machines REST API. It validates, authorizes and calls the platform, nothing more. */
export function buildApi(options: ApiOptions): FastifyInstance {
  const timeouts = options.timeouts ?? DEFAULT_API_TIMEOUTS;
  const app = Fastify({
    logger: options.logger ?? false,
    // One record per request, written when it is answered (below), instead of fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    // Node checks the header and request deadlines every `connectionsCheckingInterval`: a second keeps a
    // slow client's connection from outliving its deadline by more than that.
    serverFactory: (handler) => {
      const server = createServer(
        {
          headersTimeout: timeouts.headersMs,
          requestTimeout: timeouts.requestMs,
          keepAliveTimeout: timeouts.keepAliveMs,
          connectionsCheckingInterval: Math.min(1000, timeouts.headersMs),
        },
        handler,
      );
      server.setTimeout(timeouts.idleMs);
      return server;
    },
    bodyLimit: options.bodyLimitBytes ?? 1024 * 1024,
    genReqId: () => newUlid(),
    // Query strings like `state=started&state=stopped` become arrays. A path parameter longer than any
    // name Hangar accepts is refused by the router (414) before any route runs.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: LIMITS.nameChars },
    // The router's own refusals (a path that does not decode, a parameter too long) in Fly's error body.
    frameworkErrors: (error, _request, reply) => {
      const status = error.statusCode !== undefined && error.statusCode >= 400 ? error.statusCode : 400;
      (reply as FastifyReply).status(status).send({ error: error.message, status: 'invalid_argument' });
    },
  });
  const limits = new ApiRateLimits(options.rateLimits);

  app.addHook('onRequest', async (request, reply) => {
    reply.header('fly-request-id', request.id);
  });

  // Method, URL, status and duration only: never headers (tokens) nor bodies (secret values).
  app.addHook('onResponse', async (request, reply) => {
    request.log.info(
      {
        method: request.method,
        url: request.url,
        statusCode: reply.statusCode,
        responseTime: Math.round(reply.elapsedTime * 10) / 10,
        remoteAddress: request.ip,
      },
      'request',
    );
  });

  // Lenient JSON: any content type, an empty body reads as {}, malformed JSON is a clear 400.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => {
    const text = String(body).trim();
    if (text === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (error) {
      done(
        new HangarError('invalid_argument', `request body is not valid JSON: ${(error as Error).message}`),
        undefined,
      );
    }
  });

  // onRequest runs before the body is read: a bad token is a 401 whatever the body holds. Rate limits are
  // charged in the order ApiRateLimits describes: refusals per source, then the token's own bucket, then,
  // once the token's access to the app in the path is checked, the org's and the route's buckets.
  app.addHook('onRequest', async (request) => {
    if (!request.routeOptions.url) return; // unknown route: the 404 handler answers
    if (request.routeOptions.config.public) return;
    try {
      request.principal = await options.platform.tokens.authenticate(request.headers.authorization);
    } catch (error) {
      // Probing for tokens is limited per source address: past its allowance, a 429 instead of the 401.
      throw limits.chargeRefusal(`ip:${request.ip}`) ?? error;
    }
    const principal = request.principal;
    limits.checkRefusals(`token:${principal.tokenId}`);
    limits.chargeToken(principal);
    const params = request.params as { app_name?: string; machine_id?: string };
    if (params.app_name !== undefined) {
      const access = request.method === 'GET' || request.method === 'HEAD' ? 'read' : 'write';
      await options.platform.apps.authorize(principal, params.app_name, access);
    }
    const config = request.routeOptions.config;
    request.rateCharges = limits.charge(
      principal,
      config.rate ?? 'unlimited',
      config.action ?? request.routeOptions.url ?? request.url,
      params.machine_id ?? params.app_name ?? principal.orgId,
    );
  });

  app.setErrorHandler((error: FastifyError | HangarError | Error, request, reply) => {
    const { status, code, message } = describeError(error, String(request.id));
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    if ((status === 401 || status === 403) && request.principal) {
      // A refusal takes nothing from the org's or the target's buckets (a service's own check may refuse
      // after the hook charged them), and counts against the token's allowance of refusals.
      limits.refund(request.rateCharges ?? []);
      request.rateCharges = [];
      limits.chargeRefusal(`token:${request.principal.tokenId}`);
    }
    if (HangarError.is(error) && error.retryAfterSec !== undefined) {
      reply.header('retry-after', String(error.retryAfterSec));
    }
    return reply.status(status).send({ error: message, status: code });
  });

  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send({
      error: `no such endpoint: ${request.method} ${request.url.split('?')[0]}; the API lives under /v1 (see docs/api.md)`,
      status: 'not_found',
    }),
  );

  const deps = { platform: options.platform };
  for (const routes of [
    appRoutes,
    machineRoutes,
    volumeRoutes,
    secretRoutes,
    certificateRoutes,
    ipRoutes,
    tokenRoutes,
    platformRoutes,
  ]) {
    routes(app, deps);
  }
  upgradeRoutes(app, options.platform, limits);
  healthRoutes(app, {
    readiness: options.readiness ?? (async () => ({ ready: true, checks: {} })),
    metrics: options.metrics ?? new MetricsRegistry(),
  });
  return app;
}

/** Maps any error to Fly's body; unknown errors become a 500 that points at the log, never a stack trace. */
function describeError(
  error: unknown,
  requestId: string,
): { status: number; code: ErrorCode; message: string } {
  // An internal error's message can name host paths and tools: it stays in the log, the client gets the request id.
  if (HangarError.is(error) && error.code !== 'internal') {
    return { status: error.httpStatus, code: error.code, message: error.message };
  }
  if (error instanceof StoreConflictError) {
    return { status: ERROR_HTTP_STATUS.name_taken, code: 'name_taken', message: error.message };
  }
  const fastifyError = error as FastifyError;
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    const code = (Object.entries(ERROR_HTTP_STATUS).find(([, s]) => s === status)?.[0] ??
      'invalid_argument') as ErrorCode;
    return { status, code, message: fastifyError.message };
  }
  return {
    status: 500,
    code: 'internal',
    message: `internal error (request ${requestId}); the details are in hangard's log`,
  };
}

/**
 * Closes the API for shutdown: no new connections, idle ones closed at once, requests in flight get
 * `graceMs` to finish. What is still open then (a followed log, a `wait` long-poll, an exec stream) is
 * cut, so a shutdown never waits on a client: such clients reconnect to the next hangard.
 */
export async function closeApi(app: FastifyInstance, graceMs: number): Promise<void> {
  const cut = setTimeout(() => app.server.closeAllConnections(), graceMs);
  try {
    await app.close();
  } finally {
    clearTimeout(cut);
  }
}

import type { FastifyRequest } from 'fastify';
import type { Principal } from '../auth/tokens.js';
import type { Platform } from '../machines/platform.js';
import { HangarError } from '../shared/errors.js';
import type { Charge, RateClass } from './rate-limits.js';

/**
 * What every route file takes from the API around it: the services it calls, the caller, and the
 * per-route config the hooks of server.ts read. Kept apart from server.ts, which imports the routes,
 * so that no route imports the server back.
 */

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    /** The rate-limit buckets this request took from, given back if authorization refuses it. */
    rateCharges?: Charge[];
  }
  interface FastifyContextConfig {
    /** Which rate-limit bucket the route draws from; omitted means reads of the org only. */
    rate?: RateClass;
    /** The action name used in rate-limit keys and messages, e.g. "machine.start". */
    action?: string;
    /** No token, no rate limit: /healthz, /readyz and /metrics. */
    public?: boolean;
  }
}

export interface RouteDeps {
  platform: Platform;
}

/** The authenticated caller; every /v1 route runs after the auth hook, so this always holds one. */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new HangarError('unauthorized', 'missing token');
  return request.principal;
}

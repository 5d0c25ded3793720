import type { RequestOptions, Transport } from '../client.js';
import { isMachinesApiError } from '../errors.js';
import type { HealthResponse, ReadinessResponse, RegionsResponse, ServerVersion } from '../types.js';

/** The platform's own endpoints: regions (Fly's), and Hangar's version, liveness and readiness. */
export class PlatformResource {
  readonly #t: Transport;

  constructor(transport: Transport) {
    this.#t = transport;
  }

  regions(opts: RequestOptions = {}): Promise<RegionsResponse> {
    return this.#t.request({ method: 'GET', path: '/v1/platform/regions', signal: opts.signal });
  }

  /** Which server answers (Hangar only: `GET /v1/platform/version`). */
  version(opts: RequestOptions = {}): Promise<ServerVersion> {
    return this.#t.request({ method: 'GET', path: '/v1/platform/version', signal: opts.signal });
  }

  /** `GET /healthz` (Hangar only, no token needed): resolves when the daemon answers at all. */
  health(opts: RequestOptions = {}): Promise<HealthResponse> {
    return this.#t.request({ method: 'GET', path: '/healthz', signal: opts.signal });
  }

  /**
   * `GET /readyz` (Hangar only, no token needed). A daemon that is not ready answers 503 with the same
   * body; that body is returned (with `ready: false`) rather than thrown, since it says what is down.
   */
  async readiness(opts: RequestOptions = {}): Promise<ReadinessResponse> {
    try {
      const body = await this.#t.request<Omit<ReadinessResponse, 'ready'>>({
        method: 'GET',
        path: '/readyz',
        signal: opts.signal,
      });
      return { ...body, ready: true };
    } catch (err) {
      if (isMachinesApiError(err) && err.status === 503 && typeof err.body === 'object' && err.body) {
        return { ...(err.body as Omit<ReadinessResponse, 'ready'>), ready: false };
      }
      throw err;
    }
  }
}

import { path, type RequestOptions, type Transport } from '../client.js';
import type {
  CreatedToken,
  CreateTokenRequest,
  CurrentTokensResponse,
  ListTokensResponse,
  OkResponse,
} from '../types.js';

/**
 * API tokens. These endpoints are Hangar extensions: Fly manages tokens through its GraphQL API, so they
 * do not exist on api.machines.dev (except `apps.createDeployToken`).
 */
export class TokensResource {
  readonly #t: Transport;

  constructor(transport: Transport) {
    this.#t = transport;
  }

  /** The secret `token` is only in this response: store it now. */
  create(input: CreateTokenRequest, opts: RequestOptions = {}): Promise<CreatedToken> {
    return this.#t.request({ method: 'POST', path: '/v1/tokens', body: input, signal: opts.signal });
  }

  list(orgSlug = 'personal', opts: RequestOptions = {}): Promise<ListTokensResponse> {
    return this.#t.request({
      method: 'GET',
      path: '/v1/tokens',
      query: { org_slug: orgSlug },
      signal: opts.signal,
    });
  }

  revoke(id: string, opts: RequestOptions = {}): Promise<OkResponse> {
    return this.#t.request({ method: 'DELETE', path: path`/v1/tokens/${id}`, signal: opts.signal });
  }

  /** What the token(s) in use can reach. */
  current(opts: RequestOptions = {}): Promise<CurrentTokensResponse> {
    return this.#t.request({ method: 'GET', path: '/v1/tokens/current', signal: opts.signal });
  }
}

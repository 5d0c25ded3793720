import { path, type RequestOptions, type Transport } from '../client.js';
import type {
  AppSecret,
  DeleteSecretResponse,
  ListSecretsOptions,
  ListSecretsResponse,
  SetSecretResponse,
  SetSecretsResponse,
} from '../types.js';

function secretsQuery(options: ListSecretsOptions) {
  return {
    show_secrets: options.showSecrets ? 'true' : undefined,
    min_version: options.minVersion,
  };
}

/**
 * App secrets. Every change bumps the app's secrets `version`; machines only see new values after an
 * update, which can pass that version as `min_secrets_version`.
 */
export class SecretsResource {
  readonly #t: Transport;

  constructor(transport: Transport) {
    this.#t = transport;
  }

  list(
    app: string,
    options: ListSecretsOptions = {},
    opts: RequestOptions = {},
  ): Promise<ListSecretsResponse> {
    return this.#t.request({
      method: 'GET',
      path: path`/v1/apps/${app}/secrets`,
      query: secretsQuery(options),
      signal: opts.signal,
    });
  }

  /** Sets and removes several secrets in one version: a `null` value removes that secret. */
  set(
    app: string,
    values: Record<string, string | null>,
    opts: RequestOptions = {},
  ): Promise<SetSecretsResponse> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/secrets`,
      body: { values },
      signal: opts.signal,
    });
  }

  get(
    app: string,
    name: string,
    options: ListSecretsOptions = {},
    opts: RequestOptions = {},
  ): Promise<AppSecret> {
    return this.#t.request({
      method: 'GET',
      path: path`/v1/apps/${app}/secrets/${name}`,
      query: secretsQuery(options),
      signal: opts.signal,
    });
  }

  setOne(app: string, name: string, value: string, opts: RequestOptions = {}): Promise<SetSecretResponse> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/secrets/${name}`,
      body: { value },
      signal: opts.signal,
    });
  }

  unset(app: string, name: string, opts: RequestOptions = {}): Promise<DeleteSecretResponse> {
    return this.#t.request({
      method: 'DELETE',
      path: path`/v1/apps/${app}/secrets/${name}`,
      signal: opts.signal,
    });
  }
}

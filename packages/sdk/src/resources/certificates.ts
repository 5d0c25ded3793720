import { path, type RequestOptions, type Transport } from '../client.js';
import type { AppCertificate, ImportCertificateRequest, ListCertificatesResponse } from '../types.js';

/**
 * An app's custom hostnames and their certificates (`/v1/apps/{app}/certificates`). Importing a
 * certificate and key makes the proxy serve the hostname for the app; the key never comes back.
 */
export class CertificatesResource {
  readonly #t: Transport;

  constructor(transport: Transport) {
    this.#t = transport;
  }

  list(app: string, opts: RequestOptions = {}): Promise<ListCertificatesResponse> {
    return this.#t.request({ method: 'GET', path: path`/v1/apps/${app}/certificates`, signal: opts.signal });
  }

  /** Imports (or replaces) the certificate of a hostname: the chain and key in PEM. */
  importCustom(
    app: string,
    body: ImportCertificateRequest,
    opts: RequestOptions = {},
  ): Promise<AppCertificate> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/certificates/custom`,
      body,
      signal: opts.signal,
    });
  }

  get(app: string, hostname: string, opts: RequestOptions = {}): Promise<AppCertificate> {
    return this.#t.request({
      method: 'GET',
      path: path`/v1/apps/${app}/certificates/${hostname}`,
      signal: opts.signal,
    });
  }

  /** Removes the hostname and its certificate from the app. */
  remove(app: string, hostname: string, opts: RequestOptions = {}): Promise<{ ok?: boolean }> {
    return this.#t.request({
      method: 'DELETE',
      path: path`/v1/apps/${app}/certificates/${hostname}`,
      signal: opts.signal,
    });
  }
}

import type { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { certificateKeyContext } from '../machines/certificates.js';
import type { Vault } from '../secrets/vault.js';
import { covers, isUnder, normalizeHostname, readKeyPair } from '../shared/certificates.js';
import { HangarError } from '../shared/errors.js';
import type { CertificateRecord } from '../store/records.js';
import { ensureDevCertificate, type PemPair } from './dev-certificate.js';
import type { RouteTable } from './route-table.js';

/**
 * Which certificate the proxy shows for a TLS server name (SNI): an app's custom hostname (imported
 * through the certificates API) first, then the operator's certificates (`proxy.certificates`, each for
 * the names it covers), then, for names under the proxy's domain that none covers, the development
 * certificate. A name none of these covers gets no certificate: the handshake fails.
 */

export interface TlsCertificatesOptions {
  routes: RouteTable;
  vault: Vault;
  domain: string;
  dataDir: string;
  /** The operator's PEM files. */
  files: readonly { cert: string; key: string }[];
  onLog?: (line: string) => void;
}

interface OperatorCertificate {
  leaf: X509Certificate;
  pair: PemPair;
  context: tls.SecureContext;
}

export class TlsCertificates {
  readonly #options: TlsCertificatesOptions;
  readonly #operator: OperatorCertificate[];
  readonly #platform: tls.SecureContext;
  readonly #platformPair: PemPair;
  /** Contexts of custom hostnames, made once per record version (a new import is a new record). */
  readonly #custom = new WeakMap<CertificateRecord, tls.SecureContext>();

  private constructor(
    options: TlsCertificatesOptions,
    operator: OperatorCertificate[],
    platformPair: PemPair,
  ) {
    this.#options = options;
    this.#operator = operator;
    this.#platformPair = platformPair;
    this.#platform = tls.createSecureContext(platformPair);
  }

  /** Reads the operator's files (errors name the setting) and makes the development certificate if needed. */
  static async load(options: TlsCertificatesOptions): Promise<TlsCertificates> {
    const operator = options.files.map((files, index) => {
      const where = `proxy.certificates[${index}]`;
      const read = (path: string, what: string) => {
        try {
          return readFileSync(path, 'utf8');
        } catch (error) {
          throw new HangarError(
            'invalid_argument',
            `${where}.${what}: cannot read ${path}: ${(error as Error).message}`,
          );
        }
      };
      const cert = read(files.cert, 'cert');
      const key = read(files.key, 'key');
      const pair = readKeyPair(cert, key, { chain: `${where}.cert`, key: `${where}.key` });
      const pem = { cert: pair.fullchain, key };
      return { leaf: pair.leaf, pair: pem, context: tls.createSecureContext(pem) };
    });
    // The platform's names (`<app>.<domain>`): an operator certificate covering them, else the dev one.
    const probe = `app.${options.domain}`;
    let platform = operator.find((o) => covers(o.leaf, probe))?.pair;
    if (!platform) {
      try {
        platform = await ensureDevCertificate(options.dataDir, options.domain);
      } catch (error) {
        throw new HangarError(
          'unavailable',
          `no certificate for *.${options.domain}: making the development certificate failed (${(error as Error).message}); install openssl or give proxy.certificates`,
          { cause: error },
        );
      }
      options.onLog?.(
        `HTTPS for *.${options.domain} uses the development certificate (trust ${options.dataDir}/tls/dev-ca.pem); set proxy.certificates for real ones`,
      );
    }
    return new TlsCertificates(options, operator, platform);
  }

  /** The certificate for clients that send no server name: the platform's. */
  get defaultPair(): PemPair {
    return this.#platformPair;
  }

  /** The context of `defaultPair`, made once: a socket that ends TLS itself takes it per connection. */
  get defaultContext(): tls.SecureContext {
    return this.#platform;
  }

  /** The context for a server name, or undefined when no certificate covers it. */
  contextFor(servername: string): tls.SecureContext | undefined {
    const name = normalizeHostname(servername);
    const record = this.#options.routes.certificate(name);
    if (record) return this.#customContext(record);
    const operator = this.#operator.find((o) => covers(o.leaf, name));
    if (operator) return operator.context;
    return isUnder(name, this.#options.domain) ? this.#platform : undefined;
  }

  /** For tls.createServer's SNICallback. */
  readonly sniCallback = (
    servername: string,
    done: (error: Error | null, context?: tls.SecureContext) => void,
  ) => {
    let context: tls.SecureContext | undefined;
    try {
      context = this.contextFor(servername);
    } catch (error) {
      this.#options.onLog?.(
        `TLS: the certificate for ${servername} cannot be used: ${(error as Error).message}`,
      );
    }
    if (context) done(null, context);
    else done(new HangarError('not_found', `no certificate for ${servername}`));
  };

  #customContext(record: CertificateRecord): tls.SecureContext {
    let context = this.#custom.get(record);
    if (!context) {
      const key = this.#options.vault.unseal(
        record.sealedKey,
        certificateKeyContext(record.appId, record.hostname),
      );
      context = tls.createSecureContext({ cert: record.fullchain, key });
      this.#custom.set(record, context);
    }
    return context;
  }
}

import type { Principal } from '../auth/tokens.js';
import { covers, isHostname, isUnder, normalizeHostname, readKeyPair } from '../shared/certificates.js';
import { HangarError, invalidArgument } from '../shared/errors.js';
import type { AppRecord, CertificateRecord } from '../store/records.js';
import type { ReadTx } from '../store/store.js';
import { appFor, isoNow, type PlatformContext } from './context.js';

/** A PEM chain or key larger than this is not one (a 10-certificate RSA-4096 chain is about 20 KB). */
const MAX_PEM_BYTES = 64 * 1024;

export interface CustomCertificateInput {
  hostname: string;
  fullchain: string;
  privateKey: string;
}

/**
 * Custom hostnames (Fly's certificates API): an app imports a certificate and key for a hostname, and
 * the proxy then serves that hostname for the app over HTTPS (by SNI) and HTTP (by Host). A hostname
 * belongs to one app: another app cannot claim it, nor any name under the proxy's domain (that
 * namespace is the platform's). Private keys are sealed by the vault like app secrets and never leave
 * the server through the API.
 */
export class CertificatesService {
  constructor(private readonly ctx: PlatformContext) {}

  async list(principal: Principal, appName: string): Promise<CertificateRecord[]> {
    return this.ctx.store.read((tx) => {
      const app = appFor(tx, principal, appName, 'read');
      return tx.certificates.list({ appId: app.id }).sort((a, b) => a.hostname.localeCompare(b.hostname));
    });
  }

  async get(principal: Principal, appName: string, hostname: string): Promise<CertificateRecord> {
    const name = normalizeHostname(hostname);
    return this.ctx.store.read((tx) => ownCertificate(tx, appFor(tx, principal, appName, 'read'), name));
  }

  /** Imports (or replaces, for the same app) the certificate of a custom hostname. */
  async importCustom(
    principal: Principal,
    appName: string,
    input: CustomCertificateInput,
  ): Promise<CertificateRecord> {
    const hostname = normalizeHostname(input.hostname);
    if (hostname.startsWith('*.')) {
      throw invalidArgument('hostname: wildcard hostnames are not supported yet; import each hostname');
    }
    if (!isHostname(hostname)) {
      throw invalidArgument(`hostname: "${input.hostname}" is not a DNS name such as www.example.com`);
    }
    const domain = this.ctx.proxyDomain;
    if (domain !== undefined && isUnder(hostname, domain)) {
      throw new HangarError(
        'forbidden',
        `hostname: names under ${domain} belong to the platform (apps answer at <app>.${domain}); use a domain of your own`,
      );
    }
    if (
      Buffer.byteLength(input.fullchain) > MAX_PEM_BYTES ||
      Buffer.byteLength(input.privateKey) > MAX_PEM_BYTES
    ) {
      throw invalidArgument(`fullchain, private_key: at most ${MAX_PEM_BYTES} bytes each`);
    }
    const pair = readKeyPair(input.fullchain, input.privateKey, { chain: 'fullchain', key: 'private_key' });
    if (!covers(pair.leaf, hostname)) {
      throw invalidArgument(
        `fullchain: the certificate does not cover ${hostname} (it names ${pair.names.join(', ') || 'no DNS name'})`,
      );
    }
    const now = this.ctx.now();
    if (pair.notAfter.getTime() <= now) {
      throw invalidArgument(`fullchain: the certificate expired on ${pair.notAfter.toISOString()}`);
    }
    return this.ctx.store.write((tx) => {
      const app = appFor(tx, principal, appName, 'write');
      const existing = tx.certificates.get(hostname);
      if (existing && existing.appId !== app.id) {
        // Which app holds it is not said: it may be another organization's.
        throw new HangarError('name_taken', `hostname ${hostname} is already held by another app`);
      }
      const stamp = isoNow(this.ctx);
      const record: CertificateRecord = {
        hostname,
        appId: app.id,
        source: 'custom',
        fullchain: pair.fullchain,
        // The context binds the sealed key to this app and hostname: moved elsewhere, it won't open.
        sealedKey: this.ctx.vault.seal(input.privateKey, certificateKeyContext(app.id, hostname)),
        issuer: pair.issuer,
        subject: pair.subject,
        notBefore: pair.notBefore.toISOString(),
        notAfter: pair.notAfter.toISOString(),
        fingerprint: pair.fingerprint,
        createdAt: existing?.createdAt ?? stamp,
        updatedAt: stamp,
      };
      if (existing) tx.certificates.update(record);
      else tx.certificates.insert(record);
      return record;
    });
  }

  async remove(principal: Principal, appName: string, hostname: string): Promise<void> {
    const name = normalizeHostname(hostname);
    await this.ctx.store.write((tx) => {
      ownCertificate(tx, appFor(tx, principal, appName, 'write'), name);
      tx.certificates.delete(name);
    });
  }
}

/** The vault context of a hostname's private key (the proxy unseals with the same). */
export function certificateKeyContext(appId: string, hostname: string): string {
  return `${appId}/certificates/${hostname}`;
}

/** The app's certificate for a hostname; another app's hostname reads as absent: nothing tells who holds it. */
function ownCertificate(tx: ReadTx, app: AppRecord, hostname: string): CertificateRecord {
  const record = tx.certificates.get(hostname);
  if (!record || record.appId !== app.id) {
    throw new HangarError('not_found', `hostname ${hostname} has no certificate in app ${app.name}`);
  }
  return record;
}

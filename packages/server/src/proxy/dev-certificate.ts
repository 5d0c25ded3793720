import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { covers } from '../shared/certificates.js';
import { runChecked } from '../shared/run.js';

/**
 * The development certificate: when the operator gives no certificate for `*.<proxy.domain>`, the proxy
 * serves one signed by a development CA that hangard makes once and keeps in `<dataDir>/tls/`. Trust
 * `dev-ca.pem` on a developer's machine (curl --cacert, the OS trust store) and every app's HTTPS
 * verifies. Made with the openssl CLI: Node's crypto cannot write X.509 certificates. Not for
 * production: give real certificates (`proxy.certificates`).
 */

export interface PemPair {
  cert: string;
  key: string;
}

const CURVE = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
/** openssl req needs a config file; an empty request section is enough when -subj is given. */
const MINIMAL_CONFIG = '[req]\ndistinguished_name=dn\n[dn]\n';
const OPENSSL_TIMEOUT_MS = 30_000;
/** A development leaf is made again this long before it expires. */
const RENEW_BEFORE_MS = 30 * 24 * 3600_000;

/** Makes a CA certificate and key in `dir` (`<name>.pem`, `<name>.key`). */
export async function mintAuthority(dir: string, name: string, commonName: string): Promise<PemPair> {
  return mint(dir, name, [
    '-days',
    '3650',
    '-subj',
    `/CN=${commonName}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

/** Makes a server certificate for `names` signed by the CA files `ca` (`<ca>.pem`, `<ca>.key`) in `dir`. */
export async function mintLeaf(dir: string, name: string, names: string[], ca: string): Promise<PemPair> {
  return mint(dir, name, [
    '-days',
    '825',
    '-subj',
    `/CN=${names[0]}`,
    '-CA',
    join(dir, `${ca}.pem`),
    '-CAkey',
    join(dir, `${ca}.key`),
    '-addext',
    `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`,
    '-addext',
    'basicConstraints=critical,CA:FALSE',
    '-addext',
    'extendedKeyUsage=serverAuth',
  ]);
}

async function mint(dir: string, name: string, args: string[]): Promise<PemPair> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const config = join(dir, `.${name}.cnf`);
  const keyTemp = join(dir, `.${name}.key.tmp`);
  const certTemp = join(dir, `.${name}.pem.tmp`);
  writeFileSync(config, MINIMAL_CONFIG);
  try {
    await runChecked(
      'openssl',
      ['req', '-x509', '-config', config, ...CURVE, '-keyout', keyTemp, '-out', certTemp, ...args],
      { timeoutMs: OPENSSL_TIMEOUT_MS },
    );
    chmodSync(keyTemp, 0o600);
    // Key first: a crash between the renames leaves a key without a certificate, which is made again.
    renameSync(keyTemp, join(dir, `${name}.key`));
    renameSync(certTemp, join(dir, `${name}.pem`));
  } finally {
    for (const file of [config, keyTemp, certTemp]) rmSync(file, { force: true });
  }
  return {
    cert: readFileSync(join(dir, `${name}.pem`), 'utf8'),
    key: readFileSync(join(dir, `${name}.key`), 'utf8'),
  };
}

/** The development certificate for `*.<domain>` and `<domain>`, made (with its CA) when missing or stale. */
export async function ensureDevCertificate(
  dataDir: string,
  domain: string,
  now = Date.now(),
): Promise<PemPair> {
  const dir = join(dataDir, 'tls');
  if (!existsSync(join(dir, 'dev-ca.pem')) || !existsSync(join(dir, 'dev-ca.key'))) {
    await mintAuthority(dir, 'dev-ca', `Hangar development CA (${domain})`);
  }
  const certFile = join(dir, 'dev-proxy.pem');
  const keyFile = join(dir, 'dev-proxy.key');
  if (existsSync(certFile) && existsSync(keyFile)) {
    const pair = { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
    const leaf = new X509Certificate(pair.cert);
    const ca = new X509Certificate(readFileSync(join(dir, 'dev-ca.pem')));
    const fresh = new Date(leaf.validTo).getTime() - now > RENEW_BEFORE_MS;
    const signed = leaf.checkIssued(ca) && leaf.verify(ca.publicKey);
    if (fresh && signed && covers(leaf, `x.${domain}`) && covers(leaf, domain)) return pair;
  }
  return mintLeaf(dir, 'dev-proxy', [`*.${domain}`, domain], 'dev-ca');
}

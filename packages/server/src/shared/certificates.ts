import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { invalidArgument } from './errors.js';

/**
 * Reading PEM certificates and keys (custom hostnames, the operator's certificates): the chain parses,
 * the key is the leaf's, the leaf covers the hostname and is valid now. Pure: no I/O. Messages never
 * quote the key.
 */

/** A chain longer than this is not a certificate chain a browser would walk. */
const MAX_CHAIN = 10;

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export interface CertificateInfo {
  /** The chain, PEM blocks joined with newlines, leaf first. */
  fullchain: string;
  leaf: X509Certificate;
  issuer: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  fingerprint: string;
  /** DNS names of the leaf's subjectAltName (wildcards as `*.example.com`). */
  names: string[];
}

/** Parses a PEM chain and its key and checks that the key belongs to the leaf. `what` names the field. */
export function readKeyPair(
  fullchainPem: string,
  keyPem: string,
  what: { chain: string; key: string },
): CertificateInfo & { key: KeyObject } {
  const blocks = fullchainPem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) {
    throw invalidArgument(`${what.chain}: expected a PEM certificate chain (-----BEGIN CERTIFICATE-----)`);
  }
  if (blocks.length > MAX_CHAIN) {
    throw invalidArgument(`${what.chain}: a chain has at most ${MAX_CHAIN} certificates`);
  }
  const chain = blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw invalidArgument(`${what.chain}: certificate ${index + 1} of the chain does not parse`);
    }
  });
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    // The parser's message may quote part of the input: a fixed message instead.
    throw invalidArgument(
      `${what.key}: expected an unencrypted PEM private key (-----BEGIN PRIVATE KEY----- or similar)`,
    );
  }
  const leaf = chain[0]!;
  if (!leaf.checkPrivateKey(key)) {
    throw invalidArgument(
      `${what.key}: this private key does not belong to the first certificate of the chain`,
    );
  }
  return {
    fullchain: `${blocks.join('\n')}\n`,
    leaf,
    key,
    issuer: leaf.issuer.replace(/\n/g, ', '),
    subject: leaf.subject.replace(/\n/g, ', '),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    fingerprint: leaf.fingerprint256,
    names: dnsNames(leaf),
  };
}

/** The DNS names of a certificate's subjectAltName. */
export function dnsNames(certificate: X509Certificate): string[] {
  const names: string[] = [];
  for (const part of (certificate.subjectAltName ?? '').split(', ')) {
    if (part.startsWith('DNS:')) names.push(part.slice(4).toLowerCase());
  }
  return names;
}

/** Whether the certificate covers `hostname` (a wildcard covers exactly one label). */
export function covers(certificate: X509Certificate, hostname: string): boolean {
  return certificate.checkHost(hostname, { wildcards: true, subject: 'never' }) !== undefined;
}

/** A DNS name as hosts are compared: lower case, no trailing dot. */
export function normalizeHostname(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A name a client can ask for: at least two labels, each a DNS label; not an IP address. */
export function isHostname(name: string): boolean {
  if (name.length > 253) return false;
  const labels = name.split('.');
  if (labels.length < 2 || !labels.every((label) => LABEL.test(label))) return false;
  // All-numeric last label: an IPv4 address, not a name.
  return !/^[0-9]+$/.test(labels[labels.length - 1]!);
}

/** Whether `name` is `domain` itself or any name under it. */
export function isUnder(name: string, domain: string): boolean {
  return name === domain || name.endsWith(`.${domain}`);
}

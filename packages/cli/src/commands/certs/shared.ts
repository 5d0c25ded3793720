import type { AppCertificate } from '@hangar/sdk';
import type { Cell } from '../../output.js';
import { formatTime } from '../../output.js';

/** The fields a person wants of a hostname's certificate (the first one, which the proxy serves). */
export function certificateFields(cert: AppCertificate): Array<[string, Cell]> {
  const first = cert.certificates?.[0];
  return [
    ['Hostname', cert.hostname],
    ['Status', cert.status],
    ['Source', first?.source ?? cert.source],
    ['Issuer', first?.issuer],
    ['Subject', first?.subject],
    ['Expires', formatTime(first?.expires_at)],
    ['Fingerprint', first?.fingerprint_sha256],
    ['Added', formatTime(cert.created_at)],
  ];
}

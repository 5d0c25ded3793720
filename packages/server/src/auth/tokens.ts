import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { TokenRecord, TokenType } from '../store/records.js';

/**
 * Hangar tokens look like `hg1_<16 id chars>_<43 secret chars>`. The id finds the record; only a SHA-256
 * of the secret is stored, so the database cannot be used to mint requests.
 */
const TOKEN_FORMAT = /^hg1_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$/;

export interface Principal {
  tokenId: string;
  type: TokenType;
  orgId: string;
  /** Set for deploy tokens: the one app they may touch. */
  appId: string | null;
  name: string;
}

const hashSecret = (secret: string) => createHash('sha256').update(secret).digest('hex');

export function mintToken(): { id: string; token: string; secretHash: string } {
  const idPart = randomBytes(10).toString('hex').slice(0, 16);
  const secret = randomBytes(32).toString('base64url');
  return { id: `tok_${idPart}`, token: `hg1_${idPart}_${secret}`, secretHash: hashSecret(secret) };
}

/**
 * The tokens in an Authorization header. Accepts `Bearer <t>` and `FlyV1 <t>[,<t>…]` (fly-go's scheme),
 * and comma-separated lists in either.
 */
export function tokensFromHeader(header: string | undefined): string[] {
  if (!header) return [];
  const match = /^(Bearer|FlyV1)\s+(.+)$/i.exec(header.trim());
  if (!match) return [];
  return match[2]!
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t.length > 0);
}

/** The record id a token names, or undefined when the text is not a Hangar token at all. */
export function tokenIdOf(token: string): string | undefined {
  const match = TOKEN_FORMAT.exec(token);
  return match ? `tok_${match[1]}` : undefined;
}

/** Checks the secret against the record in constant time and that the token has not expired. */
export function verifyToken(
  token: string,
  record: TokenRecord | undefined,
  nowMs: number,
): Principal | undefined {
  const match = TOKEN_FORMAT.exec(token);
  if (!match || !record) return undefined;
  const expected = Buffer.from(record.secretHash, 'hex');
  const actual = Buffer.from(hashSecret(match[2]!), 'hex');
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) return undefined;
  if (record.expiresAt !== null && Date.parse(record.expiresAt) <= nowMs) return undefined;
  return {
    tokenId: record.id,
    type: record.type,
    orgId: record.orgId,
    appId: record.appId,
    name: record.name,
  };
}

/**
 * CIDRs of either family as numbers (BigInt, so IPv6 fits): parsing without host bits, containment, and
 * a set of CIDRs made disjoint (nft interval sets refuse overlapping elements). Used by the egress rules
 * and to check CIDRs in the configuration.
 */
import { formatIpv4, parseIpv4 } from './ipv4.js';
import { formatIpv6, parseIpv6 } from './ipv6.js';

export interface Cidr {
  family: 4 | 6;
  /** The first address as a number of 32 or 128 bits. */
  base: bigint;
  length: number;
  /** `address/length`, normalized (RFC 5952 for IPv6). */
  text: string;
}

const bitsOf = (family: 4 | 6) => (family === 4 ? 32 : 128);

function addressBits(text: string): { family: 4 | 6; value: bigint } | undefined {
  const v4 = parseIpv4(text);
  if (v4 !== undefined) return { family: 4, value: BigInt(v4) };
  const groups = text.includes(':') ? parseIpv6(text) : undefined;
  if (!groups) return undefined;
  return { family: 6, value: groups.reduce((n, g) => (n << 16n) | BigInt(g), 0n) };
}

function formatBits(family: 4 | 6, value: bigint): string {
  if (family === 4) return formatIpv4(Number(value));
  const groups = Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(112 - 16 * i)) & 0xffffn));
  return formatIpv6(groups);
}

/** `address/length` or a bare address (a /32 or /128); undefined when it is neither, or has host bits. */
export function parseCidr(text: string): Cidr | undefined {
  const [address, lengthText, extra] = text.trim().split('/');
  if (address === undefined || extra !== undefined) return undefined;
  const parsed = addressBits(address);
  if (!parsed) return undefined;
  const bits = bitsOf(parsed.family);
  const length = lengthText === undefined ? bits : /^\d{1,3}$/.test(lengthText) ? Number(lengthText) : -1;
  if (length < 0 || length > bits) return undefined;
  const hostMask = (1n << BigInt(bits - length)) - 1n;
  if ((parsed.value & hostMask) !== 0n) return undefined;
  return {
    family: parsed.family,
    base: parsed.value,
    length,
    text: `${formatBits(parsed.family, parsed.value)}/${length}`,
  };
}

/** The network an interface address belongs to (`192.0.2.7/24` → `192.0.2.0/24`). */
export function networkOfInterfaceAddress(address: string, length: number): Cidr | undefined {
  const parsed = addressBits(address);
  if (!parsed || !Number.isInteger(length) || length < 0 || length > bitsOf(parsed.family)) return undefined;
  const bits = bitsOf(parsed.family);
  const base = (parsed.value >> BigInt(bits - length)) << BigInt(bits - length);
  return { family: parsed.family, base, length, text: `${formatBits(parsed.family, base)}/${length}` };
}

/** Whether `outer` contains `inner` (equal counts). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || outer.length > inner.length) return false;
  const shift = BigInt(bitsOf(outer.family) - outer.length);
  return outer.base >> shift === inner.base >> shift;
}

/** The CIDRs without those inside another one: what an interval set accepts (no overlaps). */
export function disjointCidrs(cidrs: readonly Cidr[]): Cidr[] {
  const sorted = [...cidrs].sort(
    (a, b) => a.length - b.length || (a.base < b.base ? -1 : a.base > b.base ? 1 : 0),
  );
  const kept: Cidr[] = [];
  for (const cidr of sorted) if (!kept.some((k) => cidrContains(k, cidr))) kept.push(cidr);
  return kept.sort((a, b) => (a.text < b.text ? -1 : a.text > b.text ? 1 : 0));
}

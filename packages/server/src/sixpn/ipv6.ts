import { HangarError } from '../shared/errors.js';
/** Small IPv6 helpers: 6PN and Flycast addresses are built from numbers, so only these are needed. */

/** Parses an IPv6 address into 8 16-bit groups; undefined when it is not one. */
export function parseIpv6(text: string): number[] | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parse = (part: string) =>
    part === ''
      ? []
      : part.split(':').map((g) => (/^[0-9a-f]{1,4}$/i.test(g) ? parseInt(g, 16) : Number.NaN));
  const head = parse(halves[0]!);
  const tail = halves.length === 2 ? parse(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...head, ...Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  return groups.some(Number.isNaN) ? undefined : groups;
}

/** RFC 5952 text: lowercase, no leading zeros, the longest run of 2+ zero groups as `::`. */
export function formatIpv6(groups: number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/** The two middle groups of every address of 6PN network `id` (fdaa:<hi>:<lo>::/48). */
export function networkGroups(networkId: number): [number, number] {
  return [Math.floor(networkId / 0x10000) & 0xffff, networkId & 0xffff];
}

/** Flycast addresses sit in their network's /48 under the fixed host part 0:1 (`fdaa:<net>:0:1::<n>`). */
export function flycastAddress(networkId: number, n: number): string {
  const [hi, lo] = networkGroups(networkId);
  return formatIpv6([0xfdaa, hi, lo, 0, 1, 0, Math.floor(n / 0x10000) & 0xffff, n & 0xffff]);
}

/** The `n`th address inside `prefix` (an address/length with length ≤ 96), counting in the low 32 bits. */
export function addressInPrefix(prefix: string, n: number): string {
  const [address, lengthText] = prefix.split('/');
  const groups = address ? parseIpv6(address) : undefined;
  const length = Number(lengthText);
  if (!groups || !Number.isInteger(length) || length < 16 || length > 96) {
    throw new HangarError('invalid_argument', `"${prefix}" is not an IPv6 prefix of length 16 to 96`);
  }
  return formatIpv6([...groups.slice(0, 6), Math.floor(n / 0x10000) & 0xffff, n & 0xffff]);
}

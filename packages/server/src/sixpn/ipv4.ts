/**
 * The private IPv4 plan: every machine of a host gets one address from a host-wide range (config
 * `network.privateV4Range`), so that apps bound to `0.0.0.0` (what Fly's documents tell users to do)
 * answer the proxy, and so that outbound IPv4 can be masqueraded from it. The range is one flat pool for
 * the whole host, not split per network: a machine's IPv4 address is a /32 on its eth0, reached by the
 * host through a /32 route on its network's bridge, never on-link to another machine, so the pool needs
 * no per-network blocks and the rules (ruleset.ts) keep every machine from every other's address.
 *
 *   <range>.0.1              the gateway: on every Hangar bridge (/32), the machines' default route
 *   <range>.0.2 …            machines, in the order the allocator hands them out
 *   the last address         unused (the range's broadcast address)
 *
 * Pure functions over numbers, like address-plan.ts: the address of a machine is stored with it (the
 * allocator in machines/ picks it), and everything else is computed from the range.
 */

/** Fly's machines see a 172.19.x.x address; this default stays clear of Docker's 172.17-31 pools. */
export const DEFAULT_PRIVATE_V4_RANGE = '10.213.0.0/16';
/** Narrowest and widest ranges the config accepts: room for at least 13 machines, at most 2^24. */
export const MIN_RANGE_PREFIX_LENGTH = 8;
export const MAX_RANGE_PREFIX_LENGTH = 28;

export interface Ipv4Range {
  /** The first address, as a 32-bit unsigned number. */
  base: number;
  prefixLength: number;
  /** `a.b.c.d/n`, normalized. */
  cidr: string;
}

/** A dotted quad as a 32-bit unsigned number; undefined when the text is not one. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255)) {
    return undefined;
  }
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join('.');
}

/** `a.b.c.d/n` with host bits zero and n within the bounds above; a RangeError says what is wrong. */
export function parseIpv4Range(cidr: string): Ipv4Range {
  const [address, lengthText, extra] = cidr.split('/');
  const base = address === undefined ? undefined : parseIpv4(address);
  const prefixLength = Number(lengthText);
  if (base === undefined || extra !== undefined || !/^\d{1,2}$/.test(lengthText ?? '')) {
    throw new RangeError(`"${cidr}" is not an IPv4 range such as ${DEFAULT_PRIVATE_V4_RANGE}`);
  }
  if (prefixLength < MIN_RANGE_PREFIX_LENGTH || prefixLength > MAX_RANGE_PREFIX_LENGTH) {
    throw new RangeError(
      `"${cidr}": the prefix length must be ${MIN_RANGE_PREFIX_LENGTH} to ${MAX_RANGE_PREFIX_LENGTH}`,
    );
  }
  if (base % 2 ** (32 - prefixLength) !== 0) {
    throw new RangeError(
      `"${cidr}" has host bits set; write ${formatIpv4(networkOf(base, prefixLength))}/${prefixLength}`,
    );
  }
  return { base, prefixLength, cidr: `${formatIpv4(base)}/${prefixLength}` };
}

const networkOf = (n: number, prefixLength: number) => n - (n % 2 ** (32 - prefixLength));

/** The machines' gateway, on every Hangar bridge. */
export const ipv4Gateway = (range: Ipv4Range) => formatIpv4(range.base + 1);

/** How many machine addresses the range holds (all but the network, gateway and broadcast addresses). */
export const ipv4Capacity = (range: Ipv4Range) => 2 ** (32 - range.prefixLength) - 3;

/** The machine address at `index` (0 to capacity - 1). */
export function ipv4At(range: Ipv4Range, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= ipv4Capacity(range)) {
    throw new RangeError(`index ${index} is outside ${range.cidr}`);
  }
  return formatIpv4(range.base + 2 + index);
}

/** Whether `address` is one of the range's machine addresses. */
export function isMachineIpv4(range: Ipv4Range, address: string): boolean {
  const n = parseIpv4(address);
  return n !== undefined && n >= range.base + 2 && n < range.base + 2 + ipv4Capacity(range);
}

/** Whether `address` lies anywhere in the range (gateway and broadcast included). */
export function inIpv4Range(range: Ipv4Range, address: string): boolean {
  const n = parseIpv4(address);
  return n !== undefined && networkOf(n, range.prefixLength) === range.base;
}

/**
 * The next free machine address, going round the range from `cursor` (a counter that only grows, so
 * that a released address is handed out again only after every other one was: a connection or a cache
 * entry of a destroyed machine has all that time to go before its address means another machine).
 * Undefined when every address is in use.
 */
export function nextFreeIpv4(
  range: Ipv4Range,
  cursor: number,
  inUse: ReadonlySet<string>,
): string | undefined {
  const capacity = ipv4Capacity(range);
  for (let step = 0; step < capacity; step++) {
    const address = ipv4At(range, (cursor + step) % capacity);
    if (!inUse.has(address)) return address;
  }
  return undefined;
}

/**
 * The 6PN address and naming plan: pure functions from numbers to addresses and interface names, so
 * that everything Hangar puts on a host can be recomputed from the store (reconcile) and recognized by
 * name (cleanup).
 *
 * Addresses (every group is 16 bits; `N` = network id, `H` = host id, `M` = machine number, each 32 bits
 * split into a high and a low group):
 *
 *   fdaa:N:N::/48            the network's prefix: two addresses share a network iff groups 2-3 match
 *   fdaa:N:N::3              the network's service address (DNS now; later _api.internal and logs)
 *   fdaa:N:N:H:H::/80        the network's block on one host: the L2 segment of one bridge
 *   fdaa:N:N:H:H::1          the bridge's own address, the machines' default gateway
 *   fdaa:N:N:H:H:M:M:2/112   a machine (Fly's layout; the rest of its /112 is the machine's own)
 *   fdaa::3                  the resolver as machines see it (resolver.ts; on the host's loopback)
 *
 * Reserved numbers, so that the blocks above never overlap: network 0 (its ::3 would be fdaa::3),
 * host 0 (its /80 holds the service address), host 1 (Flycast uses `fdaa:N:N:0:1::/80`), machine 0 (its
 * /112 holds the gateway).
 *
 * Interface names (Linux allows 15 characters; ids are written in lowercase hex without leading zeros,
 * so the longest name is 11 characters):
 *
 *   hgn<network id>          the network's bridge on this host, e.g. network 24 → `hgn18`
 *   hgv<machine number>      the host end of a machine's veth pair, enslaved to its network's bridge
 *   hgw<machine number>      the same veth while it is being set up; renamed to hgv… once the machine's
 *                            end is configured, so an hgv… link always means a finished attach
 *   eth0                     the machine's end, inside its network namespace
 *
 * The 14-hex machine id does not fit in a name, hence the per-host machine number (allocated by the
 * store, never shared by two live machines of one host).
 *
 * MAC addresses are fixed too, so the nftables rules can bind them and a bridge keeps one MAC whatever
 * ports come and go (machines cache the gateway's): bridge `0a:fd:<network id>`, machine eth0
 * `02:fd:<machine number>` (locally administered, unicast).
 */
import { formatIpv6, networkGroups, parseIpv6 } from './ipv6.js';

/** Largest network id, host id and machine number: each is 32 bits. */
export const MAX_ID = 0xffff_ffff;
export const NETWORK_PREFIX_LENGTH = 48;
export const HOST_BLOCK_PREFIX_LENGTH = 80;
export const MACHINE_PREFIX_LENGTH = 112;
/** The first group of every 6PN address. */
const ULA_6PN = 0xfdaa;

export const BRIDGE_PREFIX = 'hgn';
export const VETH_PREFIX = 'hgv';
export const PENDING_VETH_PREFIX = 'hgw';
/** The machine's end of its veth pair, inside its network namespace. */
export const MACHINE_INTERFACE = 'eth0';

/** One network's plumbing on this host. */
export interface NetworkPlan {
  id: number;
  bridge: string;
  /** The bridge's MAC. */
  mac: string;
  /** `fdaa:N:N::/48`. */
  prefix: string;
  /** `fdaa:N:N:H:H::/80`: the network's machines on this host, on-link on the bridge. */
  hostBlock: string;
  /** `fdaa:N:N:H:H::1`, on the bridge. */
  gateway: string;
  /** `fdaa:N:N::3`, on the bridge. */
  serviceAddress: string;
}

/** One machine's place in its network on this host. */
export interface Attachment {
  machineId: string;
  machineNumber: number;
  networkId: number;
  /** The network's bridge (the veth's master). */
  bridge: string;
  /** The host end of the veth pair. */
  veth: string;
  /** The MAC of the machine's eth0. */
  mac: string;
  /** `fdaa:N:N:H:H:M:M:2`, without its length (MACHINE_PREFIX_LENGTH). */
  address: string;
  /** The EUI-64 link-local address the kernel derives from `mac` (used by neighbour discovery). */
  linkLocal: string;
  gateway: string;
  hostBlock: string;
  /** The machine's private IPv4 address (ipv4.ts), a /32 on its eth0; absent when it has none. */
  ipv4?: string;
}

function checkId(what: string, value: number, reserved: readonly number[] = []): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_ID) {
    throw new RangeError(`${what} must be an integer from 0 to ${MAX_ID}, got ${value}`);
  }
  if (reserved.includes(value)) throw new RangeError(`${what} ${value} is reserved by the 6PN plan`);
  return value;
}

const checkNetworkId = (id: number) => checkId('network id', id, [0]);
const checkMachineNumber = (n: number) => checkId('machine number', n, [0]);

/** The host id from the config (8 hex digits) as a number; 0 and 1 are reserved (see above). */
export function parseHostId(hostId: string): number {
  if (!/^[0-9a-f]{8}$/i.test(hostId)) throw new RangeError(`host id must be 8 hex digits, got "${hostId}"`);
  return checkId('host id', Number.parseInt(hostId, 16), [0, 1]);
}

const split = networkGroups;
const hex = (n: number) => n.toString(16);

export function networkPrefix(networkId: number): string {
  const [hi, lo] = split(checkNetworkId(networkId));
  return `${formatIpv6([ULA_6PN, hi, lo, 0, 0, 0, 0, 0])}/${NETWORK_PREFIX_LENGTH}`;
}

export function serviceAddress(networkId: number): string {
  const [hi, lo] = split(checkNetworkId(networkId));
  return formatIpv6([ULA_6PN, hi, lo, 0, 0, 0, 0, 3]);
}

export function hostBlock(networkId: number, hostId: string): string {
  const [hi, lo] = split(checkNetworkId(networkId));
  const [hostHi, hostLo] = split(parseHostId(hostId));
  return `${formatIpv6([ULA_6PN, hi, lo, hostHi, hostLo, 0, 0, 0])}/${HOST_BLOCK_PREFIX_LENGTH}`;
}

export function gatewayAddress(networkId: number, hostId: string): string {
  const [hi, lo] = split(checkNetworkId(networkId));
  const [hostHi, hostLo] = split(parseHostId(hostId));
  return formatIpv6([ULA_6PN, hi, lo, hostHi, hostLo, 0, 0, 1]);
}

export function machineAddress(networkId: number, hostId: string, machineNumber: number): string {
  const [hi, lo] = split(checkNetworkId(networkId));
  const [hostHi, hostLo] = split(parseHostId(hostId));
  const [mHi, mLo] = split(checkMachineNumber(machineNumber));
  return formatIpv6([ULA_6PN, hi, lo, hostHi, hostLo, mHi, mLo, 2]);
}

/**
 * The network an address belongs to (groups 2-3 of a 6PN address), or undefined when it is not in one:
 * not an IPv6 address, outside fdaa::/16, or the network-less resolver address fdaa::3. This is how a
 * server on the host attributes a request to the caller's network: the rules drop spoofed sources.
 */
export function networkIdOf(address: string): number | undefined {
  // Without a prefix length or a zone (`%eth0`, as sockets report scoped addresses).
  const groups = parseIpv6(address.replace(/\/\d+$|%.*$/, ''));
  if (!groups || groups[0] !== ULA_6PN) return undefined;
  const id = groups[1]! * 0x10000 + groups[2]!;
  return id === 0 ? undefined : id;
}

/** Whether two addresses are on the same 6PN network (both must be on one). */
export function sameNetwork(a: string, b: string): boolean {
  const network = networkIdOf(a);
  return network !== undefined && network === networkIdOf(b);
}

export const bridgeName = (networkId: number) => `${BRIDGE_PREFIX}${hex(checkNetworkId(networkId))}`;
export const vethName = (machineNumber: number) => `${VETH_PREFIX}${hex(checkMachineNumber(machineNumber))}`;
export const pendingVethName = (machineNumber: number) =>
  `${PENDING_VETH_PREFIX}${hex(checkMachineNumber(machineNumber))}`;

const NAME_PATTERN = /^(hgn|hgv|hgw)([0-9a-f]{1,8})$/;

/** The network id a bridge name stands for, or undefined when the name is not a Hangar bridge's. */
export function networkIdOfBridge(name: string): number | undefined {
  const match = NAME_PATTERN.exec(name);
  return match?.[1] === BRIDGE_PREFIX ? Number.parseInt(match[2]!, 16) : undefined;
}

/** The machine number an hgv/hgw name stands for, or undefined. */
export function machineNumberOfVeth(name: string): number | undefined {
  const match = NAME_PATTERN.exec(name);
  return match && match[1] !== BRIDGE_PREFIX ? Number.parseInt(match[2]!, 16) : undefined;
}

function macOf(firstBytes: [number, number], n: number): string {
  const bytes = [...firstBytes, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export const bridgeMac = (networkId: number) => macOf([0x0a, 0xfd], checkNetworkId(networkId));
export const machineMac = (machineNumber: number) => macOf([0x02, 0xfd], checkMachineNumber(machineNumber));

/** The EUI-64 link-local address of a MAC (RFC 4291 appendix A): what the kernel gives eth0 by default. */
export function linkLocalOf(mac: string): string {
  const b = mac.split(':').map((part) => Number.parseInt(part, 16));
  if (b.length !== 6 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
    throw new RangeError(`"${mac}" is not a MAC address`);
  }
  const [b0, b1, b2, b3, b4, b5] = b as [number, number, number, number, number, number];
  return formatIpv6([
    0xfe80,
    0,
    0,
    0,
    ((b0 ^ 0x02) << 8) | b1,
    (b2 << 8) | 0xff,
    0xfe00 | b3,
    (b4 << 8) | b5,
  ]);
}

export function planNetwork(networkId: number, hostId: string): NetworkPlan {
  return {
    id: networkId,
    bridge: bridgeName(networkId),
    mac: bridgeMac(networkId),
    prefix: networkPrefix(networkId),
    hostBlock: hostBlock(networkId, hostId),
    gateway: gatewayAddress(networkId, hostId),
    serviceAddress: serviceAddress(networkId),
  };
}

export interface AttachmentRequest {
  machineId: string;
  /** The machine's number on this host (1 to 2^32-1), allocated by the store. */
  machineNumber: number;
  networkId: number;
  /** The host's id from the config: 8 hex digits. */
  hostId: string;
  /** The machine's private IPv4 address, when it has one. */
  ipv4?: string;
}

export function planAttachment(request: AttachmentRequest): Attachment {
  const { machineId, machineNumber, networkId, hostId } = request;
  const mac = machineMac(machineNumber);
  return {
    machineId,
    machineNumber,
    networkId,
    bridge: bridgeName(networkId),
    veth: vethName(machineNumber),
    mac,
    address: machineAddress(networkId, hostId, machineNumber),
    linkLocal: linkLocalOf(mac),
    gateway: gatewayAddress(networkId, hostId),
    hostBlock: hostBlock(networkId, hostId),
    ...(request.ipv4 === undefined ? {} : { ipv4: request.ipv4 }),
  };
}

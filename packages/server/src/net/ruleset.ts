import { HangarError } from '../shared/errors.js';
/**
 * The whole nftables rule set of Hangar's networks, as text for one `nft -f -` transaction: built from
 * the desired state only, so applying it twice gives the same kernel state (no duplicates by
 * construction) and a reconcile is simply "apply again". Between two states that differ only in
 * networks and machines, rulesetDelta gives the element adds and deletes instead (also one
 * transaction), so that an attach does not rewrite a thousand networks' elements.
 *
 * Two tables, both named `hangar`, replaced together in the same transaction:
 *
 * - `table bridge hangar` sees each frame with the bridge port it came in on (the machine's veth). That
 *   is where anti-spoofing has to live: in the inet family a frame from a machine shows up with the
 *   bridge as its input interface, and traffic between two machines of one bridge is switched at L2
 *   and never reaches the inet hooks at all (unless br_netfilter is on, which a host may or may not
 *   have). Every frame from an `hgv…` port must carry that port's MAC and, for IPv6, that port's
 *   address (or its link-local, or `::` for DAD and MLD). IPv4 must come from the machine's private IPv4
 *   address and go to the bridge's own MAC (routed by the host, never switched to a neighbour); ARP
 *   must speak as the machine and ask only for the gateway. Everything else a machine sends (spoofed
 *   sources, router advertisements, other ethertypes) is dropped before the bridge switches or
 *   delivers it.
 * - `table inet hangar` polices what is routed: from a machine to the host (only DNS to its own
 *   network's ::3 and to fdaa::3, the service ports of its own network's Flycast addresses, neighbour
 *   discovery, and the machine's side of connections the host opened; nothing else of the host, on any
 *   address, IPv4 included), and between interfaces (a bridge to a different bridge is always dropped, so
 *   is anything routed to a machine's private IPv4 address; out of the host only with egress on,
 *   masqueraded, never to the host's local networks unless the operator lists them, and only where
 *   the machine's app's egress policy allows, egress-policy.ts).
 *
 * Every base chain has policy accept and only acts on Hangar's interfaces (`hgn…` bridges, `hgv…`
 * ports), so the host's other traffic (Docker, libvirt, the uplink) is not touched. The rule count is
 * constant; networks, machines and Flycast addresses are elements of sets (concatenated `port . address`
 * keys), so the size is O(networks + machines + Flycast addresses) lines and the kernel's lookups are
 * hash lookups at any scale.
 */
import { type Attachment, BRIDGE_PREFIX, type NetworkPlan, VETH_PREFIX } from '../sixpn/address-plan.js';
import { type Cidr, disjointCidrs, parseCidr } from '../sixpn/cidr.js';
import {
  DEFAULT_PRIVATE_V4_RANGE,
  type Ipv4Range,
  ipv4Gateway,
  isMachineIpv4,
  parseIpv4Range,
} from '../sixpn/ipv4.js';
import { flycastAddress, formatIpv6, parseIpv6 } from '../sixpn/ipv6.js';
import { DNS_PORT, RESOLVER_ADDRESS } from '../sixpn/resolver.js';
import type { EgressPolicyRecord } from '../store/records.js';
import { egressElements, LOCAL_NETWORKS_V4, LOCAL_NETWORKS_V6 } from './egress-policy.js';
import { mergeRanges, type PortRange, portRange } from './service-ports.js';

/** The name of both Hangar tables (inet and bridge families). */
export const TABLE_NAME = 'hangar';
/** A network's Flycast addresses are `fdaa:N:N:0:1::/80` (the plan reserves host id 1 for them). */
export const FLYCAST_PREFIX_LENGTH = 80;

/** The block every Flycast address of the network lies in; the host routes it to itself (linux-net.ts). */
export const flycastBlock = (networkId: number) => `${flycastAddress(networkId, 0)}/${FLYCAST_PREFIX_LENGTH}`;

/** A Flycast address allocated in a network (the store's `private_v6` assignments). */
export interface FlycastEntry {
  networkId: number;
  address: string;
  /**
   * The ports the proxy serves on it: those of the services of the owning app's machines
   * (service-ports.ts). A machine of the network reaches the address on these and nothing else; none
   * means the address is closed.
   */
  ports: readonly PortRange[];
}

/** What the host's Hangar networking should look like, computed from the store. */
export interface DesiredNetState {
  networks: readonly NetworkPlan[];
  attachments: readonly Attachment[];
  /**
   * The Flycast addresses allocated in each network; a network's machines may reach its own ones on
   * the host (the proxy), on their service ports only. Entries of networks not in `networks` (no
   * bridge on this host) are ignored.
   */
  flycast: readonly FlycastEntry[];
  /**
   * Machines may reach the outside world through the host (masqueraded): the host's switch
   * (`network.egress`). Each machine then reaches what its app's policy allows (`egressPolicies`).
   */
  egress: boolean;
  /** Each machine's app's egress policy, by machine id; a machine without one gets `on`. */
  egressPolicies?: ReadonlyMap<string, EgressPolicyRecord>;
  /** Local networks the operator lets machines reach (`network.egressLocal`), as CIDRs. */
  egressLocal?: readonly string[];
  /**
   * The host's private IPv4 range (sixpn/ipv4.ts; default DEFAULT_PRIVATE_V4_RANGE): machines' IPv4
   * addresses and their gateway. Nothing from a machine may reach an address in it but the replies of
   * connections the host opened.
   */
  privateV4Range?: string;
}

/** Facts about the host that the rules need, found by linux-net.ts. */
export interface HostFacts {
  /**
   * The networks of the host's own interfaces (`192.0.2.0/24`, `2001:db8:1::/64`), Hangar's bridges
   * left out: with the fixed private ranges of egress-policy.ts, what egress never reaches unless the
   * operator lists it.
   */
  localNetworks: readonly string[];
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const HANGAR_IFNAME = /^hg[nv][0-9a-f]{1,8}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Every token that goes into the text is checked, so a bad record cannot change the rules' meaning. */
function ifname(name: string, hangar = true): string {
  if (!(hangar ? HANGAR_IFNAME : IFNAME).test(name))
    throw new HangarError('internal', `"${name}" is not a valid interface name`);
  return `"${name}"`;
}

/**
 * An IPv6 address in the plan's (lowercase, compressed) text: a shape check, not a parse, because it
 * runs for every element of every apply (thousands at 1,000 networks). What it lets through cannot
 * change the rules' meaning, and nft refuses a malformed address (the whole transaction then fails).
 */
const IPV6_TEXT = /^[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}$/;

function address(text: string): string {
  if (!IPV6_TEXT.test(text)) throw new HangarError('internal', `"${text}" is not an IPv6 address`);
  return text;
}

/**
 * An address as the 128-bit integer the NA target rule compares (`0x` and 32 hex digits): nft 1.0.6
 * types a raw payload expression (`@th,64,128`) as an integer, so its set cannot take address text.
 */
function addressInteger(text: string): string {
  const groups = parseIpv6(address(text));
  if (!groups) throw new HangarError('internal', `"${text}" is not an IPv6 address`);
  return `0x${groups.map((group) => group.toString(16).padStart(4, '0')).join('')}`;
}

/** A machine's IPv4 address, which must be one of the range's machine addresses. */
function machineIpv4(range: Ipv4Range, text: string): string {
  if (!isMachineIpv4(range, text)) {
    throw new HangarError('internal', `"${text}" is not a machine address of ${range.cidr}`);
  }
  return text;
}

function rangeOf(desired: DesiredNetState): Ipv4Range {
  try {
    return parseIpv4Range(desired.privateV4Range ?? DEFAULT_PRIVATE_V4_RANGE);
  } catch (error) {
    throw new HangarError('internal', (error as Error).message);
  }
}

function mac(text: string): string {
  if (!MAC.test(text)) throw new HangarError('internal', `"${text}" is not a MAC address`);
  return text;
}

/**
 * A named set with its elements one per line; nft rejects `elements = { }`, so none means none. The
 * type is a datatype (`ifname . ipv6_addr`) or, for a key no datatype names, `typeof` and expressions.
 */
function set(name: string, type: string, elements: readonly string[], comment: string): string[] {
  const declaration = type.startsWith('typeof ') ? type : `type ${type}`;
  const lines = [`  # ${comment}`, `  set ${name} {`, `    ${declaration}`];
  if (elements.length > 0) {
    lines.push('    elements = {');
    elements.forEach((element, i) => {
      lines.push(`      ${element}${i < elements.length - 1 ? ',' : ''}`);
    });
    lines.push('    }');
  }
  lines.push('  }');
  return lines;
}

/** A set whose elements may be ranges (ports `8000-8010`); the same layout as set(). */
function intervalSet(name: string, type: string, elements: readonly string[], comment: string): string[] {
  const lines = set(name, type, elements, comment);
  lines.splice(3, 0, '    flags interval');
  return lines;
}

/**
 * The Flycast address in the plan's text, once it is known to lie in its network's block: a record
 * pointing anywhere else (another network's block, a machine, a ::3) must not open it to the network.
 */
function flycastIn({ networkId, address: text }: FlycastEntry): string {
  const groups = parseIpv6(address(text));
  if (!groups) throw new HangarError('internal', `"${text}" is not an IPv6 address`);
  const block = parseIpv6(flycastAddress(networkId, 0))!;
  if (groups.slice(0, FLYCAST_PREFIX_LENGTH / 16).some((group, i) => group !== block[i])) {
    const where = `network ${networkId}'s block ${flycastBlock(networkId)}`;
    throw new HangarError('internal', `Flycast address ${text} is not in ${where}`);
  }
  // One text per address, so that the elements of two states compare equal (rulesetDelta).
  return formatIpv6(groups);
}

function checkDesired(desired: DesiredNetState): void {
  const networks = new Set<number>();
  for (const network of desired.networks) {
    if (networks.has(network.id)) throw new HangarError('internal', `network ${network.id} is listed twice`);
    networks.add(network.id);
  }
  const veths = new Set<string>();
  const addresses = new Set<string>();
  for (const attachment of desired.attachments) {
    if (!networks.has(attachment.networkId)) {
      throw new HangarError(
        'internal',
        `machine ${attachment.machineId} is attached to network ${attachment.networkId}, which is not in the desired state`,
      );
    }
    if (veths.has(attachment.veth))
      throw new HangarError('internal', `veth ${attachment.veth} is used twice`);
    veths.add(attachment.veth);
    const key = address(attachment.address);
    if (addresses.has(key)) throw new HangarError('internal', `address ${key} is given to two machines`);
    addresses.add(key);
    if (attachment.ipv4 !== undefined) {
      if (addresses.has(attachment.ipv4))
        throw new HangarError('internal', `address ${attachment.ipv4} is given to two machines`);
      addresses.add(attachment.ipv4);
    }
  }
}

/**
 * The data part of a rule set: every set's elements (keyed `<family> <set>`, each element as nft text)
 * and the `shape`, everything else that varies (egress, the private IPv4 range). Two states of the same shape
 * differ only in set elements, so one can be turned into the other by adding and deleting elements
 * (rulesetDelta) instead of replacing the tables.
 */
export interface RulesetState {
  shape: string;
  sets: ReadonlyMap<string, readonly string[]>;
}

/** CIDRs as one family's disjoint interval-set elements; a malformed one is a bug upstream. */
function cidrElements(texts: readonly string[], family: 4 | 6): string[] {
  const parsed = texts.map((text) => {
    const cidr = parseCidr(text);
    if (!cidr) throw new HangarError('internal', `"${text}" is not a CIDR`);
    return cidr;
  });
  return disjointCidrs(parsed.filter((c: Cidr) => c.family === family)).map((c) => c.text);
}

export function rulesetState(
  desired: DesiredNetState,
  host: HostFacts = { localNetworks: [] },
): RulesetState {
  checkDesired(desired);
  const networks = [...desired.networks].sort((a, b) => a.id - b.id);
  const attachments = [...desired.attachments].sort((a, b) => a.machineNumber - b.machineNumber);
  const bridgeOf = new Map(networks.map((n) => [n.id, n.bridge]));
  for (const a of attachments) {
    if (bridgeOf.get(a.networkId) !== a.bridge) {
      throw new HangarError(
        'internal',
        `machine ${a.machineId}: bridge ${a.bridge} is not network ${a.networkId}'s`,
      );
    }
  }
  const range = rangeOf(desired);
  const macOf = new Map(networks.map((n) => [n.bridge, n.mac]));
  const withIpv4 = attachments.filter((a) => a.ipv4 !== undefined);
  const egress = desired.egress;
  // Per machine, what its app's policy opens (sources are the machine's own addresses: the bridge
  // table guarantees them).
  const policies = desired.egressPolicies ?? new Map<string, EgressPolicyRecord>();
  const perMachine = egress
    ? attachments.map((a) =>
        egressElements(
          { v4: a.ipv4 === undefined ? undefined : machineIpv4(range, a.ipv4), v6: address(a.address) },
          policies.get(a.machineId),
        ),
      )
    : [];
  const local = [...LOCAL_NETWORKS_V4, ...LOCAL_NETWORKS_V6, ...host.localNetworks];
  const localOk = desired.egressLocal ?? [];
  // Per bridge and address, the ports of every entry naming it, merged: an interval set refuses
  // overlapping elements, and one text per state keeps deltas exact.
  const flycastPorts = new Map<string, PortRange[]>();
  for (const entry of desired.flycast) {
    const bridge = bridgeOf.get(entry.networkId);
    if (bridge === undefined) continue;
    const key = `${ifname(bridge)} . ${flycastIn(entry)}`;
    flycastPorts.set(key, [...(flycastPorts.get(key) ?? []), ...entry.ports]);
  }
  const flycast = [...flycastPorts].flatMap(([key, ports]) =>
    mergeRanges(ports).map((range) => `${key} . ${portRange(range)}`),
  );
  const sets = new Map<string, string[]>([
    ['bridge port_macs', attachments.map((a) => `${ifname(a.veth)} . ${mac(a.mac)}`)],
    [
      'bridge port_addrs',
      attachments.flatMap((a) => [
        `${ifname(a.veth)} . ${address(a.address)}`,
        `${ifname(a.veth)} . ${address(a.linkLocal)}`,
      ]),
    ],
    ['bridge port_ipv4', withIpv4.map((a) => `${ifname(a.veth)} . ${machineIpv4(range, a.ipv4!)}`)],
    ['bridge port_gateway', withIpv4.map((a) => `${ifname(a.veth)} . ${mac(macOf.get(a.bridge)!)}`)],
    [
      'bridge na_targets',
      attachments.flatMap((a) => [
        `${ifname(a.veth)} . ${addressInteger(a.address)}`,
        `${ifname(a.veth)} . ${addressInteger(a.linkLocal)}`,
      ]),
    ],
    [
      'inet services',
      networks.flatMap((n) =>
        [address(n.serviceAddress), RESOLVER_ADDRESS].flatMap((to) =>
          ['udp', 'tcp'].map((proto) => `${ifname(n.bridge)} . ${to} . ${proto} . ${DNS_PORT}`),
        ),
      ),
    ],
    ['inet flycast', flycast.sort()],
    ['inet same_bridge', networks.map((n) => `${ifname(n.bridge)} . ${ifname(n.bridge)}`)],
    ['inet local4', egress ? cidrElements(local, 4) : []],
    ['inet local6', egress ? cidrElements(local, 6) : []],
    ['inet local_ok4', egress ? cidrElements(localOk, 4) : []],
    ['inet local_ok6', egress ? cidrElements(localOk, 6) : []],
    ['inet egress_any4', perMachine.flatMap((e) => e.any4)],
    ['inet egress_ports4', perMachine.flatMap((e) => e.ports4)],
    ['inet egress_any6', perMachine.flatMap((e) => e.any6)],
    ['inet egress_ports6', perMachine.flatMap((e) => e.ports6)],
  ]);
  return { shape: JSON.stringify({ egress, v4: range.cidr, v4Gateway: ipv4Gateway(range) }), sets };
}

/**
 * The nft commands that turn the rules of `from` into those of `to`, as one transaction: element
 * deletes and adds only, so the cost follows the change (an attach is a few elements), not the number
 * of networks. Undefined when the shapes differ (a full replace is needed); empty when nothing changes.
 */
export function rulesetDelta(from: RulesetState, to: RulesetState): string | undefined {
  if (from.shape !== to.shape) return undefined;
  const lines: string[] = [];
  for (const [key, next] of to.sets) {
    const [family, name] = key.split(' ') as [string, string];
    const before = new Set(from.sets.get(key) ?? []);
    const after = new Set(next);
    const removed = [...before].filter((e) => !after.has(e));
    const added = next.filter((e) => !before.has(e));
    if (removed.length > 0)
      lines.push(`delete element ${family} ${TABLE_NAME} ${name} { ${removed.join(', ')} }`);
    if (added.length > 0) lines.push(`add element ${family} ${TABLE_NAME} ${name} { ${added.join(', ')} }`);
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

/**
 * The rule set text for `nft -f -`. Each table is first created (a no-op when it exists, so the delete
 * cannot fail), deleted and written anew: nft applies the whole input as one transaction, so the kernel
 * switches from the old rules to the new ones at once, with no moment without rules. `state` is
 * rulesetState(desired, host), passed by a caller that has it already.
 */
export function buildRuleset(
  desired: DesiredNetState,
  host: HostFacts = { localNetworks: [] },
  state: RulesetState = rulesetState(desired, host),
): string {
  const { egress, v4, v4Gateway } = JSON.parse(state.shape) as {
    egress: boolean;
    v4: string;
    v4Gateway: string;
  };
  const elements = (key: string) => state.sets.get(key) ?? [];
  const anyBridge = `"${BRIDGE_PREFIX}*"`;
  const anyPort = `"${VETH_PREFIX}*"`;
  const networkCount = desired.networks.length;
  const machineCount = desired.attachments.length;
  const flycastCount = new Set(elements('inet flycast').map((e) => e.split(' . ').slice(0, 2).join())).size;

  const lines = [
    `# Hangar 6PN isolation: ${networkCount} networks, ${machineCount} machines, ` +
      `${flycastCount} Flycast addresses, egress ${egress ? 'on' : 'off'}.`,
    '# Generated by packages/server/src/net/ruleset.ts; do not edit (the next apply would undo it).',
    `table bridge ${TABLE_NAME} {}`,
    `delete table bridge ${TABLE_NAME}`,
    `table inet ${TABLE_NAME} {}`,
    `delete table inet ${TABLE_NAME}`,
    '',
    `table bridge ${TABLE_NAME} {`,
    ...set(
      'port_macs',
      'ifname . ether_addr',
      elements('bridge port_macs'),
      "each machine port and its machine's MAC",
    ),
    ...set(
      'port_addrs',
      'ifname . ipv6_addr',
      elements('bridge port_addrs'),
      "each machine port and its machine's addresses (6PN and link-local)",
    ),
    ...set(
      'na_targets',
      'typeof iifname . @th,64,128',
      elements('bridge na_targets'),
      'each machine port and the addresses its neighbour advertisements may claim (its own, as integers)',
    ),
    ...set(
      'port_ipv4',
      'ifname . ipv4_addr',
      elements('bridge port_ipv4'),
      "each machine port and its machine's private IPv4 address",
    ),
    ...set(
      'port_gateway',
      'ifname . ether_addr',
      elements('bridge port_gateway'),
      "each machine port and its bridge's MAC: the only next hop of the machine's IPv4",
    ),
    '  chain prerouting {',
    '    type filter hook prerouting priority filter; policy accept;',
    `    iifname ${anyPort} jump from_machine`,
    '  }',
    '  chain from_machine {',
    '    iifname . ether saddr != @port_macs counter drop comment "spoofed MAC"',
    '    ether type arp jump arp_from_machine',
    '    ether type ip jump ipv4_from_machine',
    '    ether type != ip6 counter drop comment "neither IPv6, IPv4 nor ARP"',
    // Only the host routes: a machine's router advertisement or redirect would hijack its peers' routes.
    '    icmpv6 type { nd-router-advert, nd-redirect, router-renumbering } counter drop comment "router messages"',
    // A neighbour advertisement may only claim the sender's own addresses: one for a peer's address
    // (or the gateway's) would point the neighbours' caches at the sender's MAC and let it intercept
    // their traffic. The target starts 8 bytes into the ICMPv6 header; nft 1.0.6 has no name for it.
    '    icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @na_targets counter drop comment "forged neighbour advertisement"',
    '    iifname . ip6 saddr @port_addrs accept',
    // Before an address is configured the kernel speaks from :: (duplicate address detection, MLD).
    '    ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } accept',
    '    counter drop comment "spoofed source address"',
    '  }',
    // A machine's IPv4 is a /32 whose only neighbour is the gateway: it may speak ARP only as itself and
    // ask only for the gateway, and its IPv4 frames must go to the bridge's own MAC, so that they are
    // routed by the host (and its rules) and never switched to another machine of the bridge.
    '  chain arp_from_machine {',
    '    iifname . arp saddr ether != @port_macs counter drop comment "spoofed ARP"',
    '    iifname . arp saddr ip != @port_ipv4 counter drop comment "spoofed ARP"',
    `    arp operation request arp daddr ip != ${v4Gateway} counter drop comment "ARP beyond the gateway"`,
    '    accept',
    '  }',
    '  chain ipv4_from_machine {',
    '    iifname . ip saddr != @port_ipv4 counter drop comment "spoofed IPv4 source"',
    '    iifname . ether daddr != @port_gateway counter drop comment "IPv4 past the gateway"',
    '    accept',
    '  }',
    '}',
    '',
    `table inet ${TABLE_NAME} {`,
    ...set(
      'services',
      'ifname . ipv6_addr . inet_proto . inet_service',
      elements('inet services'),
      "what machines may reach on the host, per bridge: DNS on their network's ::3 and on fdaa::3",
    ),
    ...intervalSet(
      'flycast',
      'ifname . ipv6_addr . inet_proto . inet_service',
      elements('inet flycast'),
      "the Flycast addresses of each bridge's network with the ports their app's services expose (the proxy's)",
    ),
    ...set(
      'same_bridge',
      'ifname . ifname',
      elements('inet same_bridge'),
      'bridge to itself: frames switched within one network, seen here only when br_netfilter is on',
    ),
    ...(egress
      ? [
          ...intervalSet('local4', 'ipv4_addr', elements('inet local4'), "the host's local IPv4 networks"),
          ...intervalSet('local6', 'ipv6_addr', elements('inet local6'), "the host's local IPv6 networks"),
          ...intervalSet(
            'local_ok4',
            'ipv4_addr',
            elements('inet local_ok4'),
            'local IPv4 networks the operator lets machines reach (network.egressLocal)',
          ),
          ...intervalSet(
            'local_ok6',
            'ipv6_addr',
            elements('inet local_ok6'),
            'local IPv6 networks the operator lets machines reach (network.egressLocal)',
          ),
          ...intervalSet(
            'egress_any4',
            'ipv4_addr . ipv4_addr',
            elements('inet egress_any4'),
            "a machine's IPv4 address and a destination its app's policy opens on every port",
          ),
          ...intervalSet(
            'egress_ports4',
            'ipv4_addr . ipv4_addr . inet_proto . inet_service',
            elements('inet egress_ports4'),
            "a machine's IPv4 address, a destination and the ports its app's policy opens there",
          ),
          ...intervalSet(
            'egress_any6',
            'ipv6_addr . ipv6_addr',
            elements('inet egress_any6'),
            "a machine's 6PN address and a destination its app's policy opens on every port",
          ),
          ...intervalSet(
            'egress_ports6',
            'ipv6_addr . ipv6_addr . inet_proto . inet_service',
            elements('inet egress_ports6'),
            "a machine's 6PN address, a destination and the ports its app's policy opens there",
          ),
        ]
      : []),
    // Before routing: a machine's IPv4 to any other machine's address (of its network or another) is
    // dropped in silence whether that address is in use or not (routing would answer an unused one
    // with "host unreachable", telling which are). The gateway is the host: the input rules decide.
    '  chain prerouting {',
    '    type filter hook prerouting priority filter; policy accept;',
    `    iifname ${anyBridge} ip daddr != ${v4Gateway} ip daddr ${v4} counter drop comment "to a machine's private IPv4"`,
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    `    iifname ${anyBridge} jump machine_to_host`,
    '  }',
    '  chain machine_to_host {',
    // The machine's side of what the host opened (health checks, the proxy, admin), and nothing more:
    // only the reply direction. A flow the machine opened is checked packet by packet against the sets
    // below, so no conntrack entry (established, related, or a mid-stream pickup) is a way to a socket.
    '    ct direction reply ct state established,related accept',
    '    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept',
    '    iifname . ip6 daddr . meta l4proto . th dport @services accept',
    // Only the service ports, and only the bridge's own network's addresses: the host routes every
    // network's whole Flycast block to itself, so anything listening on `::` (sshd, hangard, a
    // database) would otherwise answer on every address of it.
    '    iifname . ip6 daddr . meta l4proto . th dport @flycast accept',
    '    counter drop comment "machine to host"',
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname ${anyBridge} jump leaving_network`,
    `    oifname ${anyBridge} jump entering_network`,
    '  }',
    '  chain leaving_network {',
    '    iifname . oifname @same_bridge accept',
    // Another network's bridge here, or its 6PN elsewhere (never out by the default route).
    `    oifname ${anyBridge} counter drop comment "cross-network"`,
    '    ip6 daddr fdaa::/16 counter drop comment "cross-network"',
    ...(egress
      ? [
          // The host's local networks only where the operator lists them, then the app's policy.
          '    ip daddr @local_ok4 jump egress_policy',
          '    ip6 daddr @local_ok6 jump egress_policy',
          '    ip daddr @local4 counter drop comment "host-local network"',
          '    ip6 daddr @local6 counter drop comment "host-local network"',
          '    jump egress_policy',
        ]
      : []),
    '    counter drop comment "egress off"',
    '  }',
    ...(egress
      ? [
          '  chain egress_policy {',
          '    ip saddr . ip daddr @egress_any4 accept',
          '    ip saddr . ip daddr . meta l4proto . th dport @egress_ports4 accept',
          '    ip6 saddr . ip6 daddr @egress_any6 accept',
          '    ip6 saddr . ip6 daddr . meta l4proto . th dport @egress_ports6 accept',
          '    counter drop comment "egress policy"',
          '  }',
        ]
      : []),
    '  chain entering_network {',
    // Only the replies of connections machines opened (leaving_network let them out): nothing from
    // outside opens a connection to a machine, whatever conntrack holds.
    ...(egress ? ['    ct direction reply ct state established,related accept'] : []),
    '    counter drop comment "into a network from outside"',
    '  }',
    ...(egress
      ? [
          '  chain postrouting {',
          '    type nat hook postrouting priority srcnat; policy accept;',
          // Out of the host by whatever interface routing picks, from the host's address there: the
          // machines' 6PN (ULA) and private IPv4 addresses mean nothing outside.
          `    iifname ${anyBridge} oifname != ${anyBridge} masquerade`,
          '  }',
        ]
      : []),
    '}',
    '',
  ];
  return lines.join('\n');
}

/** Deletes both tables in one transaction; creating them first makes it succeed when they are absent. */
export function deleteRulesetText(): string {
  return [
    `table bridge ${TABLE_NAME} {}`,
    `delete table bridge ${TABLE_NAME}`,
    `table inet ${TABLE_NAME} {}`,
    `delete table inet ${TABLE_NAME}`,
    '',
  ].join('\n');
}

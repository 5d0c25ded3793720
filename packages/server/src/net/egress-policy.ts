/**
 * An app's egress policy, and the nftables set elements it becomes. Pure functions, so that the rules'
 * meaning is unit-tested without a kernel.
 *
 * Policies (set by the operator, never by a deploy token; absent means `on`, as on Fly):
 *
 *   on      the app's machines reach any destination outside the host and its local networks
 *   off     they reach nothing outside their own network (DNS forwarding is refused too)
 *   allow   they reach only the listed destinations: CIDRs (IPv4 or IPv6), each with optional ports
 *           (TCP and UDP; without ports, every protocol and port)
 *
 * Whatever the policy, the rules in ruleset.ts come first: the host's own addresses, other networks,
 * machines' private IPv4 addresses, and the host's local networks (unless the operator lists them in
 * `network.egressLocal`) stay out of reach.
 *
 * nft interval sets refuse overlapping elements, so egressElements makes each machine's elements
 * disjoint: destinations inside a wider one are dropped, and the ports of a narrower destination lose
 * those its wider ones already open.
 */
import { HangarError, invalidArgument } from '../shared/errors.js';
import { type Cidr, cidrContains, disjointCidrs, parseCidr } from '../sixpn/cidr.js';
import type { EgressPolicyRecord, EgressRuleRecord } from '../store/records.js';
import { mergeRanges, type PortRange, portRange } from './service-ports.js';

export const EGRESS_MODES = ['on', 'off', 'allow'] as const;
/** An allow-list holds at most this many destinations (each becomes set elements per machine). */
export const MAX_EGRESS_RULES = 64;

/** What an app without a policy gets. */
export const DEFAULT_EGRESS: EgressPolicyRecord = { mode: 'on', allow: [] };

export interface EgressPolicyInput {
  mode: string;
  allow?: readonly { cidr: string; ports?: readonly (number | string)[] }[];
}

/** `443` or `8000-8010` as a port span; a RangeError-free check with a message that says what to fix. */
function portSpan(value: number | string, where: string): { start: number; end: number } {
  const text = String(value);
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const start = Number(match?.[1]);
  const end = Number(match?.[2] ?? match?.[1]);
  if (!match || start < 1 || end > 65_535 || start > end) {
    throw invalidArgument(`${where}: "${text}" is not a port (1-65535) or a range such as 8000-8010`);
  }
  return { start, end };
}

/** Checks a policy from the API and returns it as stored: CIDRs normalized, ports as spans. */
export function checkEgressPolicy(input: EgressPolicyInput): EgressPolicyRecord {
  if (!(EGRESS_MODES as readonly string[]).includes(input.mode)) {
    throw invalidArgument(`mode: "${input.mode}" is not one of ${EGRESS_MODES.join(', ')}`);
  }
  const mode = input.mode as EgressPolicyRecord['mode'];
  const rules = input.allow ?? [];
  if (mode !== 'allow' && rules.length > 0) {
    throw invalidArgument(`allow: destinations are listed only with mode "allow", not "${mode}"`);
  }
  if (rules.length > MAX_EGRESS_RULES) {
    throw invalidArgument(`allow: at most ${MAX_EGRESS_RULES} destinations, got ${rules.length}`);
  }
  const allow: EgressRuleRecord[] = rules.map((rule, i) => {
    const cidr = parseCidr(rule.cidr);
    if (!cidr) {
      throw invalidArgument(
        `allow[${i}].cidr: "${rule.cidr}" is not an address or a CIDR without host bits, such as 198.51.100.0/24 or 2001:db8::/32`,
      );
    }
    if (rule.ports !== undefined && rule.ports.length === 0) {
      throw invalidArgument(`allow[${i}].ports: leave it out to allow every port, or list some`);
    }
    const ports = rule.ports?.map((p, j) => portSpan(p, `allow[${i}].ports[${j}]`));
    return { cidr: cidr.text, ...(ports ? { ports } : {}) };
  });
  return { mode, allow };
}

function subtract(ranges: readonly PortRange[], cut: readonly PortRange[]): PortRange[] {
  let left = [...ranges];
  for (const c of cut) {
    left = left.flatMap((r) => {
      if (c.protocol !== r.protocol || c.end < r.start || c.start > r.end) return [r];
      const parts: PortRange[] = [];
      if (c.start > r.start) parts.push({ ...r, end: c.start - 1 });
      if (c.end < r.end) parts.push({ ...r, start: c.end + 1 });
      return parts;
    });
  }
  return left;
}

/** One machine's egress set elements, as nft text, per set (ruleset.ts names them). */
export interface EgressElements {
  any4: string[];
  ports4: string[];
  any6: string[];
  ports6: string[];
}

/**
 * The elements that let a machine (by its source addresses, which the bridge rules guarantee) reach what
 * its app's policy allows: `<source> . <destination>` for destinations on every port, and `<source> .
 * <destination> . <tcp|udp> . <ports>` for the others. A machine without an IPv4 address gets no IPv4
 * elements.
 */
export function egressElements(
  sources: { v4?: string | undefined; v6: string },
  policy: EgressPolicyRecord = DEFAULT_EGRESS,
): EgressElements {
  const out: EgressElements = { any4: [], ports4: [], any6: [], ports6: [] };
  if (policy.mode === 'off') return out;
  const rules = policy.mode === 'on' ? [{ cidr: '0.0.0.0/0' }, { cidr: '::/0' }] : policy.allow;
  for (const family of [4, 6] as const) {
    const source = family === 4 ? sources.v4 : sources.v6;
    if (source === undefined) continue;
    const parsed = rules.flatMap((rule) => {
      const cidr = parseCidr(rule.cidr);
      if (!cidr) throw new HangarError('internal', `egress policy: "${rule.cidr}" is not a CIDR`);
      return cidr.family === family ? [{ cidr, ports: rule.ports }] : [];
    });
    const everyPort = disjointCidrs(parsed.filter((r) => r.ports === undefined).map((r) => r.cidr));
    const anyKey = family === 4 ? 'any4' : 'any6';
    const portsKey = family === 4 ? 'ports4' : 'ports6';
    out[anyKey] = everyPort.map((cidr) => `${source} . ${cidr.text}`);
    // Narrower destinations after wider ones; each loses the ports that wider ones (or an equal one
    // before it) already open, so no two elements overlap.
    const withPorts = parsed
      .filter((r) => r.ports !== undefined && !everyPort.some((c) => cidrContains(c, r.cidr)))
      .sort((a, b) => a.cidr.length - b.cidr.length);
    const placed: { cidr: Cidr; ranges: PortRange[] }[] = [];
    for (const rule of withPorts) {
      const wanted = mergeRanges(
        rule.ports!.flatMap((span) => (['tcp', 'udp'] as const).map((protocol) => ({ protocol, ...span }))),
      );
      const covered = placed.filter((p) => cidrContains(p.cidr, rule.cidr)).flatMap((p) => p.ranges);
      const ranges = subtract(wanted, covered);
      placed.push({ cidr: rule.cidr, ranges });
      for (const range of ranges) out[portsKey].push(`${source} . ${rule.cidr.text} . ${portRange(range)}`);
    }
    out[portsKey].sort();
  }
  return out;
}

/**
 * Networks no machine reaches unless the operator lists them (`network.egressLocal`): private,
 * shared, loopback, link-local, multicast and reserved space. The subnets of the host's own interfaces
 * are added to them at every rules apply (linux-net.ts).
 */
export const LOCAL_NETWORKS_V4 = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '224.0.0.0/4',
  '240.0.0.0/4',
];
export const LOCAL_NETWORKS_V6 = ['::/128', '::1/128', '::ffff:0:0/96', 'fc00::/7', 'fe80::/10', 'ff00::/8'];

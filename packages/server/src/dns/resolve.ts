import { formatIpv6, networkGroups } from '../sixpn/ipv6.js';
import type { DnsApp, DnsMachine, DnsNetwork, DnsSnapshot } from './view.js';

/**
 * The `.internal` and `.flycast` names of fly-semantics §4.4, answered from the DNS view for one caller.
 * Pure: the same question, view state and caller network always give the same answer.
 *
 * Scoping: every answer comes from the caller's network only. An app of another network is NXDOMAIN (not
 * REFUSED, which would confirm it exists), `_apps.internal` and `_instances.internal` list the caller's
 * network only, and `<app>.flycast` answers only with an address allocated in the caller's network.
 */

/** Short, as on Fly: machines start and stop all the time and DNS must follow within seconds. */
export const DNS_TTL_SECONDS = 5;

export type DnsRcode = 'NOERROR' | 'FORMERR' | 'SERVFAIL' | 'NXDOMAIN' | 'NOTIMP' | 'REFUSED';

export interface DnsQuestion {
  name: string;
  /** A record type as dns-packet names it: AAAA, TXT, A, ANY, SOA, UNKNOWN_65, … */
  type: string;
}

export interface SoaRecordData {
  mname: string;
  rname: string;
  serial: number;
  refresh: number;
  retry: number;
  expire: number;
  minimum: number;
}

export type DnsRecord =
  | { name: string; type: 'AAAA'; ttl: number; data: string }
  /** Character strings of at most 255 bytes each; clients join them. */
  | { name: string; type: 'TXT'; ttl: number; data: string[] }
  | { name: string; type: 'SOA'; ttl: number; data: SoaRecordData };

export interface DnsResolution {
  rcode: DnsRcode;
  answers: DnsRecord[];
  /** The zone's SOA on NXDOMAIN and NODATA answers (RFC 2308), so negative answers carry their TTL. */
  authorities: DnsRecord[];
  authoritative: boolean;
}

const ZONES = ['internal', 'flycast'] as const;
type Zone = (typeof ZONES)[number];

/** Lowercase, without the trailing dot: DNS names compare case-insensitively. */
export function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function zoneOf(normalized: string): Zone | undefined {
  for (const zone of ZONES) {
    if (normalized.endsWith(zone)) {
      const cut = normalized.length - zone.length;
      if (cut === 0 || normalized[cut - 1] === '.') return zone;
    }
  }
  return undefined;
}

/** Whether the name is Hangar's to answer; every other name goes to the host's resolver. */
export function isLocalName(name: string): boolean {
  return zoneOf(normalizeName(name)) !== undefined;
}

/** Splits TXT text into character strings of at most 255 bytes, never inside a UTF-8 sequence. */
export function splitTxt(text: string): string[] {
  const parts: string[] = [];
  let current = '';
  let bytes = 0;
  for (const char of text) {
    const size = Buffer.byteLength(char);
    if (bytes + size > 255) {
      parts.push(current);
      current = '';
      bytes = 0;
    }
    current += char;
    bytes += size;
  }
  parts.push(current);
  return parts;
}

/** `<network /48>::3`: the per-network service address (DNS, and the Machines API on port 4280). */
export function serviceAddress(networkId: number): string {
  const [hi, lo] = networkGroups(networkId);
  return formatIpv6([0xfdaa, hi, lo, 0, 0, 0, 0, 3]);
}

/** What a name holds: nothing at all (NXDOMAIN), or a record set (possibly empty: NODATA for every type). */
type Lookup =
  | { kind: 'nxdomain' }
  | { kind: 'empty' }
  | { kind: 'apex' }
  | { kind: 'aaaa'; addresses: string[] }
  | { kind: 'txt'; text: string };

const NXDOMAIN: Lookup = { kind: 'nxdomain' };
const EMPTY: Lookup = { kind: 'empty' };

// Which machines a name can see. A machine being destroyed is already gone for DNS; one without a 6PN
// address exists (its names are NODATA, not NXDOMAIN) but has nothing to answer with.
const live = (m: DnsMachine) => m.state !== 'destroyed' && m.state !== 'destroying';
const addressable = (m: DnsMachine) => live(m) && m.privateIp !== null;
const started = (m: DnsMachine) => addressable(m) && m.state === 'started';

/**
 * The app's machines passing `keep`, by id: answers must not depend on the order in which the view
 * learned about machines (a full read and a replayed feed would otherwise differ).
 */
function machinesOf(app: DnsApp, keep: (m: DnsMachine) => boolean): DnsMachine[] {
  const list: DnsMachine[] = [];
  for (const machine of app.machines.values()) if (keep(machine)) list.push(machine);
  return list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** AAAA for the started machines among those `match` selects; NXDOMAIN when no live machine matches. */
function aaaaWhere(app: DnsApp, match: (m: DnsMachine) => boolean): Lookup {
  const matching = machinesOf(app, (m) => live(m) && match(m));
  if (matching.length === 0) return NXDOMAIN;
  return { kind: 'aaaa', addresses: matching.filter(started).map((m) => m.privateIp!) };
}

const txt = (text: string): Lookup => (text === '' ? EMPTY : { kind: 'txt', text });

function vmsText(machines: DnsMachine[]): string {
  return machines.map((m) => `${m.id} ${m.region}`).join(',');
}

function regionsText(machines: DnsMachine[]): string {
  return [...new Set(machines.map((m) => m.region))].sort().join(',');
}

function instancesText(network: DnsNetwork, keep: (m: DnsMachine) => boolean): string {
  const apps = [...network.apps.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  return apps
    .flatMap((app) =>
      machinesOf(app, keep).map(
        (m) => `instance=${m.id},app=${app.name},ip=${m.privateIp},region=${m.region}`,
      ),
    )
    .join(';');
}

/** Names under `<app>.internal`; `prefix` is the labels left of the app name. */
function lookupInApp(app: DnsApp, prefix: string[]): Lookup {
  const [first, second, third, fourth] = prefix;
  switch (prefix.length) {
    case 0:
      return { kind: 'aaaa', addresses: machinesOf(app, started).map((m) => m.privateIp!) };
    case 1:
      if (first === 'global') return lookupInApp(app, []);
      if (first === 'vms') return txt(vmsText(machinesOf(app, started)));
      if (first === 'regions') return txt(regionsText(machinesOf(app, started)));
      return aaaaWhere(app, (m) => m.region.toLowerCase() === first);
    case 2:
      if (first === 'all' && second === 'vms') return txt(vmsText(machinesOf(app, addressable)));
      if (first === 'all' && second === 'regions') return txt(regionsText(machinesOf(app, addressable)));
      if (second === 'vm') return aaaaWhere(app, (m) => m.id.toLowerCase() === first);
      if (second === 'process') return aaaaWhere(app, (m) => m.processGroup.toLowerCase() === first);
      return NXDOMAIN;
    case 3: {
      // One host is one region, so every started machine is equally near: the first N by id.
      const count = /^top([1-9][0-9]{0,5})$/.exec(first!)?.[1];
      if (count === undefined || second !== 'nearest' || third !== 'of') return NXDOMAIN;
      return {
        kind: 'aaaa',
        addresses: machinesOf(app, started)
          .slice(0, Number(count))
          .map((m) => m.privateIp!),
      };
    }
    case 4:
      if (third !== 'kv' || fourth !== '_metadata') return NXDOMAIN;
      return aaaaWhere(app, (m) =>
        Object.entries(m.metadata).some(([k, v]) => k.toLowerCase() === second && v.toLowerCase() === first),
      );
    default:
      return NXDOMAIN;
  }
}

function lookupInternal(labels: string[], network: DnsNetwork): Lookup {
  // labels excludes the trailing "internal".
  if (labels.length === 0) return { kind: 'apex' };
  const last = labels[labels.length - 1]!;
  const prefix = labels.slice(0, -1);
  switch (last) {
    case '_apps':
      if (prefix.length > 0) return NXDOMAIN;
      return txt([...network.apps.keys()].sort().join(','));
    case '_instances':
      if (prefix.length === 0) return txt(instancesText(network, started));
      if (prefix.length === 1 && prefix[0] === 'all') return txt(instancesText(network, addressable));
      return NXDOMAIN;
    case '_api':
      return prefix.length === 0 ? { kind: 'aaaa', addresses: [serviceAddress(network.id)] } : NXDOMAIN;
    case '_peer':
      // Hangar has no WireGuard peers yet: the list exists and is empty, and no peer name exists.
      return prefix.length === 0 ? EMPTY : NXDOMAIN;
    default: {
      const app = network.apps.get(last);
      return app ? lookupInApp(app, prefix) : NXDOMAIN;
    }
  }
}

function lookupFlycast(labels: string[], network: DnsNetwork, view: DnsSnapshot): Lookup {
  if (labels.length === 0) return { kind: 'apex' };
  if (labels.length !== 1) return NXDOMAIN;
  // The app may live in any network; what matters is an address allocated in the caller's. Without one
  // the name does not exist for this caller, even for an app of its own network.
  const app = view.appByName(labels[0]!);
  const addresses = app ? network.flycast.get(app.id) : undefined;
  if (!addresses || addresses.size === 0) return NXDOMAIN;
  return { kind: 'aaaa', addresses: [...addresses].sort() };
}

function soa(zone: Zone, revision: number): DnsRecord {
  return {
    name: zone,
    type: 'SOA',
    ttl: DNS_TTL_SECONDS,
    data: {
      mname: zone,
      rname: `hostmaster.${zone}`,
      serial: revision % 2 ** 32,
      refresh: 60,
      retry: 60,
      expire: 3600,
      minimum: DNS_TTL_SECONDS,
    },
  };
}

export function resolve(
  question: DnsQuestion,
  view: DnsSnapshot,
  callerNetworkId: number | undefined,
): DnsResolution {
  const normalized = normalizeName(question.name);
  const zone = zoneOf(normalized);
  const network = callerNetworkId === undefined ? undefined : view.network(callerNetworkId);
  // Outside the zones the server forwards instead; a caller from no known 6PN network gets nothing at all.
  if (!zone || !network) return { rcode: 'REFUSED', answers: [], authorities: [], authoritative: false };

  const labels = normalized === zone ? [] : normalized.slice(0, -(zone.length + 1)).split('.');
  const found = zone === 'internal' ? lookupInternal(labels, network) : lookupFlycast(labels, network, view);
  const negative = (rcode: DnsRcode): DnsResolution => ({
    rcode,
    answers: [],
    authorities: [soa(zone, view.revision)],
    authoritative: true,
  });
  if (found.kind === 'nxdomain') return negative('NXDOMAIN');

  // Answers carry the name as asked: resolvers that randomize letter case compare it byte for byte.
  const name = question.name.endsWith('.') ? question.name.slice(0, -1) : question.name;
  const type = question.type.toUpperCase();
  const wants = (recordType: string) => type === recordType || type === 'ANY';
  let answers: DnsRecord[] = [];
  if (found.kind === 'aaaa' && wants('AAAA')) {
    answers = found.addresses.map((data) => ({ name, type: 'AAAA', ttl: DNS_TTL_SECONDS, data }));
  } else if (found.kind === 'txt' && wants('TXT')) {
    answers = [{ name, type: 'TXT', ttl: DNS_TTL_SECONDS, data: splitTxt(found.text) }];
  } else if (found.kind === 'apex' && wants('SOA')) {
    answers = [{ ...soa(zone, view.revision), name }];
  }
  if (answers.length === 0) return negative('NOERROR');
  return { rcode: 'NOERROR', answers, authorities: [], authoritative: true };
}

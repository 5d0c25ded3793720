import net from 'node:net';
import { HangarError } from '../shared/errors.js';
import { parseIpv6 } from '../sixpn/ipv6.js';

/**
 * The PROXY protocol header (HAProxy's spec) the `proxy_proto` handler prepends towards the machine, so
 * the app learns the client's address and the address it connected to: version 1 (text, the default)
 * or version 2 (binary, `proxy_proto_options.version = "v2"`). Pure.
 */

export interface Endpoint {
  address: string;
  port: number;
}

/** The 12 bytes every version 2 header starts with. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Version 2, command PROXY. */
const V2_PROXY = 0x21;
const V2_TCP4 = 0x11;
const V2_TCP6 = 0x21;

/** An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as plain IPv4. */
function unmapped(address: string): string {
  return address.toLowerCase().startsWith('::ffff:') && net.isIPv4(address.slice(7))
    ? address.slice(7)
    : address;
}

export function proxyHeader(version: 'v1' | 'v2', source: Endpoint, destination: Endpoint): Buffer {
  const from = unmapped(source.address);
  const to = unmapped(destination.address);
  const ipv4 = net.isIPv4(from) && net.isIPv4(to);
  if (version === 'v1') {
    const family = ipv4 ? 'TCP4' : 'TCP6';
    const [a, b] = ipv4 ? [from, to] : [asIpv6(from), asIpv6(to)];
    return Buffer.from(`PROXY ${family} ${a} ${b} ${source.port} ${destination.port}\r\n`, 'latin1');
  }
  const addresses = ipv4
    ? Buffer.concat([ipv4Bytes(from), ipv4Bytes(to)])
    : Buffer.concat([ipv6Bytes(asIpv6(from)), ipv6Bytes(asIpv6(to))]);
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(source.port, 0);
  ports.writeUInt16BE(destination.port, 2);
  const head = Buffer.alloc(4);
  head[0] = V2_PROXY;
  head[1] = ipv4 ? V2_TCP4 : V2_TCP6;
  head.writeUInt16BE(addresses.length + ports.length, 2);
  return Buffer.concat([V2_SIGNATURE, head, addresses, ports]);
}

/** One side IPv4 and the other IPv6 does not happen on one socket; IPv4 is then written mapped. */
function asIpv6(address: string): string {
  return net.isIPv4(address) ? `::ffff:${address}` : address;
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

function ipv6Bytes(address: string): Buffer {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped)
    return Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), ipv4Bytes(mapped[1]!)]);
  const groups = parseIpv6(address.replace(/%.*$/, ''));
  if (!groups) throw new HangarError('internal', `not an IPv6 address: ${address}`);
  const bytes = Buffer.alloc(16);
  for (const [index, group] of groups.entries()) bytes.writeUInt16BE(group, index * 2);
  return bytes;
}

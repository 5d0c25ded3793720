import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

/** A small real DNS client for tests: node:dgram / node:net with dns-packet, nothing of the server's. */

export interface Endpoint {
  host: string;
  port: number;
}

let nextId = 1;

export function query(name: string, type: dnsPacket.RecordType, extra: Partial<dnsPacket.Packet> = {}) {
  nextId = (nextId % 0xffff) + 1;
  const packet: dnsPacket.Packet = {
    type: 'query',
    id: nextId,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: 'IN' }],
    ...extra,
  };
  return packet;
}

/** EDNS: an OPT record offering `size` bytes over UDP. */
export function edns(size: number): dnsPacket.Answer {
  return {
    type: 'OPT',
    name: '.',
    udpPayloadSize: size,
    extendedRcode: 0,
    ednsVersion: 0,
    flags: 0,
    flag_do: false,
    options: [],
  };
}

/** Sends raw bytes over UDP; the first reply, or undefined when none came within `timeoutMs`. */
export function udpRaw(to: Endpoint, message: Buffer, timeoutMs = 2000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket(net.isIPv6(to.host) ? 'udp6' : 'udp4');
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    function finish(reply: Buffer | undefined) {
      clearTimeout(timer);
      socket.close();
      resolve(reply);
    }
    socket.on('message', (reply) => finish(reply));
    socket.on('error', () => finish(undefined));
    socket.send(message, to.port, to.host);
  });
}

export async function udpQuery(to: Endpoint, packet: dnsPacket.Packet, timeoutMs = 2000) {
  const reply = await udpRaw(to, dnsPacket.encode(packet), timeoutMs);
  if (!reply) throw new Error(`no UDP reply from ${to.host}:${to.port}`);
  return dnsPacket.decode(reply);
}

/**
 * One TCP connection; writes every message (length-prefixed) in one go, or byte by byte with
 * `dribble`, and collects `expect` replies.
 */
export function tcpExchange(
  to: Endpoint,
  messages: Buffer[],
  expect: number,
  options: { dribble?: boolean; timeoutMs?: number } = {},
): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: to.host, port: to.port });
    const replies: Buffer[] = [];
    let buffered = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`TCP: ${replies.length} of ${expect} replies before the timeout`));
    }, options.timeoutMs ?? 3000);
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('connect', async () => {
      const framed = Buffer.concat(
        messages.map((message) => {
          const length = Buffer.alloc(2);
          length.writeUInt16BE(message.length);
          return Buffer.concat([length, message]);
        }),
      );
      if (!options.dribble) {
        socket.write(framed);
        return;
      }
      for (const byte of framed) {
        socket.write(Buffer.from([byte]));
        await new Promise((r) => setImmediate(r));
      }
    });
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const length = buffered.readUInt16BE(0);
        replies.push(buffered.subarray(2, 2 + length));
        buffered = buffered.subarray(2 + length);
      }
      if (replies.length >= expect) {
        clearTimeout(timer);
        socket.destroy();
        resolve(replies);
      }
    });
  });
}

export const rcodeOf = (packet: dnsPacket.DecodedPacket) => (packet as unknown as { rcode: string }).rcode;
export const dataOf = (packet: dnsPacket.DecodedPacket) =>
  (packet.answers ?? []).map((answer) => {
    const value = (answer as { data: unknown }).data;
    return Array.isArray(value) ? Buffer.concat(value as Buffer[]).toString() : value;
  });

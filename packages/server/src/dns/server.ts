import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { HangarError } from '../shared/errors.js';
import { networkIdOf } from '../sixpn/address-plan.js';
import { type DnsEndpoint, Forwarder, readResolvConf } from './forward.js';
import { type DnsRcode, type DnsRecord, isLocalName, resolve } from './resolve.js';
import type { DnsSnapshot } from './view.js';
import { encodeReply, MessageTooLongError, questionBytes, type ReplyParts } from './wire.js';

/**
 * The DNS server machines use (`fdaa::3` inside a machine, `<network /48>::3` for the rest of a network):
 * UDP and TCP on each listen address, `.internal`/`.flycast` answered from the view for the caller's
 * network, everything else relayed to the host's resolvers. It never throws on input: what cannot be
 * parsed is dropped (no header) or answered FORMERR (a header but a broken body).
 */

export interface DnsServerOptions {
  view: { snapshot(): DnsSnapshot };
  /** IP literals. Port 0 picks one free port, the same for UDP and TCP. */
  addresses: DnsEndpoint[];
  /** Default: the nameservers of /etc/resolv.conf, port 53. */
  forwardTo?: DnsEndpoint[];
  /** The caller's network from its source address. Default: the 6PN rule (`networkIdOf`). */
  networkOf?: (sourceAddress: string) => number | undefined;
  /** Per upstream, before the next one is tried (default 2000). */
  forwardTimeoutMs?: number;
  /**
   * Whether names outside `.internal`/`.flycast` are relayed at all (default true). Off, they get
   * REFUSED: with egress off, forwarding would be a way out of the machine (data in query names).
   */
  forward?: boolean;
  /** Forwarded queries waiting at once: per network (default 256) and in all (default 4096). */
  forwardPendingPerNetwork?: number;
  forwardMaxPending?: number;
  /** A TCP connection with no query for this long is closed (default 10000). */
  tcpIdleTimeoutMs?: number;
  /** Told about failures that are not the client's fault (an answer that cannot be encoded, a socket error). */
  onError?: (error: Error) => void;
}

type DnsTransport = 'udp' | 'tcp';

const RCODES: Record<DnsRcode, number> = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
};

const QR = 0x8000;
const OPCODE_MASK = 0x7800;
const AA = 0x0400;
const TC = 0x0200;
const RD = 0x0100;
const RA = 0x0080;
const CD = 0x0010;

/** Without EDNS a UDP reply must fit 512 bytes (RFC 1035). */
const CLASSIC_UDP_SIZE = 512;
/**
 * The most we send over UDP even when a client offers more: 1232 bytes fits every IPv6 path without
 * fragmentation (the DNS Flag Day 2020 figure); larger answers go over TCP.
 */
const MAX_UDP_SIZE = 1232;
/** A TCP client that stops reading while pipelining queries is cut off beyond this much unsent output. */
const MAX_TCP_BACKLOG = 1 << 20;
const MAX_TCP_CONNECTIONS = 1024;

type Reply = (message: Buffer) => void;

interface Listener {
  host: string;
  port: number;
  udp: dgram.Socket;
  tcp: net.Server;
}

/** A reply with only a header (no question echoed): for a body that could not be parsed, or a refusal of its kind. */
function headerOnly(query: Buffer, rcode: DnsRcode): Buffer {
  const reply = Buffer.alloc(12);
  reply.writeUInt16BE(query.readUInt16BE(0), 0);
  const flags = query.readUInt16BE(2);
  reply.writeUInt16BE(QR | (flags & (OPCODE_MASK | RD)) | RA | RCODES[rcode], 2);
  return reply;
}

function frame(message: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(message.length);
  return Buffer.concat([length, message]);
}

export class DnsServer {
  readonly #view: { snapshot(): DnsSnapshot };
  readonly #addresses: DnsEndpoint[];
  readonly #networkOf: (sourceAddress: string) => number | undefined;
  readonly #tcpIdleTimeoutMs: number;
  readonly #onError: (error: Error) => void;
  readonly #forwarder: Forwarder;
  readonly #forward: boolean;
  readonly #listeners: Listener[] = [];
  readonly #connections = new Set<net.Socket>();
  #started = false;
  #closed = false;

  constructor(options: DnsServerOptions) {
    for (const { host } of options.addresses) {
      if (!net.isIP(host))
        throw new HangarError('invalid_argument', `DNS listen address "${host}" is not an IP address`);
    }
    this.#view = options.view;
    this.#addresses = options.addresses;
    this.#networkOf = options.networkOf ?? networkIdOf;
    this.#tcpIdleTimeoutMs = options.tcpIdleTimeoutMs ?? 10_000;
    this.#onError = options.onError ?? (() => {});
    this.#forward = options.forward ?? true;
    this.#forwarder = new Forwarder({
      upstreams: this.#forward ? (options.forwardTo ?? readResolvConf()) : [],
      timeoutMs: options.forwardTimeoutMs ?? 2000,
      ...(options.forwardPendingPerNetwork !== undefined
        ? { pendingPerNetwork: options.forwardPendingPerNetwork }
        : {}),
      ...(options.forwardMaxPending !== undefined ? { maxPending: options.forwardMaxPending } : {}),
    });
  }

  async start(): Promise<void> {
    if (this.#closed) throw new HangarError('internal', 'the DNS server is closed');
    if (this.#started) return;
    this.#started = true;
    try {
      for (const address of this.#addresses) this.#listeners.push(await this.#listen(address));
    } catch (error) {
      await this.close();
      throw error;
    }
  }

  /**
   * Listens on one more address after start: a network created later gets its `<network /48>::3`.
   * (Networks are never deleted, so there is no removal.) Returns the endpoint as bound.
   */
  async addAddress(address: DnsEndpoint): Promise<DnsEndpoint> {
    if (!this.#started || this.#closed) throw new HangarError('internal', 'the DNS server is not running');
    if (!net.isIP(address.host))
      throw new HangarError('invalid_argument', `DNS listen address "${address.host}" is not an IP address`);
    const listener = await this.#listen(address);
    if (this.#closed) {
      await closeListener(listener);
      throw new HangarError('internal', 'the DNS server was closed while it bound a new address');
    }
    this.#listeners.push(listener);
    return { host: listener.host, port: listener.port };
  }

  /** Where it listens, with the ports actually bound (UDP and TCP share each one). */
  listening(): DnsEndpoint[] {
    return this.#listeners.map(({ host, port }) => ({ host, port }));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#forwarder.close();
    for (const socket of this.#connections) socket.destroy();
    this.#connections.clear();
    const listeners = this.#listeners.splice(0);
    await Promise.all(listeners.map((listener) => closeListener(listener)));
  }

  /**
   * Binds UDP first, then TCP on the port UDP got. With port 0, that TCP port may be taken by someone
   * else: then both are released and another port is tried.
   */
  async #listen({ host, port }: DnsEndpoint): Promise<Listener> {
    const ipv6 = net.isIPv6(host);
    for (let attempt = 1; ; attempt++) {
      // ipv6Only keeps an IPv6 wildcard from also taking the IPv4 port another listen address may want.
      const udp = dgram.createSocket({ type: ipv6 ? 'udp6' : 'udp4', ipv6Only: ipv6 });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind({ address: host, port, exclusive: true }, () => {
            udp.off('error', reject);
            resolve();
          });
        });
      } catch (error) {
        udp.close();
        throw error;
      }
      const bound = udp.address().port;
      const tcp = net.createServer((socket) => this.#onConnection(socket));
      tcp.maxConnections = MAX_TCP_CONNECTIONS;
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen({ host, port: bound, ipv6Only: ipv6, exclusive: true }, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (error) {
        udp.close();
        if (port === 0 && (error as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 10) continue;
        throw error;
      }
      udp.on('error', (error) => this.#onError(error));
      tcp.on('error', (error) => this.#onError(error));
      udp.on('message', (message, remote) => {
        this.#handle(message, remote.address, 'udp', (reply) => {
          if (this.#closed) return;
          try {
            udp.send(reply, remote.port, remote.address, () => {});
          } catch (error) {
            this.#onError(error as Error);
          }
        });
      });
      return { host, port: bound, udp, tcp };
    }
  }

  #onConnection(socket: net.Socket): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    this.#connections.add(socket);
    const source = socket.remoteAddress ?? '';
    let buffered: Buffer = Buffer.alloc(0);
    socket.setTimeout(this.#tcpIdleTimeoutMs, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.#connections.delete(socket));
    const reply: Reply = (message) => {
      if (socket.destroyed || message.length > 0xffff) return;
      socket.write(frame(message));
      if (socket.writableLength > MAX_TCP_BACKLOG) socket.destroy();
    };
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      // Several queries may arrive in one chunk, or one query across chunks (RFC 7766 pipelining).
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const message = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        this.#handle(message, source, 'tcp', reply);
      }
    });
  }

  /** Answers one message; `reply` is called at most once, synchronously for local names. */
  #handle(query: Buffer, source: string, transport: DnsTransport, reply: Reply): void {
    // No header: nothing to answer to. A response: never answer one (that is how reflection loops start).
    if (query.length < 12 || (query[2]! & 0x80) !== 0) return;
    let packet: dnsPacket.DecodedPacket;
    try {
      packet = dnsPacket.decode(query);
    } catch {
      reply(headerOnly(query, 'FORMERR'));
      return;
    }
    try {
      this.#answer(query, packet, source, transport, reply);
    } catch (error) {
      this.#onError(error as Error);
      reply(headerOnly(query, 'SERVFAIL'));
    }
  }

  #answer(
    query: Buffer,
    packet: dnsPacket.DecodedPacket,
    source: string,
    transport: DnsTransport,
    reply: Reply,
  ): void {
    const flags = packet.flags ?? 0;
    if ((flags & OPCODE_MASK) !== 0) {
      reply(headerOnly(query, 'NOTIMP'));
      return;
    }
    const questions = packet.questions ?? [];
    if (questions.length !== 1) {
      reply(headerOnly(query, 'FORMERR'));
      return;
    }
    const question = questions[0]!;
    const questionSection = questionBytes(query);
    if (!questionSection) {
      reply(headerOnly(query, 'FORMERR'));
      return;
    }
    const opt = (packet.additionals ?? []).find((record) => record.type === 'OPT') as
      | dnsPacket.OptAnswer
      | undefined;
    const udpLimit = opt
      ? Math.min(Math.max(opt.udpPayloadSize, CLASSIC_UDP_SIZE), MAX_UDP_SIZE)
      : CLASSIC_UDP_SIZE;
    const respond = (
      rcode: DnsRcode,
      authoritative: boolean,
      answers: readonly DnsRecord[] = [],
      authorities: readonly DnsRecord[] = [],
    ) => {
      const parts: ReplyParts = {
        id: packet.id ?? 0,
        flags: QR | (flags & (OPCODE_MASK | RD | CD)) | RA | (authoritative ? AA : 0) | RCODES[rcode],
        question: questionSection,
        questionName: question.name,
        answers,
        authorities,
        ...(opt ? { ednsUdpSize: MAX_UDP_SIZE } : {}),
      };
      let full: Buffer | undefined;
      try {
        full = encodeReply(parts);
      } catch (error) {
        if (!(error instanceof MessageTooLongError)) throw error;
      }
      if (full && (transport === 'tcp' || full.length <= udpLimit)) {
        reply(full);
      } else if (transport === 'udp') {
        // Too big for this client over UDP: say so (TC) with the question only; it retries over TCP.
        reply(encodeReply({ ...parts, flags: parts.flags | TC, answers: [], authorities: [] }));
      } else {
        // Over 65535 bytes: no transport can carry it.
        this.#onError(new MessageTooLongError());
        reply(headerOnly(query, 'SERVFAIL'));
      }
    };

    const callerNetwork = this.#networkOf(source);
    if (!isLocalName(question.name)) {
      // Recursion only for callers on a 6PN network, so a listener exposed by mistake is no open resolver.
      // And none while forwarding is off (egress off), or for a machine whose app's egress is off:
      // REFUSED says so at once.
      if (
        callerNetwork === undefined ||
        !this.#forward ||
        this.#view.snapshot().egressOff?.(source) === true
      ) {
        respond('REFUSED', false);
        return;
      }
      this.#forwarder
        .forward(query, transport === 'tcp', callerNetwork)
        .then((answer) => (answer ? reply(answer) : respond('SERVFAIL', false)))
        // Nothing may reject unhandled here: on Node 20 that ends the process.
        .catch((error: Error) => this.#onError(error));
      return;
    }
    if (question.class !== undefined && question.class !== 'IN' && question.class !== 'ANY') {
      respond('REFUSED', false);
      return;
    }
    const result = resolve(question, this.#view.snapshot(), callerNetwork);
    respond(result.rcode, result.authoritative, result.answers, result.authorities);
  }
}

function closeListener({ udp, tcp }: Listener): Promise<void> {
  return new Promise((resolve) => {
    let pending = 2;
    const done = () => {
      pending -= 1;
      if (pending === 0) resolve();
    };
    udp.close(done);
    tcp.close(() => done());
  });
}

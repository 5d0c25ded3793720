import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { formatIpv6, parseIpv6 } from '../sixpn/ipv6.js';
import { DNS_PORT } from '../sixpn/resolver.js';
import { questionBytes } from './wire.js';

/**
 * Relays queries for names outside `.internal`/`.flycast` to the host's resolvers. Each query goes out with
 * a fresh random id (clients' ids collide with each other and are often predictable); the client's id is
 * written back into the reply. A reply is taken only from the upstream it was sent to, with the same id and
 * the same question bytes (letter case included), so a blind spoofer has to guess more than 16 bits.
 */

export interface DnsEndpoint {
  host: string;
  port: number;
}

export interface ForwarderOptions {
  upstreams: DnsEndpoint[];
  /** How long to wait for one upstream before trying the next. */
  timeoutMs: number;
  /** Queries of all networks waiting for an upstream at once (default 4096). */
  maxPending?: number;
  /**
   * Queries of one network waiting at once (default 256): a flood from one network fills its own
   * share, never the others'.
   */
  pendingPerNetwork?: number;
}

/** Bounds the memory a flood of forwarded queries can pin; beyond it the client gets SERVFAIL at once. */
const MAX_PENDING = 4096;
const PENDING_PER_NETWORK = 256;

interface Pending {
  upstream: DnsEndpoint;
  question: Buffer;
  clientId: number;
  timer: NodeJS.Timeout;
  done: (reply: Buffer | undefined) => void;
}

/** The nameservers of a resolv.conf (port 53), in order; none when the file is missing or lists none. */
export function readResolvConf(path = '/etc/resolv.conf'): DnsEndpoint[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const servers: DnsEndpoint[] = [];
  for (const line of text.split('\n')) {
    const [keyword, address] = line.trim().split(/\s+/);
    if (keyword === 'nameserver' && address && net.isIP(address.split('%')[0]!)) {
      servers.push({ host: address, port: DNS_PORT });
    }
  }
  return servers;
}

/** Addresses compare as text only after RFC 5952 normalization (`0:0::1` and `::1` are one upstream). */
function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  const pa = parseIpv6(a.split('%')[0]!);
  const pb = parseIpv6(b.split('%')[0]!);
  return pa !== undefined && pb !== undefined && formatIpv6(pa) === formatIpv6(pb);
}

export class Forwarder {
  readonly #upstreams: DnsEndpoint[];
  readonly #timeoutMs: number;
  readonly #sockets = new Map<'udp4' | 'udp6', dgram.Socket>();
  readonly #pending = new Map<number, Pending>();
  readonly #tcpSockets = new Set<net.Socket>();
  readonly #maxPending: number;
  readonly #pendingPerNetwork: number;
  /** Forwards in flight per network (UDP and TCP alike). */
  readonly #inFlight = new Map<number, number>();
  #closed = false;

  constructor(options: ForwarderOptions) {
    this.#upstreams = options.upstreams;
    this.#timeoutMs = options.timeoutMs;
    this.#maxPending = options.maxPending ?? MAX_PENDING;
    this.#pendingPerNetwork = options.pendingPerNetwork ?? PENDING_PER_NETWORK;
  }

  /**
   * The upstream's reply with the client's id, or undefined when no upstream answered in time. With
   * `retryTruncatedOverTcp` (the client asked over TCP, so it cannot fall back itself), a truncated UDP
   * reply is fetched again over TCP from the same upstream. `network` is the caller's: past its share
   * of waiting queries, undefined at once.
   */
  async forward(query: Buffer, retryTruncatedOverTcp: boolean, network: number): Promise<Buffer | undefined> {
    const question = questionBytes(query);
    if (!question) return undefined;
    const inFlight = this.#inFlight.get(network) ?? 0;
    if (inFlight >= this.#pendingPerNetwork) return undefined;
    this.#inFlight.set(network, inFlight + 1);
    try {
      return await this.#forward(query, question, retryTruncatedOverTcp);
    } finally {
      const left = (this.#inFlight.get(network) ?? 1) - 1;
      if (left > 0) this.#inFlight.set(network, left);
      else this.#inFlight.delete(network);
    }
  }

  async #forward(
    query: Buffer,
    question: Buffer,
    retryTruncatedOverTcp: boolean,
  ): Promise<Buffer | undefined> {
    for (const upstream of this.#upstreams) {
      if (this.#closed) return undefined;
      const reply = await this.#overUdp(query, question, upstream);
      if (!reply) continue;
      if (retryTruncatedOverTcp && (reply[2]! & 0x02) !== 0) {
        const full = await this.#overTcp(query, upstream).catch(() => undefined);
        if (full) return full;
      }
      return reply;
    }
    return undefined;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.done(undefined);
    }
    this.#pending.clear();
    for (const socket of this.#sockets.values()) socket.close();
    this.#sockets.clear();
    for (const socket of this.#tcpSockets) socket.destroy();
    this.#tcpSockets.clear();
  }

  #socket(family: 'udp4' | 'udp6'): dgram.Socket {
    let socket = this.#sockets.get(family);
    if (!socket) {
      socket = dgram.createSocket(family);
      // An ICMP error or a send failure must not take the daemon down; the query just times out.
      socket.on('error', () => {});
      socket.on('message', (message, remote) => this.#onReply(message, remote));
      this.#sockets.set(family, socket);
    }
    return socket;
  }

  #onReply(message: Buffer, remote: dgram.RemoteInfo): void {
    if (message.length < 12 || (message[2]! & 0x80) === 0) return;
    const id = message.readUInt16BE(0);
    const pending = this.#pending.get(id);
    if (!pending) return;
    if (remote.port !== pending.upstream.port || !sameAddress(remote.address, pending.upstream.host)) return;
    if (!pending.question.equals(questionBytes(message) ?? Buffer.alloc(0))) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    const reply = Buffer.from(message);
    reply.writeUInt16BE(pending.clientId, 0);
    pending.done(reply);
  }

  #overUdp(query: Buffer, question: Buffer, upstream: DnsEndpoint): Promise<Buffer | undefined> {
    if (this.#pending.size >= this.#maxPending) return Promise.resolve(undefined);
    let id = randomInt(0x10000);
    while (this.#pending.has(id)) id = randomInt(0x10000);
    const outgoing = Buffer.from(query);
    outgoing.writeUInt16BE(id, 0);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve(undefined);
      }, this.#timeoutMs);
      this.#pending.set(id, { upstream, question, clientId: query.readUInt16BE(0), timer, done: resolve });
      const family = net.isIPv6(upstream.host.split('%')[0]!) ? 'udp6' : 'udp4';
      this.#socket(family).send(outgoing, upstream.port, upstream.host, (error) => {
        if (!error) return;
        // Unreachable upstream: give up on it now rather than at the timeout.
        if (this.#pending.get(id)?.timer === timer) {
          this.#pending.delete(id);
          clearTimeout(timer);
          resolve(undefined);
        }
      });
    });
  }

  /** One query over a fresh TCP connection (RFC 7766 framing: a 2-byte length before each message). */
  #overTcp(query: Buffer, upstream: DnsEndpoint): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const socket = net.connect({ host: upstream.host, port: upstream.port });
      this.#tcpSockets.add(socket);
      let received = Buffer.alloc(0);
      const finish = (reply: Buffer | undefined) => {
        this.#tcpSockets.delete(socket);
        socket.destroy();
        resolve(reply);
      };
      socket.setTimeout(this.#timeoutMs, () => finish(undefined));
      socket.on('error', () => finish(undefined));
      socket.on('close', () => finish(undefined));
      socket.on('connect', () => {
        const length = Buffer.alloc(2);
        length.writeUInt16BE(query.length);
        socket.write(Buffer.concat([length, query]));
      });
      socket.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        if (received.length < 2) return;
        const size = received.readUInt16BE(0);
        if (received.length >= 2 + size) finish(Buffer.from(received.subarray(2, 2 + size)));
      });
    });
  }
}

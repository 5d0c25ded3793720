import { isIP, type Socket, connect as tcpConnect } from 'node:net';
import type { Principal } from '../auth/tokens.js';
import { normalizeName, resolve as resolveName } from '../dns/resolve.js';
import type { DnsSnapshot } from '../dns/view.js';
import { HangarError } from '../shared/errors.js';
import { networkIdOf } from '../sixpn/address-plan.js';
import { formatIpv6, parseIpv6 } from '../sixpn/ipv6.js';
import { appFor, type PlatformContext } from './context.js';

/**
 * Tunnels: a TCP connection from a client of the API into an app's private network (`hangar proxy`).
 *
 * The host dials, not a machine: the host reaches every machine and Flycast address, so every destination
 * is checked here against the store before the dial, and only two kinds pass (docs/security.md, Tunnels):
 * - the 6PN address of a machine (not destroyed) whose app lives in the caller app's network;
 * - a Flycast address allocated in that network (the host's proxy answers on it, which applies the
 *   services' own rules as for a machine of that network).
 * A name must be `.internal` or `.flycast` and is answered by Hangar's DNS view for that network (never the
 * host's resolver); its addresses then pass the same check. Everything else (IPv4, the network's `::3`,
 * the bridge's `::1`, other networks, loopback, host or outside addresses) is refused before any packet.
 */

/** The DNS view's handle (dns/view.ts): the snapshot current at each question. */
export interface NameView {
  snapshot(): DnsSnapshot;
}

export interface TunnelRequest {
  host: string;
  port: number;
}

export interface OpenTunnel {
  socket: Socket;
  /** The address dialled, for the client's message. */
  address: string;
}

/** How long the dial may take before the tunnel is refused (a machine that is down never answers). */
const DIAL_TIMEOUT_MS = 10_000;

const canonical = (address: string): string | undefined => {
  const groups = parseIpv6(address.replace(/^\[|\]$/g, ''));
  return groups ? formatIpv6(groups) : undefined;
};

export class TunnelsService {
  readonly #ctx: PlatformContext;
  #names: NameView | undefined;

  constructor(ctx: PlatformContext) {
    this.#ctx = ctx;
  }

  /** Hangar's DNS view, once the host's DNS runs; until then names are refused (addresses still work). */
  useNames(names: NameView): void {
    this.#names = names;
  }

  /** Checks the destination, dials it and resolves once connected. The caller owns the socket. */
  async open(principal: Principal, appName: string, request: TunnelRequest): Promise<OpenTunnel> {
    if (!Number.isInteger(request.port) || request.port < 1 || request.port > 65535) {
      throw new HangarError(
        'invalid_argument',
        `port must be a number from 1 to 65535, got "${request.port}"`,
      );
    }
    const app = await this.#ctx.store.read((tx) => appFor(tx, principal, appName, 'write'));
    const candidates = this.#addressesOf(request.host, app.networkId);
    const allowed = await this.#allowedAddresses(app.networkId);
    const address = candidates.find((candidate) => allowed.has(candidate));
    if (!address) {
      throw new HangarError(
        'forbidden',
        `tunnel to "${request.host}" refused: ${reasonOf(request.host, candidates, app.networkId)}; ` +
          `a tunnel reaches only machines and Flycast addresses of app "${appName}"'s private network`,
      );
    }
    return { socket: await dial(address, request.port, request.host), address };
  }

  /** The candidate addresses of a literal or a `.internal`/`.flycast` name, in canonical form. */
  #addressesOf(host: string, networkId: number): string[] {
    const literal = host.replace(/^\[|\]$/g, '');
    if (isIP(literal) === 6) return [canonical(literal)!];
    if (isIP(literal) === 4) return [literal];
    const name = normalizeName(host);
    if (!name.endsWith('.internal') && !name.endsWith('.flycast')) {
      throw new HangarError(
        'forbidden',
        `tunnel to "${host}" refused: only .internal and .flycast names and private addresses of the app's network are reachable`,
      );
    }
    if (!this.#names) {
      throw new HangarError(
        'unavailable',
        'names cannot be resolved: private networks are not running on this host',
      );
    }
    const answer = resolveName({ name, type: 'AAAA' }, this.#names.snapshot(), networkId);
    const addresses = answer.answers.flatMap((record) =>
      record.type === 'AAAA' ? [canonical(record.data)!] : [],
    );
    if (addresses.length === 0) {
      throw new HangarError(
        'not_found',
        `"${host}" has no address in this app's network (no started machine answers to it); list them with hangar machine list`,
      );
    }
    return addresses;
  }

  /** Machine 6PN addresses and Flycast addresses of one network, read now from the store. */
  async #allowedAddresses(networkId: number): Promise<Set<string>> {
    return this.#ctx.store.read((tx) => {
      const allowed = new Set<string>();
      for (const app of tx.apps.list({ networkId })) {
        for (const machine of tx.machines.list({ appId: app.id })) {
          if (machine.state === 'destroyed' || !machine.privateIp) continue;
          const address = canonical(machine.privateIp.replace(/\/\d+$/, ''));
          if (address && networkIdOf(address) === networkId) allowed.add(address);
        }
      }
      for (const ip of tx.ipAssignments.list({ networkId })) {
        if (ip.type !== 'private_v6') continue;
        const address = canonical(ip.ip);
        if (address && networkIdOf(address) === networkId) allowed.add(address);
      }
      return allowed;
    });
  }
}

function reasonOf(host: string, candidates: string[], networkId: number): string {
  const first = candidates[0] ?? host;
  if (isIP(first) === 4) return 'IPv4 addresses are not part of private networks';
  const network = networkIdOf(first);
  if (network === undefined) return 'not an address of a private network';
  if (network !== networkId) return "the address is in another app's network";
  return 'no machine or Flycast address of the network has this address';
}

function dial(address: string, port: number, asked: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: address, port, family: 6 });
    const fail = (error: Error) => {
      socket.destroy();
      reject(
        new HangarError(
          'unavailable',
          `could not connect to ${asked} port ${port} ([${address}]:${port}): ${error.message}; is the machine started and listening on that port?`,
          { cause: error },
        ),
      );
    };
    socket.setTimeout(DIAL_TIMEOUT_MS, () => fail(new HangarError('deadline_exceeded', 'timed out')));
    socket.once('error', fail);
    socket.once('connect', () => {
      socket.setTimeout(0);
      socket.removeListener('error', fail);
      resolve(socket);
    });
  });
}

import type { LookupAddress, LookupOneOptions } from 'node:dns';
import http from 'node:http';
import net from 'node:net';

/**
 * Connections to machines. `concurrency.type = requests` shares a keep-alive pool per machine (idle
 * sockets kept about 4 s, as Fly does); `connections` opens a new connection for every request.
 *
 * A machine is dialled at its `internal_port` on its private IPv4 address first, then on its 6PN
 * address: apps bound to `0.0.0.0` (what Fly's documents tell users to do) and to `::` (dual-stack)
 * answer on the first; apps bound to `::` with IPV6_V6ONLY, or only to their 6PN address
 * (`fly-local-6pn`), refuse it at once (a reset from a local namespace, well under a millisecond) and
 * answer on the second. Node's connect does the fallback: a lookup that yields both addresses, IPv4
 * first, with `autoSelectFamily`, which tries them in that order and moves on when one is refused.
 */

export interface UpstreamTarget extends MachineDial {
  machineId: string;
  port: number;
  pooled: boolean;
}

const POOL_IDLE_MS = 4_000;

/** A machine's addresses as the proxy knows them (the route table's machine). */
export interface MachineAddresses {
  id: string;
  /** The 6PN address; null until the machine has one. */
  privateIp: string | null;
  /** The private IPv4 address only the host reaches; null when the machine has none. */
  privateIpv4: string | null;
}

/** How to reach a machine: connect options for net.connect and http.request, without the port. */
export interface MachineDial {
  host: string;
  lookup?: (
    hostname: string,
    options: LookupOneOptions | { all: true },
    callback: (...args: unknown[]) => void,
  ) => void;
  autoSelectFamily?: boolean;
  autoSelectFamilyAttemptTimeout?: number;
}

/**
 * How long the IPv4 attempt may take before the 6PN one replaces it. A local connect answers at once
 * (accepted or reset); this bound only matters when a machine's listen queue is full and its SYN waits
 * for a retransmission, and it must then not give up on an app that listens on IPv4 only.
 */
const IPV4_ATTEMPT_MS = 3_000;
/** Under this name the lookup below yields the machine's two addresses (an IP host skips lookups). */
const DIAL_SUFFIX = '.machine.hangar.invalid';

export function machineDial(machine: MachineAddresses): MachineDial {
  const v6 = machine.privateIp ?? '::1';
  const v4 = machine.privateIpv4;
  if (v4 === null) return { host: v6 };
  const both: LookupAddress[] = [
    { address: v4, family: 4 },
    { address: v6, family: 6 },
  ];
  return {
    // The name only keys the keep-alive pool; nothing resolves it but the lookup here.
    host: `${machine.id}${DIAL_SUFFIX}`,
    lookup: (_hostname, options, callback) => {
      if ((options as { all?: boolean }).all) callback(null, both);
      else callback(null, v4, 4);
    },
    autoSelectFamily: true,
    autoSelectFamilyAttemptTimeout: IPV4_ATTEMPT_MS,
  };
}

/** The address the proxy dials for a machine's internal port. */
export function upstreamAddress(
  machine: MachineAddresses,
  internalPort: number,
): MachineDial & { port: number } {
  return { ...machineDial(machine), port: internalPort };
}

const dialOf = (target: string | MachineDial): MachineDial =>
  typeof target === 'string' ? { host: target } : target;

export class UpstreamPools {
  readonly #agents = new Map<string, http.Agent>();

  agentFor(target: UpstreamTarget): http.Agent | false {
    if (!target.pooled) return false;
    let agent = this.#agents.get(target.machineId);
    if (!agent) {
      agent = new http.Agent({ keepAlive: true, timeout: POOL_IDLE_MS, scheduling: 'lifo' });
      this.#agents.set(target.machineId, agent);
    }
    return agent;
  }

  /** Drops a machine's idle connections (it stopped, or went away). */
  drop(machineId: string): void {
    this.#agents.get(machineId)?.destroy();
    this.#agents.delete(machineId);
  }

  close(): void {
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
  }
}

/** Codes that mean the connection was never made: no byte of the request reached the machine. */
const NEVER_CONNECTED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

export function neverConnected(error: NodeJS.ErrnoException, connected: boolean): boolean {
  return !connected && (NEVER_CONNECTED.has(error.code ?? '') || error.code === 'ECONNRESET');
}

/** One TCP connect attempt; true when the port accepts. Used to tell when a woken machine is ready. */
export function canConnect(target: string | MachineDial, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ ...dialOf(target), port } as net.NetConnectOpts);
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/** One HTTP check (2xx passes, redirects are not followed). */
export function httpCheckPasses(
  target: string | MachineDial,
  port: number,
  check: { method?: string; path?: string; headers?: { name: string; values: string[] }[] },
  timeoutMs: number,
): Promise<boolean> {
  return new Promise((resolve) => {
    const headers: Record<string, string[]> = {};
    for (const header of check.headers ?? []) headers[header.name] = header.values;
    const request = http.request(
      {
        ...(dialOf(target) as http.RequestOptions),
        port,
        method: check.method ?? 'GET',
        path: check.path ?? '/',
        headers,
        agent: false,
        timeout: timeoutMs,
      },
      (response) => {
        response.resume();
        resolve((response.statusCode ?? 0) >= 200 && (response.statusCode ?? 0) < 300);
      },
    );
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
    request.end();
  });
}

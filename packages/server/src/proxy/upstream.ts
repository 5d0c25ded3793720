import http from 'node:http';
import net from 'node:net';

/**
 * Connections to machines. `concurrency.type = requests` shares a keep-alive pool per machine (idle
 * sockets kept about 4 s, as Fly does); `connections` opens a new connection for every request.
 * Machines are dialled at their 6PN address and `internal_port`: apps binding `::` answer there. (Apps
 * binding 0.0.0.0 need the private IPv4 per machine, a later stage: `upstreamAddress` is the seam.)
 */

export interface UpstreamTarget {
  machineId: string;
  host: string;
  port: number;
  pooled: boolean;
}

const POOL_IDLE_MS = 4_000;

/** The address the proxy dials for a machine's internal port. */
export function upstreamAddress(privateIp: string, internalPort: number): { host: string; port: number } {
  return { host: privateIp, port: internalPort };
}

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
export function canConnect(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
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
  host: string,
  port: number,
  check: { method?: string; path?: string; headers?: { name: string; values: string[] }[] },
  timeoutMs: number,
): Promise<boolean> {
  return new Promise((resolve) => {
    const headers: Record<string, string[]> = {};
    for (const header of check.headers ?? []) headers[header.name] = header.values;
    const request = http.request(
      {
        host,
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

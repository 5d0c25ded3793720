import { durationToMs } from '../shared/duration.js';
import type { NormalizedService } from '../shared/machine-config.js';

/**
 * Pure reading of a machine's typed services: which external ports they cover, with which handlers,
 * their concurrency limits and Hangar's own per-service settings, defaults filled in (fly-semantics §2,
 * §5.1). Nothing here does I/O.
 */

type MachinePort = NonNullable<NormalizedService['ports']>[number];

/** A port range wider than this is not expanded into listeners (a range of thousands would be a DoS). */
export const MAX_PORTS_PER_RANGE = 64;

export interface Concurrency {
  type: 'connections' | 'requests';
  soft: number;
  /** Infinity when the service sets none (Fly's default). */
  hard: number;
}

/** Fly's defaults: count connections, soft limit 20, no hard limit. */
export const DEFAULT_CONCURRENCY: Concurrency = {
  type: 'connections',
  soft: 20,
  hard: Number.POSITIVE_INFINITY,
};

export function concurrencyOf(service: NormalizedService): Concurrency {
  const c = service.concurrency;
  return {
    type: c?.type ?? DEFAULT_CONCURRENCY.type,
    soft: c?.soft_limit ?? DEFAULT_CONCURRENCY.soft,
    hard: c?.hard_limit ?? DEFAULT_CONCURRENCY.hard,
  };
}

export function coversPort(entry: MachinePort, port: number): boolean {
  if (entry.port !== undefined) return entry.port === port;
  return entry.start_port !== undefined && entry.end_port !== undefined
    ? port >= entry.start_port && port <= entry.end_port
    : false;
}

/** Whether this port entry is plain HTTP: the `http` handler without `tls`. */
export function isPlainHttp(entry: MachinePort): boolean {
  const handlers = entry.handlers ?? [];
  return handlers.includes('http') && !handlers.includes('tls');
}

/** The TCP service of a machine whose ports cover `port` with plain HTTP, if any. */
export function httpServiceFor(
  services: readonly NormalizedService[],
  port: number,
): NormalizedService | undefined {
  return services.find(
    (s) => s.protocol === 'tcp' && (s.ports ?? []).some((p) => coversPort(p, port) && isPlainHttp(p)),
  );
}

/**
 * What the proxy does with a connection to one port entry (fly-semantics §5.2): `tls` terminates TLS,
 * then `http` speaks HTTP to the machine, else the bytes go through as they are (raw TCP);
 * `proxy_proto` prepends a PROXY protocol header towards the machine.
 */
export interface PortHandling {
  tls: boolean;
  http: boolean;
  proxyProto: 'v1' | 'v2' | undefined;
  forceHttps: boolean;
  /** A handler the proxy does not implement (`pg_tls`, `edge_http`): such a port is not served. */
  unsupported: string | undefined;
}

export function handlingOf(entry: MachinePort): PortHandling {
  const handlers = entry.handlers ?? [];
  const proxyProto = handlers.includes('proxy_proto')
    ? (entry.proxy_proto_options?.version ?? 'v1')
    : undefined;
  return {
    tls: handlers.includes('tls'),
    http: handlers.includes('http'),
    proxyProto,
    forceHttps: entry.force_https === true,
    unsupported: handlers.find((h) => h === 'pg_tls' || h === 'edge_http'),
  };
}

/** The first TCP service of a machine with a port entry covering `port` that `accepts` takes. */
export function serviceFor(
  services: readonly NormalizedService[],
  port: number,
  accepts: (handling: PortHandling) => boolean = () => true,
): { service: NormalizedService; handling: PortHandling } | undefined {
  for (const service of services) {
    if (service.protocol !== 'tcp') continue;
    for (const entry of service.ports ?? []) {
      if (!coversPort(entry, port)) continue;
      const handling = handlingOf(entry);
      if (accepts(handling)) return { service, handling };
    }
  }
  return undefined;
}

/** Every external port a service serves as plain HTTP (ranges expanded up to MAX_PORTS_PER_RANGE). */
export function httpPortsOf(service: NormalizedService): number[] {
  return portsOf(service, isPlainHttp);
}

/** Every external TCP port of a service, whatever its handlers (ranges expanded up to MAX_PORTS_PER_RANGE). */
export function portsOf(
  service: NormalizedService,
  which: (entry: MachinePort) => boolean = () => true,
): number[] {
  if (service.protocol !== 'tcp') return [];
  const ports: number[] = [];
  for (const entry of service.ports ?? []) {
    if (!which(entry)) continue;
    if (entry.port !== undefined) ports.push(entry.port);
    else if (entry.start_port !== undefined && entry.end_port !== undefined) {
      const end = Math.min(entry.end_port, entry.start_port + MAX_PORTS_PER_RANGE - 1);
      for (let port = entry.start_port; port <= end; port++) ports.push(port);
    }
  }
  return ports;
}

export type AutostopMode = 'off' | 'stop' | 'suspend';

export function autostopOf(service: NormalizedService): AutostopMode {
  if (service.autostop === 'suspend') return 'suspend';
  return service.autostop === true ? 'stop' : 'off';
}

export function idleTimeoutMs(service: NormalizedService, fallbackMs: number): number {
  return service.idle_timeout === undefined ? fallbackMs : durationToMs(service.idle_timeout, 'idle_timeout');
}

export function wakeTimeoutMs(service: NormalizedService, fallbackMs: number): number {
  return service.wake_timeout === undefined ? fallbackMs : durationToMs(service.wake_timeout, 'wake_timeout');
}

/** Whether a request must not wake a machine of this service (`wake_exempt`: path prefixes, user agents). */
export function isWakeExempt(
  service: NormalizedService,
  path: string,
  userAgent: string | undefined,
): boolean {
  const exempt = service.wake_exempt;
  if (!exempt) return false;
  if ((exempt.paths ?? []).some((prefix) => path === prefix || path.startsWith(prefix))) return true;
  const agent = (userAgent ?? '').toLowerCase();
  return agent !== '' && (exempt.user_agents ?? []).some((ua) => agent.includes(ua.toLowerCase()));
}

// Builds and changes MachineConfigs from flags (`machine run`, `machine update`, `scale`). Pure functions,
// so the flag grammar is testable without a server.

import type { Autostop, MachineConfig, MachinePort, MachineService } from '@hangar/sdk';
import { CliError } from './errors.js';
import { intFlag, parseKeyValues } from './flags.js';

const HANDLERS = new Set(['http', 'tls', 'pg_tls', 'proxy_proto']);
const PORT_SYNTAX = /^(?:(\d+)(?:-(\d+))?:)?(\d+)(?:\/(tcp|udp)((?::[a-z_]+)*))?$/;
const PORT_HINT = 'write it as [EXTERNAL[-END]:]INTERNAL[/tcp|udp[:HANDLER...]], e.g. 80:8080/tcp:http';

/**
 * flyctl's `--port` grammar: `443:8080/tcp:tls:http` exposes internal port 8080 as external 443 with the
 * tls and http handlers; `8080` alone exposes 8080 as 8080 with no handler (raw TCP). Ports that share an
 * internal port and protocol become one service.
 */
export function parsePorts(specs: string[]): MachineService[] {
  const services = new Map<string, MachineService>();
  for (const spec of specs) {
    const m = PORT_SYNTAX.exec(spec.trim());
    if (!m) throw new CliError(`invalid --port "${spec}"`, PORT_HINT);
    const [, external, externalEnd, internal, protocol = 'tcp', handlerText = ''] = m;
    const handlers = handlerText.split(':').filter(Boolean);
    const unknown = handlers.find((h) => !HANDLERS.has(h));
    if (unknown) throw new CliError(`unknown handler "${unknown}" in --port "${spec}"`, PORT_HINT);

    const port: MachinePort = externalEnd
      ? { start_port: Number(external), end_port: Number(externalEnd) }
      : { port: Number(external ?? internal) };
    if (handlers.length) port.handlers = handlers;

    const key = `${internal}/${protocol}`;
    const service = services.get(key) ?? { protocol, internal_port: Number(internal), ports: [] };
    service.ports?.push(port);
    services.set(key, service);
  }
  return [...services.values()];
}

export function parseAutostop(value: string | undefined): Autostop | undefined {
  if (value === undefined) return undefined;
  if (value === 'off' || value === 'stop' || value === 'suspend') return value;
  throw new CliError(`invalid --autostop "${value}"`, 'use off, stop or suspend');
}

export interface RunFlags {
  /** Repeatable flags are undefined when never given. */
  env?: string[];
  metadata?: string[];
  port?: string[];
  memory?: string;
  cpus?: string;
  cpuKind?: string;
  restart?: string;
  rm?: boolean;
  autostop?: string;
  autostart: boolean;
  volume?: string;
}

export function buildMachineConfig(image: string, command: string[], flags: RunFlags): MachineConfig {
  const config: MachineConfig = { image };
  if (flags.env?.length) config.env = parseKeyValues(flags.env, 'environment variable');
  if (flags.metadata?.length) config.metadata = parseKeyValues(flags.metadata, 'metadata');
  if (command.length) config.init = { cmd: command };

  const memory = intFlag(flags.memory, '--memory');
  const cpus = intFlag(flags.cpus, '--cpus');
  if (memory !== undefined || cpus !== undefined || flags.cpuKind) {
    config.guest = { cpu_kind: flags.cpuKind ?? 'shared', cpus: cpus ?? 1, memory_mb: memory ?? 256 };
  }

  // Like `fly machine run`: restart always by default; --rm means run once and clean up.
  if (flags.rm) {
    config.auto_destroy = true;
    config.restart = { policy: 'no' };
  } else {
    const policy = flags.restart ?? 'always';
    if (!['no', 'always', 'on-failure'].includes(policy)) {
      throw new CliError(`invalid --restart "${policy}"`, 'use no, always or on-failure');
    }
    config.restart = { policy };
  }

  if (flags.port?.length) {
    const autostop = parseAutostop(flags.autostop);
    config.services = parsePorts(flags.port).map((s) => ({
      ...s,
      autostart: flags.autostart,
      ...(autostop === undefined ? {} : { autostop }),
    }));
  } else if (flags.autostop !== undefined) {
    throw new CliError('--autostop needs at least one --port', 'add --port, e.g. --port 80:8080/tcp:http');
  }

  if (flags.volume) {
    const colon = flags.volume.indexOf(':');
    const volume = flags.volume.slice(0, colon);
    const path = flags.volume.slice(colon + 1);
    if (colon <= 0 || !path.startsWith('/')) {
      throw new CliError(`invalid --volume "${flags.volume}"`, 'write it as VOLUME_ID:/absolute/path');
    }
    config.mounts = [{ volume, path }];
  }
  return config;
}

/** flyctl's VM size presets (`--vm-size`, `scale vm`): CPU kind, CPUs and memory. */
export const VM_SIZES: Record<string, { cpu_kind: string; cpus: number; memory_mb: number }> = {
  'shared-cpu-1x': { cpu_kind: 'shared', cpus: 1, memory_mb: 256 },
  'shared-cpu-2x': { cpu_kind: 'shared', cpus: 2, memory_mb: 512 },
  'shared-cpu-4x': { cpu_kind: 'shared', cpus: 4, memory_mb: 1024 },
  'shared-cpu-8x': { cpu_kind: 'shared', cpus: 8, memory_mb: 2048 },
  'performance-1x': { cpu_kind: 'performance', cpus: 1, memory_mb: 2048 },
  'performance-2x': { cpu_kind: 'performance', cpus: 2, memory_mb: 4096 },
  'performance-4x': { cpu_kind: 'performance', cpus: 4, memory_mb: 8192 },
  'performance-8x': { cpu_kind: 'performance', cpus: 8, memory_mb: 16384 },
  'performance-16x': { cpu_kind: 'performance', cpus: 16, memory_mb: 32768 },
};

export function vmSize(name: string): { cpu_kind: string; cpus: number; memory_mb: number } {
  const size = VM_SIZES[name];
  if (!size) {
    throw new CliError(`unknown VM size "${name}"`, `use one of ${Object.keys(VM_SIZES).join(', ')}`);
  }
  return { ...size };
}

export interface UpdateFlags {
  image?: string;
  env?: string[];
  metadata?: string[];
  port?: string[];
  vmSize?: string;
  vmMemory?: string;
  vmCpus?: string;
  vmCpuKind?: string;
  autostop?: string;
  /** true/false when --autostart/--no-autostart was given, else undefined. */
  autostart?: boolean;
  restart?: string;
}

/**
 * `machine update`'s flags applied to a machine's current config: only what a flag names changes.
 * `--port` replaces the service of that internal port and protocol (others stay); `--autostop` and
 * `--autostart` apply to every service. Returns a new config; the input is not modified.
 */
export function applyUpdateFlags(current: MachineConfig, flags: UpdateFlags): MachineConfig {
  const config: MachineConfig = structuredClone(current);
  if (flags.image !== undefined) config.image = flags.image;
  if (flags.env?.length) config.env = { ...config.env, ...parseKeyValues(flags.env, 'environment variable') };
  if (flags.metadata?.length) {
    config.metadata = { ...config.metadata, ...parseKeyValues(flags.metadata, 'metadata') };
  }

  if (
    flags.vmSize !== undefined ||
    flags.vmMemory !== undefined ||
    flags.vmCpus !== undefined ||
    flags.vmCpuKind
  ) {
    const guest = flags.vmSize !== undefined ? vmSize(flags.vmSize) : { ...config.guest };
    const memory = intFlag(flags.vmMemory, '--vm-memory');
    const cpus = intFlag(flags.vmCpus, '--vm-cpus');
    if (memory !== undefined) guest.memory_mb = memory;
    if (cpus !== undefined) guest.cpus = cpus;
    if (flags.vmCpuKind) guest.cpu_kind = flags.vmCpuKind;
    // The deprecated preset and guest may not both be set; guest now says it all.
    delete config.size;
    config.guest = guest;
  }

  if (flags.restart !== undefined) {
    if (!['no', 'always', 'on-failure'].includes(flags.restart)) {
      throw new CliError(`invalid --restart "${flags.restart}"`, 'use no, always or on-failure');
    }
    config.restart = { ...config.restart, policy: flags.restart };
  }

  if (flags.port?.length) {
    const replaced = parsePorts(flags.port);
    const key = (s: MachineService) => `${s.internal_port}/${s.protocol}`;
    const byKey = new Map((config.services ?? []).map((s) => [key(s), s]));
    for (const service of replaced) {
      const previous = byKey.get(key(service));
      // Keep what the port flag does not say (checks, concurrency, autostart/autostop).
      byKey.set(key(service), { ...previous, ...service });
    }
    config.services = [...byKey.values()];
  }

  const autostop = parseAutostop(flags.autostop);
  if (autostop !== undefined || flags.autostart !== undefined) {
    if (!config.services?.length) {
      throw new CliError(
        '--autostop and --autostart apply to services, and this machine has none',
        'add one with --port, e.g. --port 80:8080/tcp:http',
      );
    }
    config.services = config.services.map((s) => ({
      ...s,
      ...(autostop === undefined ? {} : { autostop }),
      ...(flags.autostart === undefined ? {} : { autostart: flags.autostart }),
    }));
  }
  return config;
}

/** Servers answer autostop as false/true/"suspend"; compare it as the mode it means. */
function normalized(value: unknown, path: string): unknown {
  if (path.endsWith('.autostop')) {
    if (value === false || value === 'off') return 'off';
    if (value === true || value === 'stop') return 'stop';
  }
  return value;
}

function leaves(value: unknown, path: string, out: Map<string, string>): void {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) leaves(child, path ? `${path}.${key}` : key, out);
  } else if (Array.isArray(value) && value.some((v) => v !== null && typeof v === 'object')) {
    for (const [i, child] of value.entries()) leaves(child, `${path}[${i}]`, out);
  } else if (value !== undefined) {
    out.set(path, JSON.stringify(normalized(value, path)));
  }
}

/** What changes between two configs, one line per leaf: `image: "a" -> "b"`, `+ env.X: "1"`, `- env.Y`. */
export function diffConfig(before: MachineConfig, after: MachineConfig): string[] {
  const a = new Map<string, string>();
  const b = new Map<string, string>();
  leaves(before, '', a);
  leaves(after, '', b);
  const lines: string[] = [];
  for (const [path, value] of b) {
    const old = a.get(path);
    if (old === undefined) lines.push(`+ ${path}: ${value}`);
    else if (old !== value) lines.push(`~ ${path}: ${old} -> ${value}`);
  }
  for (const path of a.keys()) if (!b.has(path)) lines.push(`- ${path}`);
  return lines;
}

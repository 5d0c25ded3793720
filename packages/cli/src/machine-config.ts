// Builds a MachineConfig from `machine run` flags. Pure functions, so the flag grammar is testable
// without a server.

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

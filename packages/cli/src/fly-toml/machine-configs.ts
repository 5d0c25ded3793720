// An app configuration → one MachineConfig per process group: what `hangar deploy` sends for each machine
// of that group. Volumes are named here (`mounts[].name`); the deploy fills in the volume ids.

import type { MachineConfig, MachineGuest, MachineService } from '@hangar/sdk';
import { type AppConfig, appliesTo, type VmConfig } from './app-config.js';
import { formatDuration } from './units.js';

/** Metadata keys flyctl writes and reads (fly-semantics §1.6). */
export const METADATA = {
  platformVersion: 'fly_platform_version',
  processGroup: 'fly_process_group',
  releaseVersion: 'fly_release_version',
} as const;

/** The process group of release-command machines, which deploys and listings leave aside. */
export const RELEASE_COMMAND_GROUP = 'fly_app_release_command';

const DEFAULT_GUEST: Required<Pick<MachineGuest, 'cpu_kind' | 'cpus' | 'memory_mb'>> = {
  cpu_kind: 'shared',
  cpus: 1,
  memory_mb: 256,
};

/** `shared-cpu-2x` → 2 shared CPUs and 512 MB; `performance-1x` → 1 performance CPU and 2048 MB. */
export function guestForSize(size: string): MachineGuest | undefined {
  const m = /^(shared-cpu|performance)-(\d+)x$/.exec(size);
  if (!m) return undefined;
  const cpus = Number(m[2]);
  const performance = m[1] === 'performance';
  return {
    cpu_kind: performance ? 'performance' : 'shared',
    cpus,
    memory_mb: cpus * (performance ? 2048 : 256),
  };
}

/** The guest of a group: a `[[vm]]` naming the group wins over one for all groups. */
export function guestFor(vms: VmConfig[], group: string): MachineGuest {
  const specific = vms.find((v) => v.processes.includes(group));
  const general = vms.find((v) => v.processes.length === 0);
  const vm = specific ?? general;
  const guest: MachineGuest = { ...DEFAULT_GUEST };
  if (!vm) return guest;
  if (vm.size) Object.assign(guest, guestForSize(vm.size));
  if (vm.cpuKind) guest.cpu_kind = vm.cpuKind;
  if (vm.cpus !== undefined) guest.cpus = vm.cpus;
  if (vm.memoryMb !== undefined) guest.memory_mb = vm.memoryMb;
  return guest;
}

export interface MachineConfigOptions {
  /** Contents of `[[files]] local_path` entries, base64, by local path. */
  localFiles?: Record<string, string>;
}

/** The MachineConfig of every process group, by group name. */
export function machineConfigs(
  config: AppConfig,
  image: string,
  options: MachineConfigOptions = {},
): Map<string, MachineConfig> {
  const result = new Map<string, MachineConfig>();
  for (const [group, command] of Object.entries(config.processes)) {
    const machine: MachineConfig = { image };

    const env = { ...config.env };
    // fly-semantics §8.1: primary_region sets PRIMARY_REGION, over [env].
    if (config.primaryRegion) env.PRIMARY_REGION = config.primaryRegion;
    if (Object.keys(env).length > 0) machine.env = env;

    const init: NonNullable<MachineConfig['init']> = {};
    if (config.experimental.entrypoint) init.entrypoint = config.experimental.entrypoint;
    if (config.experimental.exec) init.exec = config.experimental.exec;
    if (command.length > 0) init.cmd = command;
    else if (config.experimental.cmd) init.cmd = config.experimental.cmd;
    if (config.swapSizeMb) init.swap_size_mb = config.swapSizeMb;
    if (Object.keys(init).length > 0) machine.init = init;

    machine.guest = guestFor(config.vms, group);

    const services: MachineService[] = config.services
      .filter((s) => appliesTo(s.processes, group))
      .map((s) => {
        const service: MachineService = {
          protocol: s.protocol,
          internal_port: s.internalPort,
          ports: s.ports,
          autostop: s.autostop,
          autostart: s.autostart,
        };
        if (s.minMachinesRunning !== undefined) service.min_machines_running = s.minMachinesRunning;
        if (s.concurrency) service.concurrency = s.concurrency;
        if (s.checks.length > 0) service.checks = s.checks;
        return service;
      });
    if (services.length > 0) machine.services = services;

    const checks = config.checks.filter((c) => appliesTo(c.processes, group));
    if (checks.length > 0) machine.checks = Object.fromEntries(checks.map((c) => [c.name, c.check]));

    const mount = config.mounts.find((m) => appliesTo(m.processes, group));
    if (mount) {
      const m: NonNullable<MachineConfig['mounts']>[number] = { name: mount.source, path: mount.destination };
      if (mount.autoExtendThresholdPercent !== undefined)
        m.extend_threshold_percent = mount.autoExtendThresholdPercent;
      if (mount.autoExtendIncrementGb !== undefined) m.add_size_gb = mount.autoExtendIncrementGb;
      if (mount.autoExtendLimitGb !== undefined) m.size_gb_limit = mount.autoExtendLimitGb;
      machine.mounts = [m];
    }

    const restart =
      config.restarts.find((r) => r.processes.includes(group)) ??
      config.restarts.find((r) => r.processes.length === 0);
    if (restart) {
      machine.restart = { policy: restart.policy };
      if (restart.retries !== undefined) machine.restart.max_retries = restart.retries;
    }

    if (config.killSignal || config.killTimeoutMs !== undefined) {
      machine.stop_config = {};
      if (config.killSignal) machine.stop_config.signal = config.killSignal;
      if (config.killTimeoutMs !== undefined)
        machine.stop_config.timeout = formatDuration(config.killTimeoutMs);
    }

    const statics = config.statics
      .filter((s) => appliesTo(s.processes, group))
      .map(({ processes: _, ...s }) => s);
    if (statics.length > 0) machine.statics = statics;

    const files = config.files
      .filter((f) => appliesTo(f.processes, group))
      .map((f) => {
        const file: NonNullable<MachineConfig['files']>[number] = { guest_path: f.guestPath };
        // fly.toml's raw_value is already base64, as the API wants it.
        if (f.rawValue !== undefined) file.raw_value = f.rawValue;
        if (f.secretName !== undefined) file.secret_name = f.secretName;
        if (f.localPath !== undefined) file.raw_value = options.localFiles?.[f.localPath] ?? '';
        return file;
      });
    if (files.length > 0) machine.files = files;

    if (config.metrics) machine.metrics = config.metrics;

    machine.metadata = { [METADATA.platformVersion]: 'v2', [METADATA.processGroup]: group };
    result.set(group, machine);
  }
  return result;
}

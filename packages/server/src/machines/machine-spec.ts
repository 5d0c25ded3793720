/**
 * What a boot needs, derived from the stored records alone: a pure function, so that every rule about
 * defaults, precedence and decoding lives here and the runtime never reads Fly's config shape.
 */
import type { MachineSpec } from '../runtime/runtime.js';
import { uidRangeForApp } from '../runtime/uid-range.js';
import { durationToMs } from '../shared/duration.js';
import { HangarError } from '../shared/errors.js';
import { MACHINE_DEFAULTS, type MachineConfig, type RestartPolicy } from '../shared/machine-config.js';
import type { AppRecord, MachineRecord } from '../store/records.js';

const MIB = 1024 * 1024;

export interface SpecInput {
  app: AppRecord;
  machine: MachineRecord;
  /** The image reference to boot (machine-rules' pinnedImage: the resolved digest once known). */
  image: string;
  /** The app's secrets, unsealed, by name. */
  secrets: ReadonlyMap<string, string>;
}

export function machineSpec({ app, machine, image, secrets }: SpecInput): MachineSpec {
  const { config } = machine;
  const guest = config.guest;
  return {
    machineId: machine.id,
    appName: app.name,
    region: machine.region,
    version: machine.instanceId,
    image,
    cpus: guest.cpus,
    memoryBytes: guest.memory_mb * MIB,
    command: {
      ...(config.init?.exec ? { exec: config.init.exec } : {}),
      ...(config.init?.entrypoint ? { entrypoint: config.init.entrypoint } : {}),
      ...(config.init?.cmd ? { cmd: config.init.cmd } : {}),
    },
    stopSignal: stopSettings(config).signal,
    env: {
      PRIMARY_REGION: machine.region,
      ...config.env,
      ...(machine.skipSecrets ? {} : Object.fromEntries(secrets)),
      // The platform's own variables win: FLY_ names are refused in user env and secrets.
      FLY_APP_NAME: app.name,
      FLY_MACHINE_ID: machine.id,
      FLY_ALLOC_ID: machine.id,
      FLY_REGION: machine.region,
      FLY_MACHINE_VERSION: machine.instanceId,
      FLY_PROCESS_GROUP: config.metadata?.fly_process_group ?? MACHINE_DEFAULTS.processGroup,
      FLY_VM_MEMORY_MB: String(guest.memory_mb),
      ...(machine.privateIp ? { FLY_PRIVATE_IP: machine.privateIp } : {}),
    },
    privateIp: machine.privateIp,
    network:
      machine.machineNumber === undefined
        ? null
        : {
            networkId: app.networkId,
            machineNumber: machine.machineNumber,
            ...(machine.privateIpv4 ? { ipv4: machine.privateIpv4 } : {}),
          },
    uidMapping: uidRangeForApp(app.internalNumericId),
    mounts: (config.mounts ?? []).map((m) => ({ volumeId: m.volume, path: m.path })),
    files: (config.files ?? []).map((file) => {
      const base64 =
        file.raw_value ?? (file.secret_name === undefined ? undefined : secrets.get(file.secret_name));
      if (base64 === undefined) {
        throw new HangarError(
          'failed_precondition',
          `files: ${file.guest_path} needs secret ${file.secret_name}, which app ${app.name} does not have; set it with \`hangar secrets set\``,
        );
      }
      return {
        guestPath: file.guest_path,
        content: Buffer.from(base64, 'base64'),
        mode: file.mode ?? MACHINE_DEFAULTS.fileMode,
      };
    }),
  };
}

/** How the machine is stopped: its `stop_config`, else the defaults (signal unset: the image decides). */
export function stopSettings(config: MachineConfig): { signal: string | undefined; timeoutMs: number } {
  const stop = config.stop_config;
  return {
    signal: stop?.signal,
    timeoutMs:
      stop?.timeout === undefined
        ? MACHINE_DEFAULTS.stopTimeoutMs
        : durationToMs(stop.timeout, 'stop_config.timeout'),
  };
}

/** What happens after an exit nobody asked for (fly-semantics: restart policies). */
export function restartSettings(config: MachineConfig): { policy: RestartPolicy; maxRetries: number } {
  return {
    policy: config.restart.policy,
    maxRetries: config.restart.max_retries ?? MACHINE_DEFAULTS.restartMaxRetries,
  };
}

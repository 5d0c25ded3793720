import { cpus as hostCpus, totalmem } from 'node:os';
import { DEFAULT_CONFIG, type ResolvedConfig } from '../config/config.js';
import { HangarError } from '../shared/errors.js';
import type { MachineConfig } from '../shared/machine-config.js';
import type { AppRecord, MachineRecord, VolumeRecord } from '../store/records.js';
import type { ReadTx } from '../store/store.js';

/**
 * Per-app quotas and admission against this host's capacity. Each refusal is a 422 that names the
 * quota, the numbers, and the configuration key that raises it (docs/operations.md, Limits and quotas).
 */

export type Quotas = ResolvedConfig['quotas'];

export interface Capacity {
  /** The host's memory and cpus, and how far the operator lets machines overcommit them. */
  memoryBytes: number;
  cpus: number;
  memoryOvercommit: number;
  cpuOvercommit: number;
}

export interface Limits {
  quotas: Quotas;
  capacity: Capacity;
}

export function limitsOf(config: Pick<ResolvedConfig, 'quotas' | 'capacity'>): Limits {
  return {
    quotas: config.quotas,
    capacity: { memoryBytes: totalmem(), cpus: hostCpus().length || 1, ...config.capacity },
  };
}

export const DEFAULT_LIMITS: Limits = limitsOf(DEFAULT_CONFIG);

const GB = 1024 * 1024 * 1024;
const MIB = 1024 * 1024;

function quotaExceeded(what: string, key: string, detail: string): HangarError {
  return new HangarError(
    'quota_exceeded',
    `quota exceeded: ${what} (${detail}); the operator can raise it with the setting ${key} in hangard's configuration`,
  );
}

const liveMachines = (tx: ReadTx, app: AppRecord) =>
  tx.machines.list({ appId: app.id }).filter((m) => m.state !== 'destroyed');
const liveVolumes = (tx: ReadTx, app: AppRecord) =>
  tx.volumes.list({ appId: app.id }).filter((v) => v.state !== 'destroyed');

/** Before a new machine: the app's machines (destroyed ones aside) stay within `machinesPerApp`. */
export function checkMachineQuota(tx: ReadTx, app: AppRecord, quotas: Quotas): void {
  const count = liveMachines(tx, app).length;
  if (count + 1 > quotas.machinesPerApp)
    throw quotaExceeded(
      `app ${app.name} may have at most ${quotas.machinesPerApp} machines`,
      'quotas.machinesPerApp',
      `it has ${count}`,
    );
}

/** What a volume create or extend in progress holds of its app's quotas until its record is written. */
export interface VolumeClaim {
  /** 1 for a create, 0 for an extend. */
  volumes: number;
  sizeGb: number;
}

/**
 * Before a new volume of `sizeGb`, or before `sizeGb` more of an existing one (`isNew` false), beside
 * what the app's creates and extends in progress have claimed (`pending`).
 */
export function checkVolumeQuota(
  tx: ReadTx,
  app: AppRecord,
  quotas: Quotas,
  sizeGb: number,
  isNew: boolean,
  pending: Iterable<VolumeClaim> = [],
): void {
  const volumes = liveVolumes(tx, app);
  let count = volumes.length;
  let bytes = volumes.reduce((sum: number, v: VolumeRecord) => sum + v.sizeGb * GB, 0);
  for (const claim of pending) {
    count += claim.volumes;
    bytes += claim.sizeGb * GB;
  }
  if (isNew && count + 1 > quotas.volumesPerApp)
    throw quotaExceeded(
      `app ${app.name} may have at most ${quotas.volumesPerApp} volumes`,
      'quotas.volumesPerApp',
      `it has ${count}`,
    );
  if (bytes + sizeGb * GB > quotas.volumeBytesPerApp)
    throw quotaExceeded(
      `app ${app.name}'s volumes may hold at most ${Math.floor(quotas.volumeBytesPerApp / GB)} GB in all`,
      'quotas.volumeBytesPerApp',
      `it has ${bytes / GB} GB, ${sizeGb} GB more asked`,
    );
}

export function checkSnapshotQuota(tx: ReadTx, volume: VolumeRecord, quotas: Quotas): void {
  const count = tx.volumeSnapshots.list({ volumeId: volume.id }).length;
  if (count + 1 > quotas.snapshotsPerVolume)
    throw quotaExceeded(
      `volume ${volume.id} may have at most ${quotas.snapshotsPerVolume} snapshots`,
      'quotas.snapshotsPerVolume',
      `it has ${count}; delete one first`,
    );
}

/** The states in which a machine holds the host's memory and cpus (a suspended one is frozen, not freed). */
const HOLDING = new Set(['starting', 'started', 'suspended']);

/** What a machine admitted on this host holds until the store shows it starting: its guest. */
export interface GuestClaim {
  memoryMb: number;
  cpus: number;
}

export const guestClaim = (config: MachineConfig): GuestClaim => ({
  memoryMb: config.guest.memory_mb,
  cpus: config.guest.cpus,
});

/**
 * Whether `config`'s guest fits on this host beside every machine that holds resources (all but
 * `machineId` itself): their guest memory and cpus stay under the host's times the overcommit ratios.
 * `admitted` are machines let in whose records do not show it yet (a create that has not booted, an
 * update between its stop and its boot): their claim counts instead of their record.
 */
export function admitOnHost(
  tx: ReadTx,
  capacity: Capacity,
  config: MachineConfig,
  machineId: string | undefined,
  admitted: ReadonlyMap<string, GuestClaim> = new Map(),
): void {
  let memory = 0;
  let cpus = 0;
  for (const machine of tx.machines.list() as MachineRecord[]) {
    if (machine.id === machineId || admitted.has(machine.id) || !HOLDING.has(machine.state)) continue;
    memory += machine.config.guest.memory_mb * MIB;
    cpus += machine.config.guest.cpus;
  }
  for (const [id, claim] of admitted) {
    if (id === machineId) continue;
    memory += claim.memoryMb * MIB;
    cpus += claim.cpus;
  }
  const memoryLimit = capacity.memoryBytes * capacity.memoryOvercommit;
  const wantMemory = config.guest.memory_mb * MIB;
  if (memory + wantMemory > memoryLimit)
    throw new HangarError(
      'insufficient_capacity',
      `this host cannot admit ${config.guest.memory_mb} MB more guest memory: running machines hold ${Math.round(memory / MIB)} MB of ${Math.floor(memoryLimit / MIB)} MB (host memory times capacity.memoryOvercommit ${capacity.memoryOvercommit}); stop a machine, or the operator can raise capacity.memoryOvercommit`,
    );
  const cpuLimit = capacity.cpus * capacity.cpuOvercommit;
  if (cpus + config.guest.cpus > cpuLimit)
    throw new HangarError(
      'insufficient_capacity',
      `this host cannot admit ${config.guest.cpus} more cpus: running machines hold ${cpus} of ${cpuLimit} (host cpus times capacity.cpuOvercommit ${capacity.cpuOvercommit}); stop a machine, or the operator can raise capacity.cpuOvercommit`,
    );
}

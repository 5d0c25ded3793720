import { createHash } from 'node:crypto';
import type { Principal } from '../auth/tokens.js';
import { failedPrecondition, HangarError, invalidArgument } from '../shared/errors.js';
import { newSnapshotId, newVolumeId } from '../shared/ids.js';
import type { AppRecord, VolumeRecord, VolumeSnapshotRecord } from '../store/records.js';
import type { ReadTx } from '../store/store.js';
import { appFor, isoNow, type PlatformContext } from './context.js';

/** Fly's volume rules: names of letters, digits and underscores up to 30; sizes 1-500 GB, growing only. */
const VOLUME_NAME = /^[a-z0-9_]{1,30}$/;
export const VOLUME_MAX_GB = 500;
/** flyctl's default (the API docs say 3 GB; flyctl, what users run, says 1). */
export const VOLUME_DEFAULT_GB = 1;

export interface CreateVolumeInput {
  name: string;
  region?: string;
  sizeGb?: number;
  encrypted?: boolean;
  fstype?: 'ext4' | 'raw';
  snapshotRetention?: number;
  autoBackupEnabled?: boolean;
  snapshotId?: string;
  sourceVolumeId?: string;
}

/**
 * Volumes as records with their states. The runtime issue backs each record with real storage (an ext4
 * image file); here they are placement and bookkeeping, and nothing pretends data exists.
 */
export class VolumesService {
  constructor(private readonly ctx: PlatformContext) {}

  async list(principal: Principal, appName: string): Promise<VolumeRecord[]> {
    return this.ctx.store.read((tx) => tx.volumes.list({ appId: appFor(tx, principal, appName, 'read').id }));
  }

  async get(principal: Principal, appName: string, volumeId: string): Promise<VolumeRecord> {
    return this.ctx.store.read((tx) => findVolume(tx, appFor(tx, principal, appName, 'read'), volumeId));
  }

  async create(principal: Principal, appName: string, input: CreateVolumeInput): Promise<VolumeRecord> {
    if (!VOLUME_NAME.test(input.name)) {
      throw invalidArgument(
        `name: "${input.name}" is not a valid volume name; use up to 30 lowercase letters, digits and underscores`,
      );
    }
    const region = input.region ?? this.ctx.region;
    if (region !== this.ctx.region) {
      throw failedPrecondition(
        `no host in region "${region}"; this Hangar serves region "${this.ctx.region}"`,
      );
    }
    checkRetention(input.snapshotRetention);
    return this.ctx.store.write((tx) => {
      const app = appFor(tx, principal, appName, 'write');
      let sizeGb = input.sizeGb ?? VOLUME_DEFAULT_GB;
      let sourceSnapshotId: string | null = null;
      let sourceVolumeId: string | null = null;
      if (input.snapshotId !== undefined) {
        const snapshot = tx.volumeSnapshots.get(input.snapshotId);
        if (!snapshot || snapshot.appId !== app.id) {
          throw invalidArgument(`snapshot_id: snapshot ${input.snapshotId} was not found in app ${app.name}`);
        }
        if (input.sizeGb !== undefined && input.sizeGb < snapshot.volumeSizeGb) {
          throw invalidArgument(
            `size_gb: a volume restored from a ${snapshot.volumeSizeGb} GB snapshot needs at least that size`,
          );
        }
        sizeGb = Math.max(sizeGb, snapshot.volumeSizeGb);
        sourceSnapshotId = snapshot.id;
      }
      if (input.sourceVolumeId !== undefined) {
        const source = tx.volumes.get(input.sourceVolumeId);
        if (!source || source.appId !== app.id) {
          throw invalidArgument(
            `source_volume_id: volume ${input.sourceVolumeId} was not found in app ${app.name}`,
          );
        }
        sizeGb = Math.max(sizeGb, source.sizeGb);
        sourceVolumeId = source.id;
      }
      checkSize(sizeGb);
      const volume: VolumeRecord = {
        id: newVolumeId(),
        appId: app.id,
        name: input.name,
        state: 'created',
        sizeGb,
        region,
        zone: this.ctx.hostId,
        hostId: this.ctx.hostId,
        encrypted: input.encrypted ?? true,
        fstype: input.fstype ?? 'ext4',
        snapshotRetention: input.snapshotRetention ?? 5,
        autoBackupEnabled: input.autoBackupEnabled ?? true,
        attachedMachineId: null,
        sourceSnapshotId,
        sourceVolumeId,
        createdAt: isoNow(this.ctx),
      };
      tx.volumes.insert(volume);
      return volume;
    });
  }

  async update(
    principal: Principal,
    appName: string,
    volumeId: string,
    input: { snapshotRetention?: number; autoBackupEnabled?: boolean },
  ): Promise<VolumeRecord> {
    checkRetention(input.snapshotRetention);
    return this.ctx.store.write((tx) => {
      const volume = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
      const updated = {
        ...volume,
        snapshotRetention: input.snapshotRetention ?? volume.snapshotRetention,
        autoBackupEnabled: input.autoBackupEnabled ?? volume.autoBackupEnabled,
      };
      tx.volumes.update(updated);
      return updated;
    });
  }

  /** Volumes only grow. An attached volume's machine must restart to see the new size. */
  async extend(
    principal: Principal,
    appName: string,
    volumeId: string,
    sizeGb: number,
  ): Promise<{ volume: VolumeRecord; needsRestart: boolean }> {
    checkSize(sizeGb);
    return this.ctx.store.write((tx) => {
      const volume = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
      if (sizeGb <= volume.sizeGb) {
        throw invalidArgument(
          `size_gb: volumes only grow; ${volume.id} is already ${volume.sizeGb} GB, ask for more`,
        );
      }
      const updated = { ...volume, sizeGb };
      tx.volumes.update(updated);
      return { volume: updated, needsRestart: volume.attachedMachineId !== null };
    });
  }

  async destroy(principal: Principal, appName: string, volumeId: string): Promise<VolumeRecord> {
    return this.ctx.store.write((tx) => {
      const volume = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
      if (volume.attachedMachineId !== null) {
        throw failedPrecondition(
          `volume ${volume.id} is attached to machine ${volume.attachedMachineId}; destroy that machine first`,
        );
      }
      tx.volumes.delete(volume.id);
      return { ...volume, state: 'destroyed' as const };
    });
  }

  async listSnapshots(
    principal: Principal,
    appName: string,
    volumeId: string,
  ): Promise<VolumeSnapshotRecord[]> {
    return this.ctx.store.read((tx) => {
      const volume = findVolume(tx, appFor(tx, principal, appName, 'read'), volumeId);
      return tx.volumeSnapshots.list({ volumeId: volume.id });
    });
  }

  /**
   * Records a snapshot of the volume's current size. With real storage (runtime issue) the snapshot
   * copies the data and its digest covers the bytes; until then the digest covers the record.
   */
  async createSnapshot(
    principal: Principal,
    appName: string,
    volumeId: string,
  ): Promise<VolumeSnapshotRecord> {
    return this.ctx.store.write((tx) => {
      const volume = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
      const id = newSnapshotId();
      const snapshot: VolumeSnapshotRecord = {
        id,
        volumeId: volume.id,
        appId: volume.appId,
        sizeBytes: 0,
        volumeSizeGb: volume.sizeGb,
        digest: createHash('sha256').update(`${volume.id}/${id}`).digest('hex'),
        status: 'created',
        retentionDays: volume.snapshotRetention,
        createdAt: isoNow(this.ctx),
      };
      tx.volumeSnapshots.insert(snapshot);
      return snapshot;
    });
  }
}

function findVolume(tx: ReadTx, app: AppRecord, volumeId: string): VolumeRecord {
  const volume = tx.volumes.get(volumeId);
  if (!volume || volume.appId !== app.id) {
    throw new HangarError('not_found', `volume ${volumeId} was not found in app ${app.name}`);
  }
  return volume;
}

function checkSize(sizeGb: number): void {
  if (!Number.isInteger(sizeGb) || sizeGb < 1 || sizeGb > VOLUME_MAX_GB) {
    throw invalidArgument(`size_gb: expected a whole number of GB from 1 to ${VOLUME_MAX_GB}, got ${sizeGb}`);
  }
}

function checkRetention(days: number | undefined): void {
  if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 60)) {
    throw invalidArgument(`snapshot_retention: expected 1 to 60 days, got ${days}`);
  }
}

import { createHash, randomUUID } from 'node:crypto';
import type { Principal } from '../auth/tokens.js';
import { uidRangeForApp } from '../runtime/uid-range.js';
import type { SnapshotResult, VolumeUsage } from '../runtime/volumes/volume-storage.js';
import { crashPoint } from '../shared/crash-points.js';
import { failedPrecondition, HangarError, invalidArgument } from '../shared/errors.js';
import { newSnapshotId, newVolumeId } from '../shared/ids.js';
import { KeyedQueue } from '../shared/keyed-queue.js';
import type { AppRecord, VolumeRecord, VolumeSnapshotRecord } from '../store/records.js';
import type { ReadTx } from '../store/store.js';
import { appFor, isoNow, limitsIn, type PlatformContext } from './context.js';
import { checkSnapshotQuota, checkVolumeQuota, type VolumeClaim } from './quotas.js';
import { Reservations } from './reservations.js';

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

/** A volume as the API shows it: the record, plus its filesystem's figures when they are known. */
export type VolumeView = VolumeRecord & { usage?: VolumeUsage };

/**
 * Volumes: records with their states, backed by real storage (an ext4 image per volume) when the context
 * has a VolumeStorage. Without one they are placement and bookkeeping only, and nothing pretends data
 * exists.
 *
 * With storage, image work never runs inside a store transaction (callbacks stay synchronous), and the
 * steps are ordered so that no image that has (or is about to get) a record is ever removed, and no
 * record is left pointing at data that is not there:
 * - create writes the image first and the record second. A crash between leaves an image without a
 *   record, which the reconcile pass at start removes (the create was never acknowledged). While the
 *   image waits for its record its id is in #creating, which the reconcile pass run after an app
 *   deletion skips, so it cannot delete the image of a create in progress.
 * - a snapshot writes its record first (`running`), then publishes the image, then completes the record
 *   (`created`, with the image's size and digest). Any reconcile pass thus sees a record for every
 *   published snapshot image; a crash leaves a `running` record, which the start-up repair (recover)
 *   completes from the image when it was published and marks `failed` when it was not.
 * - destroy deletes the record first and the image second (an image left behind is an orphan).
 */
export class VolumesService {
  /**
   * Storage work on one volume (extend, snapshot, destroy) runs one call at a time, so the record and the
   * image change together: a snapshot's recorded size is the size of the image it copied.
   */
  readonly #queue = new KeyedQueue();
  /** Volumes whose image is written and whose record is not yet: reconcile() must leave their images. */
  readonly #creating = new Set<string>();
  /**
   * What creates and extends in progress hold of their app's volume quotas (scope: the app's id), from
   * their check until their record is written: the image work between takes long, and two of them must
   * not both pass a check that only one fits.
   */
  readonly #claims = new Reservations<VolumeClaim>();

  constructor(private readonly ctx: PlatformContext) {}

  /**
   * Removes volume images and snapshots that no record names: left by a crash between the two steps of
   * a create or delete, or by an app delete. Runs at start and after app deletions.
   */
  async reconcile(): Promise<void> {
    const storage = this.ctx.volumeStorage;
    if (!storage) return;
    const onDisk = await storage.list();
    const known = await this.ctx.store.read((tx) => ({
      // #creating is read after the records: a create drops its id only once its record is committed.
      volumes: new Set(onDisk.volumes.filter((id) => tx.volumes.get(id) || this.#creating.has(id))),
      snapshots: new Set(onDisk.snapshots.filter((id) => tx.volumeSnapshots.get(id))),
    }));
    for (const id of onDisk.volumes)
      if (!known.volumes.has(id)) await storage.destroy(id).catch(() => undefined);
    for (const id of onDisk.snapshots)
      if (!known.snapshots.has(id)) await storage.deleteSnapshot(id).catch(() => undefined);
  }

  /**
   * At start, before reconcile(): snapshots a crash left `running` are completed from their image when
   * it was published (recorded whole), and marked `failed` when it was not (no image: never half-recorded).
   */
  async recover(): Promise<void> {
    const storage = this.ctx.volumeStorage;
    if (!storage) return;
    const running = await this.ctx.store.read((tx) =>
      tx.volumeSnapshots.list().filter((s) => s.status === 'running'),
    );
    for (const snapshot of running) {
      const figures = await storage.snapshotFigures(snapshot.id);
      await this.ctx.store.write((tx) => {
        const current = tx.volumeSnapshots.get(snapshot.id);
        if (!current) return;
        tx.volumeSnapshots.update(
          figures ? { ...current, ...figures, status: 'created' } : { ...current, status: 'failed' },
        );
      });
    }
  }

  async list(principal: Principal, appName: string): Promise<VolumeView[]> {
    const volumes = await this.ctx.store.read((tx) =>
      tx.volumes.list({ appId: appFor(tx, principal, appName, 'read').id }),
    );
    return Promise.all(volumes.map((volume) => this.#withUsage(volume)));
  }

  async get(principal: Principal, appName: string, volumeId: string): Promise<VolumeView> {
    return this.#withUsage(
      await this.ctx.store.read((tx) => findVolume(tx, appFor(tx, principal, appName, 'read'), volumeId)),
    );
  }

  async create(principal: Principal, appName: string, input: CreateVolumeInput): Promise<VolumeView> {
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
    const storage = this.ctx.volumeStorage;
    if (!storage) {
      return this.ctx.store.write((tx) => {
        const { volume } = this.#plan(tx, principal, appName, input, region);
        tx.volumes.insert(volume);
        return volume;
      });
    }
    const scope = await this.ctx.store.read((tx) => appFor(tx, principal, appName, 'write').id);
    const claimId = randomUUID();
    const { volume: planned, owner } = await this.#claims.reserve(
      scope,
      claimId,
      () =>
        this.ctx.store.read((tx) =>
          this.#plan(tx, principal, appName, input, region, this.#claims.held(scope).values()),
        ),
      ({ volume }) => ({ volumes: 1, sizeGb: volume.sizeGb }),
    );
    const from = planned.sourceSnapshotId
      ? { snapshotId: planned.sourceSnapshotId }
      : planned.sourceVolumeId
        ? { volumeId: planned.sourceVolumeId }
        : undefined;
    this.#creating.add(planned.id);
    try {
      const { fstype } = await storage.create(planned.id, {
        sizeGb: planned.sizeGb,
        fstype: planned.fstype,
        owner: { uid: owner, gid: owner },
        ...(from ? { from } : {}),
      });
      // A copy is whatever its source was (a raw volume's snapshot restores as raw).
      const volume = { ...planned, fstype };
      try {
        // The claim becomes the record, under the app's claims lock.
        await this.#claims.settle(scope, claimId, () =>
          this.ctx.store.write((tx) => {
            // The app may have been deleted (and its name reused) while the image was being written.
            if (appFor(tx, principal, appName, 'write').id !== volume.appId) {
              throw new HangarError('not_found', `app "${appName}" was deleted while the volume was created`);
            }
            tx.volumes.insert(volume);
          }),
        );
      } catch (error) {
        await storage.destroy(volume.id).catch(() => undefined);
        throw error;
      }
      return this.#withUsage(volume);
    } finally {
      // Nothing left to release once settled; a failed image write lets its claim go here.
      await this.#claims.release(scope, claimId);
      this.#creating.delete(planned.id);
    }
  }

  /** Validates a create and builds its record (not yet inserted); `owner` is the app's mapped root. */
  #plan(
    tx: ReadTx,
    principal: Principal,
    appName: string,
    input: CreateVolumeInput,
    region: string,
    pending: Iterable<VolumeClaim> = [],
  ): { volume: VolumeRecord; owner: number } {
    const app = appFor(tx, principal, appName, 'write');
    if (input.snapshotId !== undefined && input.sourceVolumeId !== undefined) {
      throw invalidArgument('snapshot_id and source_volume_id: give one source for the volume, not both');
    }
    let sizeGb = input.sizeGb ?? VOLUME_DEFAULT_GB;
    let sourceSnapshotId: string | null = null;
    let sourceVolumeId: string | null = null;
    if (input.snapshotId !== undefined) {
      const snapshot = tx.volumeSnapshots.get(input.snapshotId);
      if (!snapshot || snapshot.appId !== app.id) {
        throw invalidArgument(`snapshot_id: snapshot ${input.snapshotId} was not found in app ${app.name}`);
      }
      if (snapshot.status !== 'created') {
        throw failedPrecondition(
          `snapshot_id: snapshot ${snapshot.id} is ${snapshot.status}; only a completed snapshot can be restored`,
        );
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
    checkVolumeQuota(tx, app, limitsIn(this.ctx).quotas, sizeGb, true, pending);
    const volume: VolumeRecord = {
      id: newVolumeId(),
      appId: app.id,
      name: input.name,
      state: 'created',
      sizeGb,
      region,
      zone: this.ctx.hostId,
      hostId: this.ctx.hostId,
      // Hangar does not encrypt volumes at rest yet: say so rather than echo what was asked.
      encrypted: false,
      fstype: input.fstype ?? 'ext4',
      snapshotRetention: input.snapshotRetention ?? 5,
      autoBackupEnabled: input.autoBackupEnabled ?? true,
      attachedMachineId: null,
      sourceSnapshotId,
      sourceVolumeId,
      createdAt: isoNow(this.ctx),
    };
    return { volume, owner: uidRangeForApp(app.internalNumericId).hostId };
  }

  async update(
    principal: Principal,
    appName: string,
    volumeId: string,
    input: { snapshotRetention?: number; autoBackupEnabled?: boolean },
  ): Promise<VolumeView> {
    checkRetention(input.snapshotRetention);
    const updated = await this.ctx.store.write((tx) => {
      const volume = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
      const updated = {
        ...volume,
        snapshotRetention: input.snapshotRetention ?? volume.snapshotRetention,
        autoBackupEnabled: input.autoBackupEnabled ?? volume.autoBackupEnabled,
      };
      tx.volumes.update(updated);
      return updated;
    });
    return this.#withUsage(updated);
  }

  /**
   * Volumes only grow. An attached volume's machine must restart to see the new size; so must a mounted
   * one whose filesystem could not be grown live (see VolumeStorage.extend). With storage the image
   * grows first and the record second: a crash between leaves an image larger than its record, which
   * the next extend absorbs.
   */
  async extend(
    principal: Principal,
    appName: string,
    volumeId: string,
    sizeGb: number,
  ): Promise<{ volume: VolumeView; needsRestart: boolean }> {
    checkSize(sizeGb);
    const storage = this.ctx.volumeStorage;
    if (!storage) {
      return this.ctx.store.write((tx) => {
        const app = appFor(tx, principal, appName, 'write');
        const volume = growable(findVolume(tx, app, volumeId), sizeGb);
        checkVolumeQuota(tx, app, limitsIn(this.ctx).quotas, sizeGb - volume.sizeGb, false);
        const updated = { ...volume, sizeGb };
        tx.volumes.update(updated);
        return { volume: updated, needsRestart: volume.attachedMachineId !== null };
      });
    }
    return this.#queue.run(volumeId, async () => {
      const scope = await this.ctx.store.read((tx) => appFor(tx, principal, appName, 'write').id);
      const claimId = randomUUID();
      const volume = await this.#claims.reserve(
        scope,
        claimId,
        () =>
          this.ctx.store.read((tx) => {
            const app = appFor(tx, principal, appName, 'write');
            const found = growable(findVolume(tx, app, volumeId), sizeGb);
            const pending = this.#claims.held(scope).values();
            checkVolumeQuota(tx, app, limitsIn(this.ctx).quotas, sizeGb - found.sizeGb, false, pending);
            return found;
          }),
        (found) => ({ volumes: 0, sizeGb: sizeGb - found.sizeGb }),
      );
      try {
        const { needsRemount } = await storage.extend(volume.id, sizeGb);
        const updated = await this.#claims.settle(scope, claimId, () =>
          this.ctx.store.write((tx) => {
            const current = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
            const next = { ...current, sizeGb: Math.max(current.sizeGb, sizeGb) };
            tx.volumes.update(next);
            return next;
          }),
        );
        return {
          volume: await this.#withUsage(updated),
          needsRestart: updated.attachedMachineId !== null || needsRemount,
        };
      } finally {
        await this.#claims.release(scope, claimId);
      }
    });
  }

  async destroy(principal: Principal, appName: string, volumeId: string): Promise<VolumeRecord> {
    const storage = this.ctx.volumeStorage;
    if (!storage) return this.#destroyRecord(principal, appName, volumeId);
    return this.#queue.run(volumeId, async () => {
      const destroyed = await this.#destroyRecord(principal, appName, volumeId);
      // The record is gone, so the volume is gone for the user whatever happens to the image now; an
      // image left behind (a host process still using the mount, a crash) is an orphan that the reconcile
      // pass removes, so a failure here must not turn a completed delete into an error.
      await storage.destroy(destroyed.id).catch(() => undefined);
      return destroyed;
    });
  }

  #destroyRecord(principal: Principal, appName: string, volumeId: string): Promise<VolumeRecord> {
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
   * A snapshot of the volume. With storage it is a consistent copy of the image: its digest covers the
   * bytes and its size is what the copy occupies on disk. The record comes first (`running`), the image
   * second, the completed record third (see the class comment for why). Without storage only the record
   * exists and its digest covers the record.
   */
  async createSnapshot(
    principal: Principal,
    appName: string,
    volumeId: string,
  ): Promise<VolumeSnapshotRecord> {
    const storage = this.ctx.volumeStorage;
    if (!storage) {
      return this.ctx.store.write((tx) => {
        const volume = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
        checkSnapshotQuota(tx, volume, limitsIn(this.ctx).quotas);
        const id = newSnapshotId();
        const digest = createHash('sha256').update(`${volume.id}/${id}`).digest('hex');
        const snapshot = this.#snapshotRecord(volume, id, { sizeBytes: 0, digest });
        tx.volumeSnapshots.insert(snapshot);
        return snapshot;
      });
    }
    return this.#queue.run(volumeId, async () => {
      const volume = await this.ctx.store.read((tx) => {
        const found = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
        checkSnapshotQuota(tx, found, limitsIn(this.ctx).quotas);
        return found;
      });
      const id = newSnapshotId();
      // 1. The record, `running`: from here on no reconcile pass removes this snapshot's image.
      await this.ctx.store.write((tx) => {
        const current = findVolume(tx, appFor(tx, principal, appName, 'write'), volumeId);
        tx.volumeSnapshots.insert({
          ...this.#snapshotRecord(current, id, { sizeBytes: 0, digest: '' }),
          status: 'running',
        });
      });
      // 2. The image, published whole (tmp file, fsync, rename).
      let copied: SnapshotResult;
      try {
        copied = await storage.snapshot(volume.id, id);
      } catch (error) {
        await this.ctx.store.write((tx) => tx.volumeSnapshots.delete(id)).catch(() => undefined);
        throw error;
      }
      crashPoint('snapshot-published');
      // 3. The record completed with the image's figures.
      try {
        return await this.ctx.store.write((tx) => {
          const current = tx.volumeSnapshots.get(id);
          // Gone with its volume or app (deleted meanwhile): the image goes too.
          if (!current)
            throw new HangarError('not_found', `volume ${volumeId} was deleted during its snapshot`);
          const snapshot: VolumeSnapshotRecord = { ...current, ...copied, status: 'created' };
          tx.volumeSnapshots.update(snapshot);
          return snapshot;
        });
      } catch (error) {
        await storage.deleteSnapshot(id).catch(() => undefined);
        throw error;
      }
    });
  }

  #snapshotRecord(
    volume: VolumeRecord,
    id: string,
    copy: { sizeBytes: number; digest: string },
  ): VolumeSnapshotRecord {
    return {
      id,
      volumeId: volume.id,
      appId: volume.appId,
      sizeBytes: copy.sizeBytes,
      volumeSizeGb: volume.sizeGb,
      digest: copy.digest,
      status: 'created',
      retentionDays: volume.snapshotRetention,
      createdAt: isoNow(this.ctx),
    };
  }

  /** Figures come from this host's storage only: a volume placed on another host has none here. */
  async #withUsage(volume: VolumeRecord): Promise<VolumeView> {
    const storage = this.ctx.volumeStorage;
    if (!storage || volume.hostId !== this.ctx.hostId) return volume;
    // A missing or unreadable image shows no figures rather than failing a read of the record.
    const usage = await storage.usage(volume.id).catch(() => undefined);
    return usage ? { ...volume, usage } : volume;
  }
}

function growable(volume: VolumeRecord, sizeGb: number): VolumeRecord {
  if (sizeGb <= volume.sizeGb) {
    throw invalidArgument(
      `size_gb: volumes only grow; ${volume.id} is already ${volume.sizeGb} GB, ask for more`,
    );
  }
  return volume;
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

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, realpathSync } from 'node:fs';
import {
  access,
  chmod,
  constants,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  statfs,
  truncate,
} from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { crashPoint } from '../../shared/crash-points.js';
import { failedPrecondition, HangarError, invalidArgument, notFound } from '../../shared/errors.js';
import { KeyedQueue } from '../../shared/keyed-queue.js';
import { CommandError, runChecked } from '../../shared/run.js';

/**
 * Volumes as real storage: each volume is an ext4 filesystem in a sparse image file, loop-mounted on the
 * host while a machine uses it. The filesystem's size is the volume's quota, so nothing has to count bytes.
 *
 * Layout under `dir`:
 *   images/<volId>.img      an ext4 volume (`<volId>.raw` for a raw one: the kind lives in the name, so it
 *                           changes atomically with the rename that publishes the image)
 *   mnt/<volId>/            its mount point while mounted
 *   snapshots/<snapId>.img  a point-in-time copy (`.raw` for a copy of a raw volume)
 *   tmp/                    images being written; published by rename, so a crash leaves only tmp files
 *
 * Everything is derived from the disk (the files, /proc/self/mountinfo, losetup): nothing is cached across
 * calls except which volumes this instance mounted, so a restarted daemon picks up where the last one left.
 * Operations on one volume (or one snapshot) run one at a time, in call order.
 */

export type VolumeFstype = 'ext4' | 'raw';

export interface CreateVolumeStorageOptions {
  sizeGb: number;
  /** Ignored when copying (`from`): a copy keeps the source's kind and filesystem. */
  fstype: VolumeFstype;
  /** Host uid/gid that owns the filesystem's root directory: the app's mapped root. */
  owner: { uid: number; gid: number };
  from?: { snapshotId: string } | { volumeId: string };
}

/** Filesystem figures, in the units of Fly's Volume object. */
export interface VolumeUsage {
  blockSize: number;
  blocks: number;
  blocksFree: number;
  /** Free blocks an unprivileged writer (every machine) can still use. */
  blocksAvail: number;
  bytesTotal: number;
  bytesUsed: number;
}

export interface SnapshotResult {
  /** Bytes the copy occupies on the host disk (allocated blocks, st_blocks × 512), not its apparent size. */
  sizeBytes: number;
  /** `sha256:<hex>` of the snapshot image file, byte for byte (holes read as zeros). */
  digest: string;
}

export interface ExtendResult {
  /**
   * True when the image grew but its mounted filesystem could not be grown live (the host lacks
   * CAP_SYS_RESOURCE, which ext4's online resize needs, or the filesystem is mounted only in another mount
   * namespace): the filesystem takes its new size at the next mount.
   */
  needsRemount: boolean;
}

export interface VolumeStorageOptions {
  /** `<dataDir>/volumes` */
  dir: string;
}

const GIB = 1024 ** 3;
/** Volume and snapshot ids become file names: allow nothing that could leave the directory. */
const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const KINDS = { ext4: '.img', raw: '.raw' } as const;
const EXT4_MAGIC = 0xef53;
/**
 * Others may pass through but not list: a machine's root (an unprivileged host uid) must reach its own
 * volume's mount point when the runtime bind-mounts it, and learn nothing about other volumes.
 */
const SEARCH_ONLY = 0o711;
/** e2fsck exit codes below 4 mean the filesystem is now consistent (0 clean, 1 and 2 repaired). */
const FSCK_OK_BELOW = 4;

export class VolumeStorage {
  /** Canonical (symlink-free) path: /proc/self/mountinfo shows canonical mount points. */
  readonly #dir: string;
  readonly #queue = new KeyedQueue();
  /** Volumes this instance mounted (or found mounted when asked to mount): close() unmounts them. */
  readonly #mounted = new Set<string>();
  /** Temporary files of operations in progress, which cleanup() must leave alone. */
  readonly #inFlight = new Set<string>();
  #ready: Promise<string> | undefined;
  #closing: Promise<void> | undefined;

  /** Creates `dir` if needed (once, at startup) so that its canonical path is known from the start. */
  constructor(options: VolumeStorageOptions) {
    mkdirSync(options.dir, { recursive: true, mode: SEARCH_ONLY });
    this.#dir = realpathSync(resolve(options.dir));
  }

  /**
   * Writes the image whole or not at all: it is built in tmp/ and renamed into images/ when complete.
   * Resolves to the volume's kind, which for a copy is the source's.
   */
  async create(volumeId: string, options: CreateVolumeStorageOptions): Promise<{ fstype: VolumeFstype }> {
    checkId(volumeId, 'volume');
    checkSizeGb(options.sizeGb);
    const bytes = options.sizeGb * GIB;
    await this.#prepare();
    return this.#queue.run(volumeId, async () => {
      if (await this.#findImage(volumeId)) {
        throw new HangarError('name_taken', `volume ${volumeId} already has an image on this host`);
      }
      return this.#withTemporary(volumeId, async (temporary) => {
        let fstype = options.fstype;
        const from = options.from;
        if (from && 'snapshotId' in from) {
          checkId(from.snapshotId, 'snapshot');
          fstype = await this.#queue.run(snapshotKey(from.snapshotId), async () => {
            const source = await this.#findSnapshot(from.snapshotId);
            if (!source) throw notFound(`snapshot ${from.snapshotId} has no image on this host`);
            await copySparse(source.path, temporary);
            return source.fstype;
          });
        } else if (from) {
          checkId(from.volumeId, 'volume');
          fstype = await this.#queue.run(from.volumeId, () => this.#consistentCopy(from.volumeId, temporary));
        } else {
          const file = await open(temporary, 'wx', 0o600);
          await file.close();
        }
        if ((await stat(temporary)).size < bytes) {
          await truncate(temporary, bytes);
          if (fstype === 'ext4' && from) await growOffline(temporary);
        }
        if (fstype === 'ext4' && !from) {
          // -m 0: ext4 keeps its 5% reserve for host uid 0, which never writes here; a machine's root is
          // another uid and could never use it. root_owner: root in the machine owns the volume's root.
          await runChecked('mkfs.ext4', [
            '-F',
            '-q',
            '-m',
            '0',
            '-E',
            `root_owner=${checkOwnerId(options.owner.uid)}:${checkOwnerId(options.owner.gid)}`,
            temporary,
          ]);
        }
        await this.#publish(temporary, join(this.#dir, 'images', `${volumeId}${KINDS[fstype]}`));
        return { fstype };
      });
    });
  }

  /** Loop-mounts the volume's filesystem (nodev, nosuid) and returns the mount point. Idempotent. */
  async mount(volumeId: string): Promise<string> {
    checkId(volumeId, 'volume');
    await this.#prepare();
    return this.#queue.run(volumeId, async () => {
      const point = await this.#mountLocked(volumeId);
      this.#mounted.add(volumeId);
      return point;
    });
  }

  /** Unmounts and detaches the loop device. Idempotent: an unmounted or missing volume is fine. */
  async unmount(volumeId: string): Promise<void> {
    checkId(volumeId, 'volume');
    await this.#prepare();
    await this.#queue.run(volumeId, () => this.#unmountLocked(volumeId));
  }

  /**
   * Grows the image to at least `sizeGb` GiB and its filesystem with it; never shrinks (a smaller or equal
   * size changes nothing). A mounted filesystem is grown live when the host allows it; an unmounted one is
   * checked (resize2fs insists on a fresh e2fsck) and grown offline.
   */
  async extend(volumeId: string, sizeGb: number): Promise<ExtendResult> {
    checkId(volumeId, 'volume');
    checkSizeGb(sizeGb);
    await this.#prepare();
    return this.#queue.run(volumeId, async () => {
      const image = await this.#requireImage(volumeId);
      const bytes = sizeGb * GIB;
      if ((await stat(image.path)).size >= bytes) return { needsRemount: false };
      await truncate(image.path, bytes);
      if (image.fstype === 'raw') return { needsRemount: false };
      const mounted = await mountedAt(this.#mountPoint(volumeId));
      if (mounted) {
        // The loop device keeps the size it had when attached until told to look again.
        await runChecked('losetup', ['-c', mounted.source]);
        try {
          await runChecked('resize2fs', [mounted.source]);
          return { needsRemount: false };
        } catch (error) {
          if (isPermissionDenied(error)) return { needsRemount: true };
          throw error;
        }
      }
      // Live in another mount namespace (a machine's, after a daemon restart): an offline resize under a
      // live filesystem would corrupt it. Leave it to the next mount.
      if (await liveLoopDevice(image.path)) return { needsRemount: true };
      await growOffline(image.path);
      return { needsRemount: false };
    });
  }

  /**
   * A consistent point-in-time copy: a mounted filesystem is frozen (fsfreeze) for the length of a sparse
   * copy, then thawed whatever happens. The digest is computed on the copy after the thaw, so the freeze
   * lasts only as long as the copy.
   */
  async snapshot(volumeId: string, snapshotId: string): Promise<SnapshotResult> {
    checkId(volumeId, 'volume');
    checkId(snapshotId, 'snapshot');
    await this.#prepare();
    // Only the volume's queue: snapshot ids are fresh, and taking the snapshot's key too could deadlock
    // against a create that holds a new volume's key and waits for a snapshot's.
    return this.#queue.run(volumeId, async () => {
      if (await this.#findSnapshot(snapshotId)) {
        throw new HangarError('name_taken', `snapshot ${snapshotId} already has an image on this host`);
      }
      return this.#withTemporary(snapshotId, async (temporary) => {
        const fstype = await this.#consistentCopy(volumeId, temporary);
        const digest = await sha256File(temporary);
        const destination = join(this.#dir, 'snapshots', `${snapshotId}${KINDS[fstype]}`);
        await this.#publish(temporary, destination);
        // Counted after the fsync in #publish: until then delayed allocation only estimates the blocks.
        const { blocks } = await stat(destination);
        return { sizeBytes: blocks * 512, digest: `sha256:${digest}` };
      });
    });
  }

  /** Unmounts, detaches and deletes the image and its mount point. Idempotent. */
  async destroy(volumeId: string): Promise<void> {
    checkId(volumeId, 'volume');
    await this.#prepare();
    await this.#queue.run(volumeId, async () => {
      await this.#unmountLocked(volumeId);
      for (const suffix of Object.values(KINDS)) {
        await rm(join(this.#dir, 'images', `${volumeId}${suffix}`), { force: true });
      }
      await rmdir(this.#mountPoint(volumeId)).catch(ignoreCode('ENOENT'));
    });
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    checkId(snapshotId, 'snapshot');
    await this.#prepare();
    await this.#queue.run(snapshotKey(snapshotId), async () => {
      for (const suffix of Object.values(KINDS)) {
        await rm(join(this.#dir, 'snapshots', `${snapshotId}${suffix}`), { force: true });
      }
    });
  }

  /**
   * Mounted: statfs of the mount point (live). Not mounted: the ext4 superblock, read directly (what the
   * kernel wrote at the last unmount; cheaper than spawning dumpe2fs for every volume of a list). Raw or
   * missing images have no figures: undefined. Mounted figures leave out the few MiB the kernel holds back
   * for its own metadata; unmounted ones cannot know that reserve, so `blocksAvail` is slightly higher.
   */
  async usage(volumeId: string): Promise<VolumeUsage | undefined> {
    checkId(volumeId, 'volume');
    await this.#prepare();
    const image = await this.#findImage(volumeId);
    if (!image || image.fstype === 'raw') return undefined;
    const point = this.#mountPoint(volumeId);
    if (await mountedAt(point)) {
      const fs = await statfs(point);
      return usageFrom(fs.bsize, fs.blocks, fs.bfree, fs.bavail);
    }
    const superblock = await readSuperblock(image.path);
    if (!superblock) return undefined;
    // statfs leaves the filesystem's own metadata out of the total; do the same when mkfs recorded it.
    const blocks =
      superblock.blocks - (superblock.overheadBlocks < superblock.blocks ? superblock.overheadBlocks : 0);
    return usageFrom(
      superblock.blockSize,
      blocks,
      superblock.freeBlocks,
      Math.max(0, superblock.freeBlocks - superblock.reservedBlocks),
    );
  }

  /** What is on disk, for the reconcile pass at start (records without files, files without records). */
  async list(): Promise<{ volumes: string[]; snapshots: string[] }> {
    await this.#prepare();
    return {
      volumes: await idsIn(join(this.#dir, 'images')),
      snapshots: await idsIn(join(this.#dir, 'snapshots')),
    };
  }

  /** Removes what crashed operations left in tmp/; files of operations still running are kept. */
  async cleanup(): Promise<void> {
    const tmp = join(await this.#prepare(), 'tmp');
    for (const name of await readdir(tmp)) {
      if (!this.#inFlight.has(join(tmp, name))) await rm(join(tmp, name), { recursive: true, force: true });
    }
  }

  /**
   * At start only (a freeze of a snapshot in progress must not be undone): thaws every volume filesystem
   * mounted under mnt/ that is frozen. A freeze lasts as long as the copy of one snapshot, in this
   * process; a crash in that window leaves the filesystem frozen, with every writer in its machine
   * blocked, until something thaws it. Resolves to the volumes it thawed and those it could not (a
   * start goes on either way: the caller reports them).
   */
  async thawAll(): Promise<{ thawed: string[]; failed: { volumeId: string; error: Error }[] }> {
    const mnt = join(await this.#prepare(), 'mnt');
    const thawed: string[] = [];
    const failed: { volumeId: string; error: Error }[] = [];
    for (const point of await mountPointsUnder(mnt)) {
      const volumeId = point.slice(mnt.length + 1);
      if (!SAFE_ID.test(volumeId)) continue;
      await this.#queue.run(volumeId, async () => {
        try {
          await runChecked('fsfreeze', ['-u', point]);
          thawed.push(volumeId);
        } catch (error) {
          // The kernel answers EINVAL for a filesystem that is not frozen: the usual case, nothing to do.
          if (!(error instanceof CommandError && /invalid argument/i.test(error.stderr))) {
            failed.push({ volumeId, error: error as Error });
          }
        }
      });
    }
    return { thawed, failed };
  }

  /**
   * The figures of a published snapshot image (what snapshot() returned for it), or undefined when it has
   * no image: lets the start-up repair finish a snapshot whose record a crash left `running`.
   */
  async snapshotFigures(snapshotId: string): Promise<SnapshotResult | undefined> {
    checkId(snapshotId, 'snapshot');
    await this.#prepare();
    return this.#queue.run(snapshotKey(snapshotId), async () => {
      const found = await this.#findSnapshot(snapshotId);
      if (!found) return undefined;
      const digest = await sha256File(found.path);
      const { blocks } = await stat(found.path);
      return { sizeBytes: blocks * 512, digest: `sha256:${digest}` };
    });
  }

  /**
   * Waits for operations in progress, then unmounts every volume this instance mounted (a machine that is
   * still running keeps its own view in its mount namespace; see #mountLocked). Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#queue.drain();
      const failures: unknown[] = [];
      for (const volumeId of [...this.#mounted]) {
        await this.#queue.run(volumeId, () => this.#unmountLocked(volumeId)).catch((e) => failures.push(e));
      }
      if (failures.length > 0) throw new AggregateError(failures, 'some volumes could not be unmounted');
      await this.releaseMountRoot();
    })();
    return this.#closing;
  }

  /** Removes the shared bind of the mount root when no volume is mounted below it any more. */
  async releaseMountRoot(): Promise<void> {
    await unshareMountRoot(join(this.#dir, 'mnt'));
  }

  /** Absolute path of the volume's mount point (mounted or not). */
  mountPoint(volumeId: string): string {
    checkId(volumeId, 'volume');
    return this.#mountPoint(volumeId);
  }

  /** Absolute path of the volume's image file, or undefined when there is none. */
  async imagePath(volumeId: string): Promise<string | undefined> {
    checkId(volumeId, 'volume');
    await this.#prepare();
    return (await this.#findImage(volumeId))?.path;
  }

  /** Absolute path of the snapshot's image file, or undefined when there is none. */
  async snapshotPath(snapshotId: string): Promise<string | undefined> {
    checkId(snapshotId, 'snapshot');
    await this.#prepare();
    return (await this.#findSnapshot(snapshotId))?.path;
  }

  async #mountLocked(volumeId: string): Promise<string> {
    const image = await this.#requireImage(volumeId);
    if (image.fstype === 'raw') {
      throw failedPrecondition(
        `volume ${volumeId} is a raw volume: it has no filesystem, so it cannot be mounted; create an ext4 volume to mount it at a path`,
      );
    }
    const point = this.#mountPoint(volumeId);
    if (await mountedAt(point)) return point;
    await mkdir(point, { recursive: true });
    const live = await liveLoopDevice(image.path);
    if (live) {
      // A machine started before a daemon restart keeps the filesystem live in its mount namespace.
      // Mounting that same device shares the one live filesystem; a second loop device over the file would
      // be a second filesystem writing the same blocks.
      await runChecked('losetup', ['-c', live]);
      await runChecked('mount', ['-t', 'ext4', '-o', 'nodev,nosuid', live, point]);
    } else {
      await this.#applyDeferredGrowth(image.path);
      // -t ext4: never let the kernel guess a filesystem type from bytes a machine wrote.
      await runChecked('mount', ['-t', 'ext4', '-o', 'loop,nodev,nosuid', image.path, point]);
    }
    return point;
  }

  async #unmountLocked(volumeId: string): Promise<void> {
    const point = this.#mountPoint(volumeId);
    // Mounts can stack on one point (a crash mid-mount, a second daemon): peel them all off.
    for (let attempt = 0; attempt < 8 && (await mountedAt(point)); attempt++) {
      try {
        await runChecked('umount', [point]);
      } catch (error) {
        if (/busy/i.test(String((error as Error).message))) {
          throw failedPrecondition(`volume ${volumeId} is busy: a process on the host still uses ${point}`);
        }
        throw error;
      }
    }
    // `mount -o loop` sets autoclear, so the device normally goes with the unmount; detach leftovers (a
    // crash between attach and mount). On a device still in use elsewhere this only sets autoclear.
    const image = await this.#findImage(volumeId);
    if (image) {
      for (const device of await loopDevicesOf(image.path)) {
        await runChecked('losetup', ['-d', device]).catch(() => undefined);
      }
      // The kernel releases a device that was just closed a moment later: return only once it is gone,
      // so the image can be copied, destroyed or attached again right away.
      for (
        let waited = 0;
        waited < LOOP_RELEASE_WAIT_MS && (await loopDevicesOf(image.path)).length > 0;
        waited += 10
      ) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    this.#mounted.delete(volumeId);
  }

  /**
   * Copies the volume's image to `destination` (sparse) and returns its kind. A mounted ext4 filesystem is
   * frozen during the copy so the copy is what a crash at that instant would leave, with the journal
   * flushed: a clean filesystem. A filesystem attached elsewhere but not mounted here is mounted for the
   * freeze (sharing the live filesystem) and unmounted again.
   */
  async #consistentCopy(volumeId: string, destination: string): Promise<VolumeFstype> {
    const image = await this.#requireImage(volumeId);
    if (image.fstype === 'raw') {
      // No filesystem to freeze: a raw volume is copied as it is (nothing in Hangar writes one live).
      await copySparse(image.path, destination);
      return 'raw';
    }
    const point = this.#mountPoint(volumeId);
    let mountedForCopy = false;
    if (!(await mountedAt(point))) {
      if (!(await liveLoopDevice(image.path))) {
        await copySparse(image.path, destination);
        return 'ext4';
      }
      await this.#mountLocked(volumeId);
      mountedForCopy = true;
    }
    try {
      await runChecked('fsfreeze', ['-f', point]);
      try {
        crashPoint('snapshot-frozen');
        await copySparse(image.path, destination);
      } finally {
        // A filesystem left frozen blocks every writer in the machine: thaw even when the copy failed.
        await runChecked('fsfreeze', ['-u', point]);
      }
    } finally {
      if (mountedForCopy) await runChecked('umount', [point]);
    }
    return 'ext4';
  }

  /** A file bigger than its filesystem (growth deferred by extend) gets the filesystem grown before mount. */
  async #applyDeferredGrowth(imagePath: string): Promise<void> {
    const superblock = await readSuperblock(imagePath);
    if (!superblock) {
      throw failedPrecondition(`${imagePath} holds no ext4 filesystem, so it cannot be mounted`);
    }
    const { size } = await stat(imagePath);
    if (size - superblock.blocks * superblock.blockSize >= superblock.blockSize) await growOffline(imagePath);
  }

  /** Makes the temporary file durable, private and then visible under its final name. */
  async #publish(temporary: string, destination: string): Promise<void> {
    await chmod(temporary, 0o600);
    await fsyncPath(temporary);
    await rename(temporary, destination);
    // The rename itself must survive a crash before a record that points to the file is committed.
    await fsyncPath(join(destination, '..'));
  }

  async #withTemporary<T>(id: string, task: (temporary: string) => Promise<T>): Promise<T> {
    const temporary = join(this.#dir, 'tmp', `${id}.${randomBytes(6).toString('hex')}`);
    this.#inFlight.add(temporary);
    try {
      return await task(temporary);
    } finally {
      // After a successful publish the file is gone from tmp/ and this does nothing.
      await rm(temporary, { force: true });
      this.#inFlight.delete(temporary);
    }
  }

  async #requireImage(volumeId: string): Promise<{ path: string; fstype: VolumeFstype }> {
    const image = await this.#findImage(volumeId);
    if (!image) throw notFound(`volume ${volumeId} has no image on this host`);
    return image;
  }

  #findImage(volumeId: string) {
    return findKind(join(this.#dir, 'images'), volumeId);
  }

  #findSnapshot(snapshotId: string) {
    return findKind(join(this.#dir, 'snapshots'), snapshotId);
  }

  #mountPoint(volumeId: string): string {
    return join(this.#dir, 'mnt', volumeId);
  }

  /** Creates the layout once; resolves to the directory. */
  #prepare(): Promise<string> {
    this.#ready ??= (async () => {
      for (const sub of ['images', 'snapshots', 'tmp']) {
        await mkdir(join(this.#dir, sub), { recursive: true, mode: 0o700 });
      }
      await mkdir(join(this.#dir, 'mnt'), { recursive: true, mode: SEARCH_ONLY });
      await shareMountRoot(join(this.#dir, 'mnt'));
      return this.#dir;
    })();
    this.#ready.catch(() => {
      this.#ready = undefined;
    });
    return this.#ready;
  }
}

/**
 * Whether this host can back volumes with loop-mounted images: root, the loop control device, and the
 * tools this class runs. Cheap enough to call at every start.
 */
export async function hostCanLoopMount(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  try {
    await access('/dev/loop-control', constants.R_OK | constants.W_OK);
    await runChecked('losetup', ['--version']);
    // e2fsprogs brings resize2fs, e2fsck; util-linux brings losetup, mount, fsfreeze.
    await runChecked('mkfs.ext4', ['-V']);
    return true;
  } catch {
    return false;
  }
}

/** How long unmount waits for the kernel to release a loop device (it normally takes a few ms). */
const LOOP_RELEASE_WAIT_MS = 2_000;

const isPermissionDenied = (error: unknown) =>
  error instanceof CommandError && /permission denied|operation not permitted/i.test(error.stderr);

/** resize2fs refuses an unmounted filesystem that has not just been checked, so check it first. */
async function growOffline(imagePath: string): Promise<void> {
  try {
    await runChecked('e2fsck', ['-f', '-y', imagePath]);
  } catch (error) {
    const code = (error as CommandError).exitCode;
    if (typeof code !== 'number' || code >= FSCK_OK_BELOW) throw error;
  }
  await runChecked('resize2fs', [imagePath]);
}

async function copySparse(source: string, destination: string): Promise<void> {
  await runChecked('cp', ['--sparse=always', source, destination]);
}

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) {
    hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

interface Superblock {
  blockSize: number;
  blocks: number;
  freeBlocks: number;
  reservedBlocks: number;
  /** Blocks of filesystem metadata, as mkfs/resize2fs recorded them (0 when not recorded). */
  overheadBlocks: number;
}

/** The ext4 superblock fields we need (layout: the kernel's struct ext4_super_block, 1 KiB at 1 KiB). */
async function readSuperblock(imagePath: string): Promise<Superblock | undefined> {
  const handle = await open(imagePath, 'r');
  try {
    const sb = Buffer.alloc(1024);
    const { bytesRead } = await handle.read(sb, 0, 1024, 1024);
    if (bytesRead < 1024 || sb.readUInt16LE(0x38) !== EXT4_MAGIC) return undefined;
    const is64bit = (sb.readUInt32LE(0x60) & 0x80) !== 0;
    const wide = (lo: number, hi: number) =>
      sb.readUInt32LE(lo) + (is64bit ? sb.readUInt32LE(hi) * 2 ** 32 : 0);
    return {
      blockSize: 1024 * 2 ** sb.readUInt32LE(0x18),
      blocks: wide(0x04, 0x150),
      reservedBlocks: wide(0x08, 0x154),
      freeBlocks: wide(0x0c, 0x158),
      overheadBlocks: sb.readUInt32LE(0x248),
    };
  } finally {
    await handle.close();
  }
}

function usageFrom(blockSize: number, blocks: number, free: number, avail: number): VolumeUsage {
  return {
    blockSize,
    blocks,
    blocksFree: free,
    blocksAvail: avail,
    bytesTotal: blocks * blockSize,
    bytesUsed: Math.max(0, blocks - free) * blockSize,
  };
}

/** The mount on `point` as /proc/self/mountinfo shows it (the topmost when several stack), if any. */
/**
 * Makes the volumes' mount root a shared mount (a bind of itself), so that every volume mounted below it
 * is shared too. The OCI runtime runs each machine from a copy of the host's mount namespace that lives
 * as long as the machine (a slave copy: see oci/oci-cli.ts); with shared volume mounts, unmounting a
 * volume on the host unmounts that copy as well, instead of leaving it pinned there, busy, so that it
 * could neither grow at its next mount nor be released.
 */
async function shareMountRoot(root: string): Promise<void> {
  if (!(await mountedAt(root))) await runChecked('mount', ['--bind', root, root]);
  await runChecked('mount', ['--make-shared', root]);
}

/** Undoes shareMountRoot once no volume is mounted below the root any more (running machines keep theirs). */
async function unshareMountRoot(root: string): Promise<void> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points = text.split('\n').map((line) => unescapeMountinfo(line.split(' ')[4] ?? ''));
  if (points.some((point) => point.startsWith(`${root}/`))) return;
  if (points.includes(root)) await runChecked('umount', [root]);
}

async function mountedAt(point: string): Promise<{ source: string } | undefined> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  let found: { source: string } | undefined;
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    // id parent major:minor root mount-point options [optional fields...] - fstype source super-options
    const separator = fields.indexOf('-', 6);
    if (separator < 0 || fields[4] === undefined) continue;
    if (unescapeMountinfo(fields[4]) === point) {
      found = { source: unescapeMountinfo(fields[separator + 2] ?? '') };
    }
  }
  return found;
}

/** Mount points directly below `dir` (each once, however many mounts stack on it). */
async function mountPointsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points = new Set<string>();
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    const point = unescapeMountinfo(field);
    if (point.startsWith(`${dir}/`) && !point.slice(dir.length + 1).includes('/')) points.add(point);
  }
  return [...points].sort();
}

/** mountinfo writes space, tab, newline and backslash as octal escapes. */
const unescapeMountinfo = (field: string) =>
  field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));

/** Loop devices whose backing file is this image (matched by device and inode, not by name). */
async function loopDevicesOf(imagePath: string): Promise<string[]> {
  try {
    const out = await runChecked('losetup', ['-j', imagePath, '-n', '-O', 'NAME']);
    return out
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '');
  } catch (error) {
    // The image is gone: nothing can be attached to a file that does not exist any more.
    if (!(await stat(imagePath).catch(() => undefined))) return [];
    throw error;
  }
}

/**
 * A loop device over the image that something still holds open (a filesystem live in another mount
 * namespace), if any. Idle leftovers (a crash between attach and mount) are detached on the way: the
 * kernel detaches an idle device at once, and only marks a busy one to go when its last user does.
 */
async function liveLoopDevice(imagePath: string): Promise<string | undefined> {
  const devices = await loopDevicesOf(imagePath);
  if (devices.length === 0) return undefined;
  for (const device of devices) await runChecked('losetup', ['-d', device]).catch(() => undefined);
  return (await loopDevicesOf(imagePath))[0];
}

async function findKind(
  dir: string,
  id: string,
): Promise<{ path: string; fstype: VolumeFstype } | undefined> {
  for (const [fstype, suffix] of Object.entries(KINDS) as [VolumeFstype, string][]) {
    const path = join(dir, `${id}${suffix}`);
    if (await stat(path).catch(() => undefined)) return { path, fstype };
  }
  return undefined;
}

async function idsIn(dir: string): Promise<string[]> {
  const suffixes = Object.values(KINDS) as string[];
  return (await readdir(dir))
    .filter((name) => suffixes.some((s) => name.endsWith(s)))
    .map((name) => name.slice(0, name.lastIndexOf('.')))
    .filter((id) => SAFE_ID.test(id))
    .sort();
}

const snapshotKey = (snapshotId: string) => `snapshot:${snapshotId}`;

function checkId(id: string, what: 'volume' | 'snapshot'): void {
  if (!SAFE_ID.test(id)) throw invalidArgument(`${id} is not a valid ${what} id`);
}

function checkSizeGb(sizeGb: number): void {
  if (!Number.isInteger(sizeGb) || sizeGb < 1) {
    throw invalidArgument(`size_gb: expected a whole number of GB, at least 1, got ${sizeGb}`);
  }
}

function checkOwnerId(id: number): number {
  if (!Number.isInteger(id) || id < 0 || id > 0xffff_fffe) throw invalidArgument(`${id} is not a uid or gid`);
  return id;
}

const ignoreCode = (code: string) => (error: NodeJS.ErrnoException) => {
  if (error.code !== code) throw error;
};

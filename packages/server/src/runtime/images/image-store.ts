import {
  chmodSync,
  createReadStream,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { createGunzip } from 'node:zlib';
import { HangarError } from '../../shared/errors.js';
import { formatReference, type ImageReference, parseReference } from '../../shared/image-reference.js';
import { formatBytes } from '../../shared/limits.js';
import { checkRegistryHost, type Lookup, type RegistryPolicy } from '../../shared/registry-policy.js';
import { CommandError, runChecked, runCommand } from '../../shared/run.js';
import type { ImageRefRecord } from '../../store/records.js';
import type { UidMapping } from '../uid-range.js';
import {
  type ImageConfig,
  type LayoutLayer,
  layoutTags,
  readLayoutImage,
  readLayoutLayers,
  removeLayoutTags,
} from './oci-layout.js';
import { ImagePullError, PULL_MESSAGES, pullErrorFromSkopeo } from './pull-error.js';
import { HOST_PLATFORM, resolveManifest, skopeoAuthArgs } from './resolve-manifest.js';
import { ReadWriteLock } from './rw-lock.js';
import { SharedWork } from './shared-work.js';

export type { ImageConfig } from './oci-layout.js';
export { ImagePullError } from './pull-error.js';

/**
 * Images for machines: pulled with skopeo into one OCI layout (so images that share layers share blobs),
 * unpacked with umoci once per (manifest digest, uid mapping), and kept until gc(). Every machine of an
 * app runs from the same unpacked root filesystem, which is therefore read-only by convention: the
 * runtime must put anything writable on top of it, never write into it.
 *
 * On disk, under `dir`:
 *   oci/                         the OCI layout; each image is tagged with its manifest digest's hex
 *   unpacked/<hex>/<hostId>/     an umoci bundle: rootfs/ (owned by the mapped ids) and image.json
 *   tmp/                         unpacks in progress; emptied at construction, so a crash leaves nothing
 * A bundle directory appears by rename only once it is complete, so its presence means it is usable.
 *
 * Caching is by the digest of the single-platform manifest (for an index, the entry for this host), which
 * is also the digest reported in `ref.digest` and the unit of gc().
 */

export interface PreparedImage {
  ref: ImageRefRecord;
  config: ImageConfig;
  /** Absolute path of the unpacked root filesystem, owned by the mapping's host ids. */
  rootfs: string;
}

export interface ImageStoreOptions {
  /** `<dataDir>/images`. Must not contain `:` (skopeo and umoci split image names on it). */
  dir: string;
  /**
   * Hangar's own registry: its `host:port` spellings (reached over plain HTTP) and the credential only
   * hangard holds, with which it may pull any repository (the api decided which ones a machine may use).
   */
  ownRegistry?: { addresses: string[]; credential: string };
  /** `host:port` of other registries reached over plain HTTP without TLS checks (the operator's). */
  insecureRegistries?: string[];
  /**
   * Which registries may be pulled from, checked again right before each pull. Default: Hangar's own
   * and the insecure ones, nothing private.
   */
  policy?: RegistryPolicy;
  /** Name resolution for the policy (tests replace it). */
  lookup?: Lookup;
  /** Where the host-side detail of a failed pull goes (hangard's log); tenants see only the message. */
  log?: (line: string) => void;
  /** Bound on one prepare(): resolving, copying and unpacking. */
  pullTimeoutMs?: number;
  /**
   * Resolve tags on Hangar's own registry with one direct HTTP request (a few ms, so a cache hit stays
   * fast) instead of `skopeo inspect` (~30 ms). On by default; off sends everything through skopeo.
   */
  directManifestFetch?: boolean;
  /** Bounds on one image and on what one uid mapping (one app) holds unpacked; unset: unbounded. */
  limits?: Partial<ImageLimits>;
}

/** Settings `images.*` and `quotas.images*` (config.ts); messages name them so the operator finds them. */
export interface ImageLimits {
  /** One image's config and layers as pulled (compressed), as its manifest declares them. */
  maxPullBytes: number;
  /** One image's root filesystem unpacked. */
  maxUnpackedBytes: number;
  /** Distinct images unpacked for one mapping (one app). */
  imagesPerApp: number;
  /** Their unpacked bytes together. */
  imageBytesPerApp: number;
}

/** What one mapping (one app) holds unpacked: its images' digests and their unpacked bytes. */
export interface ImageUsage {
  images: Map<string, number>;
  bytes: number;
}

export interface ImageStoreStats {
  /** Manifest look-ups at a registry. */
  resolves: number;
  /** `skopeo copy` runs into the layout. */
  copies: number;
  /** `umoci unpack` runs. */
  unpacks: number;
  /** prepare() calls answered from an existing bundle. */
  hits: number;
}

export interface ImageGcResult {
  /** Bundle directories removed. */
  bundles: string[];
  /** Digests whose images were removed from the OCI layout. */
  digests: string[];
}

/** Written into each bundle so that a cache hit needs neither skopeo nor the layout. */
interface BundleMeta {
  version: 1;
  digest: string;
  mapping: UidMapping;
  config: ImageConfig;
  unpackedAt: string;
  /** The root filesystem's bytes (absent in bundles unpacked before it was recorded: counted as 0). */
  unpackedBytes?: number;
}

const META_FILE = 'image.json';
/** admitImage() answers an API call: a tag it must resolve gets this long, then the boot decides. */
const ADMIT_RESOLVE_MS = 10_000;
/** How long a hand-out is remembered: longer than any `spareRecentMs` worth asking for. */
const PREPARED_HOLD_MS = 60 * 60_000;
const HEX_DIGEST = /^[a-f0-9]{64}$/;
const TRAVERSE_ONLY = 0o711;

export class ImageStore {
  readonly dir: string;
  readonly #layout: string;
  readonly #unpackedDir: string;
  readonly #tmpDir: string;
  readonly #insecure: Set<string>;
  readonly #own: Set<string>;
  /** `Basic …` with hangard's own credential, for direct requests to Hangar's registry. */
  readonly #ownAuthorization: string | undefined;
  /** An auth file (0600) with hangard's credential for Hangar's registry, for skopeo. */
  readonly #ownAuthFile: string | undefined;
  readonly #policy: RegistryPolicy;
  readonly #lookup: Lookup | undefined;
  readonly #log: (line: string) => void;
  readonly #timeoutMs: number;
  readonly #direct: boolean;
  /** Index digest → this host's manifest digest. Digests never change meaning, so this is never stale. */
  readonly #platformOf = new Map<string, string>();
  readonly #copies = new SharedWork<void>();
  readonly #unpacks = new SharedWork<BundleMeta>();
  /** Digests being copied or unpacked: gc() must leave them alone. */
  readonly #busy = new Map<string, number>();
  /**
   * When prepare() last handed out each digest: a boot records its image in the store only after
   * prepare, so a gc() while machines boot spares what was handed out lately (`spareRecentMs`).
   */
  readonly #handedOut = new Map<string, number>();
  readonly #layoutLock = new ReadWriteLock();
  readonly #stats: ImageStoreStats = { resolves: 0, copies: 0, unpacks: 0, hits: 0 };
  readonly #limits: ImageLimits;
  /** Per mapping (host id): digests being unpacked for it, with how many prepares wait for each. */
  readonly #unpacking = new Map<number, Map<string, number>>();
  /** What each reference resolved to last: lets admitImage() tell a known image from a new one. */
  readonly #resolvedRefs = new Map<string, string>();
  #closed = false;

  constructor(options: ImageStoreOptions) {
    this.dir = isAbsolute(options.dir) ? options.dir : resolve(options.dir);
    if (this.dir.includes(':')) {
      throw new HangarError(
        'invalid_argument',
        `the image directory ${this.dir} contains ':', which skopeo and umoci cannot handle`,
      );
    }
    this.#layout = join(this.dir, 'oci');
    this.#unpackedDir = join(this.dir, 'unpacked');
    this.#tmpDir = join(this.dir, 'tmp');
    const own = options.ownRegistry;
    this.#own = new Set((own?.addresses ?? []).flatMap(loopbackAliases));
    this.#insecure = new Set([...(options.insecureRegistries ?? []).flatMap(loopbackAliases), ...this.#own]);
    this.#policy = options.policy ?? {
      own: [...this.#own],
      allowed: [...this.#insecure],
      allowPrivate: false,
    };
    this.#lookup = options.lookup;
    this.#log = options.log ?? (() => undefined);
    this.#timeoutMs = options.pullTimeoutMs ?? 120_000;
    this.#direct = options.directManifestFetch ?? true;
    this.#limits = {
      maxPullBytes: Number.POSITIVE_INFINITY,
      maxUnpackedBytes: Number.POSITIVE_INFINITY,
      imagesPerApp: Number.POSITIVE_INFINITY,
      imageBytesPerApp: Number.POSITIVE_INFINITY,
      ...options.limits,
    };
    // Anything in tmp/ is an unpack that a crash interrupted; nothing refers to it.
    rmSync(this.#tmpDir, { recursive: true, force: true });
    mkdirSync(this.#tmpDir, { recursive: true, mode: 0o700 });
    // With a user namespace the container's init runs as the mapped root and must be able to traverse the
    // path down to its rootfs, so the directories above it are searchable by anyone (but not listable).
    // `dir` must exist in any case: skopeo refuses `oci:<dir>/oci:<tag>` when the layout's parent is missing.
    for (const path of [this.dir, this.#unpackedDir]) {
      mkdirSync(path, { recursive: true });
      chmodSync(path, TRAVERSE_ONLY);
    }
    if (own) {
      const auth = Buffer.from(`hangard:${own.credential}`).toString('base64');
      this.#ownAuthorization = `Basic ${auth}`;
      // A file rather than --src-creds: a command line is readable by every user of the host.
      this.#ownAuthFile = join(this.dir, 'own-registry-auth.json');
      const auths = Object.fromEntries([...this.#own].map((address) => [address, { auth }]));
      rmSync(this.#ownAuthFile, { force: true });
      writeFileSync(this.#ownAuthFile, JSON.stringify({ auths }), { mode: 0o600 });
    }
  }

  get stats(): Readonly<ImageStoreStats> {
    return { ...this.#stats };
  }

  /**
   * Resolves `reference` to a manifest digest and returns that image unpacked for `mapping`, pulling and
   * unpacking it first unless it already is. Rejects with ImagePullError for anything about the image;
   * a malformed mapping (a caller's bug) is a TypeError.
   */
  async prepare(reference: string, mapping: UidMapping, signal?: AbortSignal): Promise<PreparedImage> {
    checkMapping(mapping);
    let parsed: ImageReference;
    try {
      parsed = parseReference(reference);
    } catch (error) {
      throw new ImagePullError('invalid_reference', reference, (error as Error).message, { cause: error });
    }
    if (this.#closed) throw new ImagePullError('cancelled', reference, 'the image store is closed');
    // A pinned digest that is already unpacked needs no registry at all.
    const pinned = parsed.digest ? (this.#platformOf.get(parsed.digest) ?? parsed.digest) : '';
    const pinnedMeta = pinned ? this.#readBundle(pinned, mapping) : undefined;
    if (pinnedMeta !== undefined) {
      this.#stats.hits++;
      return this.#prepared(parsed, pinnedMeta);
    }
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const deadline = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      const resolved = await this.#resolve(parsed, reference, deadline);
      const digest = resolved.digest;
      this.#resolvedRefs.set(reference, digest);
      const cached = this.#readBundle(digest, mapping);
      if (cached !== undefined) {
        this.#stats.hits++;
        return this.#prepared(parsed, cached);
      }
      // A new image for this mapping: within the app's quota, and not too large to pull.
      const done = this.#admitUnpack(digest, mapping, reference);
      try {
        await this.#checkPullSize(parsed, reference, resolved, deadline);
        const meta = await this.#unpacks.run(
          `${digest}/${mapping.hostId}`,
          (work) => this.#pullAndUnpack(parsed, reference, digest, mapping, work),
          deadline,
        );
        return this.#prepared(parsed, meta);
      } finally {
        done();
      }
    } catch (error) {
      const explained = this.#explain(error, reference, { cancelled: signal, timedOut: timeout });
      this.#log(
        `pulling image ${reference} failed (${explained.reason}): ${explained.detail || explained.message}`,
      );
      throw explained;
    }
  }

  /**
   * Whether `reference` fits beside what `mapping` (one app) already holds unpacked: below both quotas,
   * anything does; at one, only an image it already holds. Asked when a machine is created or updated,
   * so the refusal comes at once; prepare() checks again, authoritatively, when it unpacks. Rejects
   * with an ImagePullError (`quota`); a reference that cannot be resolved now is left to the boot.
   */
  async admitImage(reference: string, mapping: UidMapping, signal?: AbortSignal): Promise<void> {
    checkMapping(mapping);
    const usage = this.usage(mapping);
    const pending = [...(this.#unpacking.get(mapping.hostId)?.keys() ?? [])].filter(
      (digest) => !usage.images.has(digest),
    );
    const count = usage.images.size + pending.length;
    if (count < this.#limits.imagesPerApp && usage.bytes < this.#limits.imageBytesPerApp) return;
    let digest: string | undefined;
    try {
      const parsed = parseReference(reference);
      digest = parsed.digest
        ? (this.#platformOf.get(parsed.digest) ?? parsed.digest)
        : (this.#resolvedRefs.get(reference) ??
          (await this.#resolve(parsed, reference, signal ?? AbortSignal.timeout(ADMIT_RESOLVE_MS))).digest);
    } catch {
      return;
    }
    if (usage.images.has(digest) || pending.includes(digest)) return;
    this.#checkAppRoom(reference, usage, pending.length, 0);
  }

  /** The images unpacked for `mapping` (one app) and their bytes, from the bundles on disk. */
  usage(mapping: Pick<UidMapping, 'hostId'>): ImageUsage {
    const images = new Map<string, number>();
    let bytes = 0;
    for (const hex of readdirSync(this.#unpackedDir)) {
      if (!HEX_DIGEST.test(hex)) continue;
      let meta: BundleMeta;
      try {
        meta = JSON.parse(
          readFileSync(join(this.#unpackedDir, hex, String(mapping.hostId), META_FILE), 'utf8'),
        ) as BundleMeta;
      } catch {
        continue;
      }
      images.set(`sha256:${hex}`, meta.unpackedBytes ?? 0);
      bytes += meta.unpackedBytes ?? 0;
    }
    return { images, bytes };
  }

  async #resolve(parsed: ImageReference, reference: string, deadline: AbortSignal) {
    const registry = parsed.registry.toLowerCase();
    const own = this.#own.has(registry);
    if (!own) {
      // Again here, not only when the machine was created: what a name resolves to can change.
      await checkRegistryHost(parsed.registry, this.#policy, this.#lookup).catch((error: unknown) => {
        throw HangarError.is(error) && error.code === 'forbidden'
          ? new ImagePullError('refused', reference, error.message, { cause: error })
          : error;
      });
    }
    const resolved = await resolveManifest(parsed, {
      reference,
      insecure: this.#insecure.has(registry),
      ...(own && this.#direct && this.#ownAuthorization
        ? { direct: { authorization: this.#ownAuthorization } }
        : {}),
      authArgs: skopeoAuthArgs(own ? this.#ownAuthFile : undefined, 'inspect'),
      signal: deadline,
      notFoundHint: this.#notFoundHint(parsed, own),
    });
    this.#stats.resolves++;
    if (resolved.referencedDigest !== resolved.digest) {
      this.#platformOf.set(resolved.referencedDigest, resolved.digest);
    }
    return resolved;
  }

  /**
   * Counts `digest` as being unpacked for the mapping, after checking (with no await between the check
   * and the count, so concurrent prepares cannot both take the app's last slot) that the app has room
   * for one more image. Returns the function that uncounts it.
   */
  #admitUnpack(digest: string, mapping: UidMapping, reference: string): () => void {
    let pending = this.#unpacking.get(mapping.hostId);
    if (!pending?.has(digest)) {
      const others = [...(pending?.keys() ?? [])];
      this.#checkAppRoom(reference, this.usage(mapping), others.length, 0);
    }
    if (!pending) {
      pending = new Map();
      this.#unpacking.set(mapping.hostId, pending);
    }
    pending.set(digest, (pending.get(digest) ?? 0) + 1);
    return () => {
      const left = (pending.get(digest) ?? 1) - 1;
      if (left > 0) pending.set(digest, left);
      else pending.delete(digest);
      if (pending.size === 0 && this.#unpacking.get(mapping.hostId) === pending)
        this.#unpacking.delete(mapping.hostId);
    };
  }

  /** Refuses one more image of `bytes` (0: not known yet) beside `usage` and `pending` others. */
  #checkAppRoom(reference: string, usage: ImageUsage, pending: number, bytes: number): void {
    const { imagesPerApp, imageBytesPerApp } = this.#limits;
    const count = usage.images.size + pending;
    if (count + 1 > imagesPerApp) {
      throw new ImagePullError(
        'quota',
        reference,
        `quota exceeded: this app may hold at most ${imagesPerApp} distinct images unpacked on this host ` +
          `(it holds ${count}); images no machine uses any more are removed by the next image collection, ` +
          'or the operator can raise the setting quotas.imagesPerApp',
      );
    }
    if (usage.bytes + Math.max(bytes, 1) > imageBytesPerApp) {
      throw new ImagePullError(
        'quota',
        reference,
        `quota exceeded: this app's unpacked images may take at most ${formatBytes(imageBytesPerApp)} on this host ` +
          `(they take ${formatBytes(usage.bytes)}${bytes > 0 ? `, this one ${formatBytes(bytes)} more` : ''}); ` +
          'images no machine uses any more are removed by the next image collection, or the operator can ' +
          'raise the setting quotas.imageBytesPerApp',
      );
    }
  }

  /** Refuses, before anything is copied, an image whose manifest declares more than images.maxPullBytes. */
  async #checkPullSize(
    parsed: ImageReference,
    reference: string,
    resolved: { digest: string; bytes?: number },
    deadline: AbortSignal,
  ): Promise<void> {
    const max = this.#limits.maxPullBytes;
    if (max === Number.POSITIVE_INFINITY) return;
    // An index declares no layers: its entry for this host does.
    const bytes =
      resolved.bytes ??
      (await this.#resolve({ ...parsed, digest: resolved.digest }, reference, deadline)).bytes ??
      0;
    if (bytes > max) {
      throw new ImagePullError(
        'too_large',
        reference,
        `image ${formatReference(parsed)} is too large: its layers are ${formatBytes(bytes)}, and this host ` +
          `pulls at most ${formatBytes(max)} per image (setting images.maxPullBytes); make the image smaller`,
      );
    }
  }

  /**
   * Removes every unpacked bundle and layout image whose digest is not in `inUse` (nor being prepared).
   * The caller includes every digest a machine runs or is about to start from; with `spareRecentMs`
   * (a gc while machines may be booting), digests prepare() handed out that recently are kept too.
   */
  async gc(inUse: Set<string>, options: { spareRecentMs?: number } = {}): Promise<ImageGcResult> {
    const now = Date.now();
    for (const [digest, at] of this.#handedOut)
      if (now - at > PREPARED_HOLD_MS) this.#handedOut.delete(digest);
    const since = now - (options.spareRecentMs ?? 0);
    const keep = (digest: string) =>
      inUse.has(digest) || this.#busy.has(digest) || (this.#handedOut.get(digest) ?? -1) > since;
    const bundles: string[] = [];
    for (const hex of await readdir(this.#unpackedDir)) {
      if (!HEX_DIGEST.test(hex) || keep(`sha256:${hex}`)) continue;
      const digestDir = join(this.#unpackedDir, hex);
      for (const hostId of await readdir(digestDir)) bundles.push(join(digestDir, hostId));
      // Moved aside first, so an interrupted removal never leaves a half-deleted bundle that looks whole.
      const trash = await mkdtemp(join(this.#tmpDir, 'gc-'));
      await rename(digestDir, join(trash, hex));
      await rm(trash, { recursive: true, force: true });
    }
    const digests = await this.#layoutLock.write(async () => {
      const removed = await removeLayoutTags(
        this.#layout,
        (tag) => HEX_DIGEST.test(tag) && !keep(`sha256:${tag}`),
      );
      if (removed.length > 0)
        await this.#umoci(['gc', '--layout', this.#layout], 'collecting unused image blobs', '');
      return removed.map((hex) => `sha256:${hex}`);
    });
    for (const [index, platform] of this.#platformOf) {
      if (digests.includes(platform)) this.#platformOf.delete(index);
    }
    return { bundles, digests };
  }

  /** Stops pulls and unpacks under way (their callers get ImagePullError) and refuses new ones. */
  async close(): Promise<void> {
    this.#closed = true;
    const reason = new HangarError('unavailable', 'the image store is closing');
    await Promise.all([this.#unpacks.abortAll(reason), this.#copies.abortAll(reason)]);
  }

  #prepared(parsed: ImageReference, meta: BundleMeta): PreparedImage {
    this.#handedOut.set(meta.digest, Date.now());
    return {
      ref: {
        registry: parsed.registry,
        repository: parsed.repository,
        tag: parsed.tag,
        digest: meta.digest,
        labels: { ...meta.config.labels },
      },
      config: structuredClone(meta.config),
      rootfs: join(this.#bundlePath(meta.digest, meta.mapping), 'rootfs'),
    };
  }

  #bundlePath(digest: string, mapping: UidMapping): string {
    return join(this.#unpackedDir, hexOf(digest), String(mapping.hostId));
  }

  /** The bundle's metadata when it is unpacked; synchronous because a cache hit must cost no more than a read. */
  #readBundle(digest: string, mapping: UidMapping): BundleMeta | undefined {
    let meta: BundleMeta;
    try {
      meta = JSON.parse(
        readFileSync(join(this.#bundlePath(digest, mapping), META_FILE), 'utf8'),
      ) as BundleMeta;
    } catch {
      return undefined;
    }
    if (meta.version !== 1 || meta.digest !== digest) return undefined;
    if (meta.mapping.size !== mapping.size) {
      // uid-range.ts gives every range the same size, so this is a caller's bug, not a cache miss.
      throw new TypeError(
        `image ${digest} is unpacked for host id ${mapping.hostId} with ${meta.mapping.size} ids, not ${mapping.size}`,
      );
    }
    return meta;
  }

  async #pullAndUnpack(
    parsed: ImageReference,
    reference: string,
    digest: string,
    mapping: UidMapping,
    signal: AbortSignal,
  ): Promise<BundleMeta> {
    // The shared work has its own deadline: the callers that started it may have left, others may wait.
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const work = AbortSignal.any([signal, timeout]);
    this.#busy.set(digest, (this.#busy.get(digest) ?? 0) + 1);
    try {
      await this.#copies.run(digest, (copySignal) => this.#copy(parsed, reference, digest, copySignal), work);
      return await this.#layoutLock.read(() => this.#unpack(parsed, reference, digest, mapping, work));
    } catch (error) {
      throw this.#explain(error, reference, { cancelled: signal, timedOut: timeout });
    } finally {
      const left = (this.#busy.get(digest) ?? 1) - 1;
      if (left === 0) this.#busy.delete(digest);
      else this.#busy.set(digest, left);
    }
  }

  async #copy(parsed: ImageReference, reference: string, digest: string, signal: AbortSignal): Promise<void> {
    await this.#layoutLock.write(async () => {
      if ((await this.#layoutTagsOrReset()).has(hexOf(digest))) return;
      const registry = parsed.registry.toLowerCase();
      const own = this.#own.has(registry);
      // By digest, not tag: the tag may have moved since it was resolved, and skopeo's docker transport
      // refuses a name with both.
      const source = `docker://${parsed.registry}/${parsed.repository}@${digest}`;
      const args = [
        'copy',
        '--quiet',
        `--src-tls-verify=${!this.#insecure.has(registry)}`,
        ...skopeoAuthArgs(own ? this.#ownAuthFile : undefined, 'src'),
        source,
        `oci:${this.#layout}:${hexOf(digest)}`,
      ];
      try {
        await runChecked('skopeo', args, { signal });
      } catch (error) {
        if (!(error instanceof CommandError) || error.failure === 'aborted') throw error;
        throw pullErrorFromSkopeo(reference, `image ${formatReference(parsed)}`, error, {
          notFound: this.#notFoundHint(parsed, own),
        });
      }
      this.#stats.copies++;
    });
  }

  /**
   * skopeo rewrites index.json in place, so a crash at the wrong moment leaves it unreadable, and then
   * skopeo and umoci both refuse the layout. The layout is only a download cache (bundles do not depend
   * on it), so it is dropped and refilled by the pulls that follow. The caller holds the write lock.
   */
  async #layoutTagsOrReset(): Promise<Set<string>> {
    try {
      return await layoutTags(this.#layout);
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
      await rm(this.#layout, { recursive: true, force: true });
      return new Set();
    }
  }

  async #unpack(
    parsed: ImageReference,
    reference: string,
    digest: string,
    mapping: UidMapping,
    signal: AbortSignal,
  ): Promise<BundleMeta> {
    const hex = hexOf(digest);
    const image = await readLayoutImage(this.#layout, hex);
    if (image.os !== HOST_PLATFORM.os || image.architecture !== HOST_PLATFORM.architecture) {
      throw new ImagePullError(
        'unsupported',
        reference,
        `image ${formatReference(parsed)} is built for ${image.os || '?'}/${image.architecture || '?'}, ` +
          `but this host runs ${HOST_PLATFORM.os}/${HOST_PLATFORM.architecture}: push a build for this platform`,
      );
    }
    await this.#checkUnpackedSize(parsed, reference, await readLayoutLayers(this.#layout, hex), signal);
    const tmp = await mkdtemp(join(this.#tmpDir, `${hex.slice(0, 12)}-${mapping.hostId}-`));
    try {
      const bundle = join(tmp, 'bundle');
      const ids = `0:${mapping.hostId}:${mapping.size}`;
      // umoci chowns every file to the mapped ids itself, so no separate chown pass is needed.
      // `raw unpack`: the rootfs only. A full `unpack` also generates a config.json, for which umoci
      // reads the image's /etc/passwd and /etc/group following symlinks on the host (an image could
      // point them at a FIFO and hang the pull, or at any host file); hangard resolves USER itself.
      await mkdir(bundle);
      const args = [
        'raw',
        'unpack',
        '--uid-map',
        ids,
        '--gid-map',
        ids,
        '--image',
        `${this.#layout}:${hex}`,
        join(bundle, 'rootfs'),
      ];
      await this.#umoci(args, `unpacking image ${formatReference(parsed)}`, reference, signal);
      const unpackedBytes = await this.#measure(join(bundle, 'rootfs'), signal);
      if (unpackedBytes > this.#limits.maxUnpackedBytes)
        throw this.#tooLarge(parsed, reference, unpackedBytes);
      const meta: BundleMeta = {
        version: 1,
        digest,
        mapping: { hostId: mapping.hostId, size: mapping.size },
        config: image.config,
        unpackedAt: new Date().toISOString(),
        unpackedBytes,
      };
      await writeFile(join(bundle, META_FILE), JSON.stringify(meta));
      await chmod(bundle, TRAVERSE_ONLY);
      const target = this.#bundlePath(digest, mapping);
      await mkdir(join(this.#unpackedDir, hex), { recursive: true, mode: TRAVERSE_ONLY });
      try {
        // The app's bytes, now that this image's are known, checked and published with no await between:
        // two unpacks for one app cannot both take its last bytes.
        const others = [...(this.#unpacking.get(mapping.hostId)?.keys() ?? [])].filter((d) => d !== digest);
        this.#checkAppRoom(reference, this.usage(mapping), others.length, unpackedBytes);
        renameSync(bundle, target);
      } catch (error) {
        if (error instanceof ImagePullError) throw error;
        // Another hangard process on the same directory got there first; its bundle is as good as ours.
        const code = (error as NodeJS.ErrnoException).code;
        const existing =
          code === 'ENOTEMPTY' || code === 'EEXIST' ? this.#readBundle(digest, mapping) : undefined;
        if (existing === undefined) throw error;
        return existing;
      }
      this.#stats.unpacks++;
      return meta;
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /**
   * Refuses, before unpacking, an image whose layers unpack to more than images.maxUnpackedBytes:
   * gzip layers are decompressed (nothing written) and counted, stopping as soon as the bound is passed,
   * so a small layer that inflates to fill the disk never gets unpacked. Layers in other compressions are
   * measured after unpacking instead.
   */
  async #checkUnpackedSize(
    parsed: ImageReference,
    reference: string,
    layers: LayoutLayer[],
    signal: AbortSignal,
  ): Promise<void> {
    const max = this.#limits.maxUnpackedBytes;
    if (max === Number.POSITIVE_INFINITY) return;
    let total = 0;
    for (const layer of layers) {
      if (/\.tar$|\btar$/.test(layer.mediaType) && !/gzip|zstd/.test(layer.mediaType)) total += layer.size;
      else if (/gzip/.test(layer.mediaType)) total += await inflatedBytes(layer.path, max - total, signal);
      if (total > max) throw this.#tooLarge(parsed, reference, total);
    }
  }

  #tooLarge(parsed: ImageReference, reference: string, bytes: number): ImagePullError {
    return new ImagePullError(
      'too_large',
      reference,
      `image ${formatReference(parsed)} is too large: it unpacks to more than ${formatBytes(Math.min(bytes, this.#limits.maxUnpackedBytes))}` +
        `, and this host unpacks at most ${formatBytes(this.#limits.maxUnpackedBytes)} per image ` +
        '(setting images.maxUnpackedBytes); make the image smaller',
    );
  }

  /** Bytes under `dir` (file sizes, as `du --apparent-size` counts them). */
  async #measure(dir: string, signal: AbortSignal): Promise<number> {
    const result = await runCommand('du', ['-s', '-b', dir], { signal });
    const bytes = Number.parseInt(result.stdout.split('\t')[0] ?? '', 10);
    if (result.code !== 0 || !Number.isSafeInteger(bytes)) {
      throw new HangarError('internal', `measuring an unpacked image failed: ${result.stderr.trim()}`);
    }
    return bytes;
  }

  async #umoci(args: string[], what: string, reference: string, signal?: AbortSignal): Promise<void> {
    try {
      await runChecked('umoci', args, { signal, umask: 0o022 });
    } catch (error) {
      if (!(error instanceof CommandError) || error.failure === 'aborted') throw error;
      const fix = error.failure === 'not_installed' ? ": install Debian's umoci package" : '';
      throw new ImagePullError('failed', reference, `${what} failed on the host`, {
        cause: error,
        detail: `${error.message}${fix}`,
      });
    }
  }

  #notFoundHint(parsed: ImageReference, own: boolean): string {
    if (!own) return 'check the name and tag';
    const target = `docker://${parsed.registry}/${parsed.repository}:${parsed.tag || 'latest'}`;
    return (
      'check the name and tag, or push it first with skopeo copy --dest-tls-verify=false ' +
      `--dest-creds x:<deploy token> oci:<layout>:<tag> ${target}`
    );
  }

  /** Aborts become timeout or cancelled errors; anything else unexpected becomes a `failed` ImagePullError. */
  #explain(
    error: unknown,
    reference: string,
    signals: { cancelled: AbortSignal | undefined; timedOut: AbortSignal },
  ): ImagePullError {
    if (error instanceof ImagePullError && error.reason !== 'failed') return error;
    if (signals.cancelled?.aborted || this.#closed) {
      return new ImagePullError('cancelled', reference, `preparing image ${reference} was cancelled`, {
        cause: error,
      });
    }
    if (signals.timedOut.aborted) {
      return new ImagePullError(
        'timeout',
        reference,
        `pulling image ${reference} took longer than ${this.#timeoutMs / 1000} s: the registry is slow or ` +
          'unreachable; check it and try again',
        { cause: error, detail: error instanceof ImagePullError ? error.detail : errorText(error) },
      );
    }
    if (error instanceof ImagePullError) return error;
    return new ImagePullError('failed', reference, PULL_MESSAGES.failed(`image ${reference}`), {
      cause: error,
      detail: errorText(error),
    });
  }
}

/** A gzip blob's inflated size, counted up to just past `limit` (then it stops reading). */
function inflatedBytes(path: string, limit: number, signal: AbortSignal): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const input = createReadStream(path);
    const gunzip = createGunzip();
    let bytes = 0;
    const finish = (error?: Error) => {
      input.destroy();
      gunzip.destroy();
      signal.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolvePromise(bytes);
    };
    const onAbort = () =>
      finish(
        signal.reason instanceof Error
          ? signal.reason
          : new HangarError('unavailable', 'counting an image layer was cancelled'),
      );
    signal.addEventListener('abort', onAbort, { once: true });
    gunzip.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > limit) finish();
    });
    gunzip.once('end', () => finish());
    gunzip.once('error', (error) => finish(error));
    input.once('error', (error) => finish(error));
    input.pipe(gunzip);
  });
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function hexOf(digest: string): string {
  return digest.slice('sha256:'.length);
}

function checkMapping(mapping: UidMapping): void {
  const ok = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
  if (!ok(mapping.hostId) || !ok(mapping.size) || mapping.size < 1) {
    throw new TypeError(`invalid uid mapping ${JSON.stringify(mapping)}`);
  }
}

/** Hangar's own registry is written as `localhost:<port>` or `127.0.0.1:<port>`; both mean the same one. */
function loopbackAliases(address: string): string[] {
  const lower = address.toLowerCase();
  const port = /^(?:localhost|127\.0\.0\.1)(:\d+)?$/.exec(lower)?.[1];
  if (port === undefined && !/^(?:localhost|127\.0\.0\.1)$/.test(lower)) return [lower];
  return [`localhost${port ?? ''}`, `127.0.0.1${port ?? ''}`];
}

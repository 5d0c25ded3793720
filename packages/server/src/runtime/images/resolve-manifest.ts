import { createHash } from 'node:crypto';
import { formatReference, type ImageReference } from '../../shared/image-reference.js';
import { CommandError, runCheckedBytes } from '../../shared/run.js';
import { ImagePullError, PULL_MESSAGES, pullErrorFromSkopeo } from './pull-error.js';

/**
 * Turns a reference into the digest of the single-platform manifest this host will run, before anything
 * is copied, so that a cached image is found without a pull. Tags always go to the registry (they move);
 * an image index (multi-platform) resolves to its entry for this host's platform.
 *
 * Hangar's own registry is asked directly with one HTTP request (a few ms), with hangard's own
 * credential; all others through `skopeo inspect --raw` (~30 ms), which brings the host's certificates
 * and registries.conf with it, but never the host's saved credentials (see `skopeoAuthArgs`).
 */
export interface ResolvedManifest {
  /** `sha256:…` of the single-platform manifest: what gets copied, unpacked and cached. */
  digest: string;
  /** `sha256:…` the reference pointed at: the same, or the digest of the index it came from. */
  referencedDigest: string;
  /**
   * What a pull copies, as the manifest declares it (its config and layers, compressed); absent when
   * the reference named an index (resolve the platform manifest's digest to learn it).
   */
  bytes?: number;
}

export interface ResolveContext {
  /** The reference as the caller wrote it, for errors. */
  reference: string;
  /** Reach the registry over plain HTTP without TLS verification. */
  insecure: boolean;
  /** Hangar's own registry: the Authorization header to ask it directly with, instead of through skopeo. */
  direct?: { authorization: string };
  /** skopeo's credential arguments for this registry (`skopeoAuthArgs`). */
  authArgs: string[];
  signal: AbortSignal;
  /** What to tell the user when the image is missing. */
  notFoundHint: string;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(', ');
/** Manifests are a few KiB; anything this big is not one. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export const HOST_PLATFORM = {
  os: 'linux',
  architecture: process.arch === 'x64' ? 'amd64' : process.arch,
};

export async function resolveManifest(
  ref: ImageReference,
  context: ResolveContext,
): Promise<ResolvedManifest> {
  const target = ref.digest || ref.tag;
  const raw = context.direct
    ? await fetchDirect(ref, target, context, context.direct.authorization)
    : await fetchWithSkopeo(ref, target, context);
  const digest = `sha256:${createHash('sha256').update(raw).digest('hex')}`;
  const what = describe(ref);
  const fail = (reason: 'failed' | 'unsupported', message: string) =>
    new ImagePullError(reason, context.reference, `${what}: ${message}`);
  if (ref.digest && digest !== ref.digest) {
    throw fail('failed', `the registry returned a manifest whose digest is ${digest}, not the one asked for`);
  }
  let manifest: {
    schemaVersion?: number;
    mediaType?: string;
    manifests?: unknown;
    config?: unknown;
    layers?: unknown;
  };
  try {
    manifest = JSON.parse(raw.toString('utf8'));
  } catch {
    throw fail('failed', 'the registry returned a manifest that is not JSON');
  }
  if (manifest.schemaVersion !== 2) {
    throw fail(
      'unsupported',
      'only schema 2 (Docker v2 or OCI) manifests are supported; push it again with skopeo',
    );
  }
  const isIndex =
    manifest.mediaType === OCI_INDEX ||
    manifest.mediaType === DOCKER_LIST ||
    Array.isArray(manifest.manifests);
  if (!isIndex) return { digest, referencedDigest: digest, bytes: declaredBytes(manifest, fail) };
  return {
    digest: pickPlatform(manifest.manifests, (message) => fail('unsupported', message)),
    referencedDigest: digest,
  };
}

/** The sizes a manifest declares for its config and layers (skopeo checks each blob against them). */
function declaredBytes(
  manifest: { config?: unknown; layers?: unknown },
  fail: (r: 'unsupported', m: string) => Error,
): number {
  const descriptors = [manifest.config, ...(Array.isArray(manifest.layers) ? manifest.layers : [])];
  let bytes = 0;
  for (const descriptor of descriptors) {
    const size = (descriptor as { size?: unknown } | undefined)?.size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw fail(
        'unsupported',
        'its manifest does not declare the size of every layer; push it again with skopeo',
      );
    }
    bytes += size;
  }
  return bytes;
}

interface Descriptor {
  digest?: unknown;
  mediaType?: unknown;
  platform?: { os?: unknown; architecture?: unknown };
}

function pickPlatform(entries: unknown, fail: (message: string) => Error): string {
  const list = (Array.isArray(entries) ? entries : []) as Descriptor[];
  const match = list.find(
    (entry) =>
      entry.platform?.os === HOST_PLATFORM.os &&
      entry.platform.architecture === HOST_PLATFORM.architecture &&
      entry.mediaType !== OCI_INDEX &&
      entry.mediaType !== DOCKER_LIST,
  );
  if (
    match === undefined ||
    typeof match.digest !== 'string' ||
    !/^sha256:[a-f0-9]{64}$/.test(match.digest)
  ) {
    const platforms = list.map((entry) => `${entry.platform?.os}/${entry.platform?.architecture}`).join(', ');
    throw fail(
      `it has no ${HOST_PLATFORM.os}/${HOST_PLATFORM.architecture} variant (it has: ${platforms || 'none'})`,
    );
  }
  return match.digest;
}

function describe(ref: ImageReference): string {
  return `image ${formatReference(ref)}`;
}

async function fetchWithSkopeo(
  ref: ImageReference,
  target: string,
  context: ResolveContext,
): Promise<Buffer> {
  const separator = target.startsWith('sha256:') ? '@' : ':';
  const args = ['inspect', '--raw', `--tls-verify=${!context.insecure}`, ...context.authArgs];
  args.push(`docker://${ref.registry}/${ref.repository}${separator}${target}`);
  try {
    return await runCheckedBytes('skopeo', args, {
      signal: context.signal,
      maxOutputBytes: MAX_MANIFEST_BYTES,
    });
  } catch (error) {
    if (!(error instanceof CommandError) || error.failure === 'aborted') throw error;
    throw pullErrorFromSkopeo(context.reference, describe(ref), error, { notFound: context.notFoundHint });
  }
}

/**
 * skopeo's credential arguments: an auth file hangard wrote for this registry, or none at all. Without
 * `--no-creds` skopeo would read the host user's saved logins ($XDG_RUNTIME_DIR/containers/auth.json,
 * ~/.docker/config.json, REGISTRY_AUTH_FILE), lending the host's credentials to any tenant's image.
 */
export function skopeoAuthArgs(authFile: string | undefined, side: 'src' | 'inspect'): string[] {
  if (authFile === undefined) return [side === 'src' ? '--src-no-creds' : '--no-creds'];
  return [side === 'src' ? '--src-authfile' : '--authfile', authFile];
}

async function fetchDirect(
  ref: ImageReference,
  target: string,
  context: ResolveContext,
  authorization: string,
): Promise<Buffer> {
  const what = describe(ref);
  const base = `http://${ref.registry}/v2/${ref.repository}`;
  const get = async (url: string, headers: Record<string, string> = {}) => {
    try {
      return await fetch(url, { headers: { ...headers, authorization }, signal: context.signal });
    } catch (error) {
      if (context.signal.aborted) throw error;
      const cause =
        error instanceof Error && error.cause instanceof Error ? error.cause.message : String(error);
      throw new ImagePullError('unreachable', context.reference, PULL_MESSAGES.unreachable(what), {
        cause: error,
        detail: `Hangar's registry: ${cause}`,
      });
    }
  };

  const response = await get(`${base}/manifests/${target}`, { accept: ACCEPT });
  if (response.ok) {
    const bytes = Buffer.from(await response.arrayBuffer());
    if (bytes.length > MAX_MANIFEST_BYTES) {
      throw new ImagePullError(
        'failed',
        context.reference,
        `${what}: the registry returned an oversized manifest`,
      );
    }
    return bytes;
  }
  const said = registryMessage(await response.text()) || `HTTP ${response.status}`;
  if (response.status === 401 || response.status === 403) {
    throw new ImagePullError('unauthorized', context.reference, PULL_MESSAGES.unauthorized(what), {
      detail: `Hangar's registry answered ${response.status}: ${said}`,
    });
  }
  if (response.status !== 404) {
    throw new ImagePullError('failed', context.reference, PULL_MESSAGES.failed(what), {
      detail: `Hangar's registry answered ${response.status}: ${said}`,
    });
  }
  // A missing manifest looks the same for an unknown tag and an unknown repository; the tag list tells
  // them apart, which is what the user needs to know to fix the name.
  const tags = await get(`${base}/tags/list?n=20`);
  const tagList = tags.ok
    ? await tags.json().then(
        (body) => (body as { tags?: string[] | null }).tags ?? [],
        () => [],
      )
    : null;
  const problem =
    tagList === null
      ? `the repository ${ref.repository} does not exist there`
      : `${ref.repository} has no ${ref.digest ? `manifest ${ref.digest}` : `tag ${ref.tag}`} (its tags: ${tagList.join(', ') || 'none'})`;
  throw new ImagePullError(
    'not_found',
    context.reference,
    PULL_MESSAGES.notFound(what, `${problem}; ${context.notFoundHint}`),
    {
      detail: `Hangar's registry: ${said}`,
    },
  );
}

/** The message of a registry's `{"errors":[{"code","message"}]}` body. */
function registryMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { errors?: { code?: string; message?: string }[] };
    const first = parsed.errors?.[0];
    return first ? `${first.code ?? ''} ${first.message ?? ''}`.trim() : '';
  } catch {
    return body.slice(0, 200);
  }
}

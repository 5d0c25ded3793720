import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../shared/errors.js';

/**
 * Reads (and trims) the image store's OCI image layout: index.json → manifest → config blob, as in the
 * OCI image-layout spec. Only the fields Hangar uses are read. Every digest that becomes a path is checked
 * first, so a corrupt or hostile layout cannot point reads outside its blobs directory.
 */

/** What an image asks of the machine that runs it (the OCI image config's `config` object). */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: Record<string, string>;
  /** `/` when the image does not set one, as Docker does. */
  workingDir: string;
  /** `user`, `uid`, `user:group` or `uid:gid`; empty means root. */
  user: string;
  stopSignal: string | undefined;
  labels: Record<string, string>;
}

export interface LayoutImage {
  config: ImageConfig;
  os: string;
  architecture: string;
}

const REF_NAME = 'org.opencontainers.image.ref.name';
const DIGEST = /^sha256:([a-f0-9]{64})$/;

interface IndexJson {
  schemaVersion: number;
  manifests?: { digest: string; annotations?: Record<string, string> }[];
  [other: string]: unknown;
}

async function readIndex(layout: string): Promise<IndexJson> {
  try {
    return JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as IndexJson;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { schemaVersion: 2, manifests: [] };
    throw error;
  }
}

async function readBlobJson(layout: string, digest: unknown): Promise<Record<string, unknown>> {
  const hex = typeof digest === 'string' ? DIGEST.exec(digest)?.[1] : undefined;
  if (hex === undefined)
    throw new HangarError(
      'failed_precondition',
      `the OCI layout ${layout} refers to an invalid digest ${String(digest)}`,
    );
  return JSON.parse(await readFile(join(layout, 'blobs', 'sha256', hex), 'utf8')) as Record<string, unknown>;
}

/** The tags (ref names) in the layout. */
export async function layoutTags(layout: string): Promise<Set<string>> {
  const index = await readIndex(layout);
  return new Set(
    (index.manifests ?? []).map((m) => m.annotations?.[REF_NAME]).filter((t) => t !== undefined),
  );
}

/** The config and platform of the image tagged `tag`. */
export async function readLayoutImage(layout: string, tag: string): Promise<LayoutImage> {
  const index = await readIndex(layout);
  const entry = (index.manifests ?? []).find((m) => m.annotations?.[REF_NAME] === tag);
  if (entry === undefined)
    throw new HangarError('failed_precondition', `the OCI layout ${layout} has no image tagged ${tag}`);
  const manifest = await readBlobJson(layout, entry.digest);
  const blob = await readBlobJson(layout, (manifest.config as { digest?: unknown } | undefined)?.digest);
  return {
    config: imageConfigFromBlob(blob),
    os: typeof blob.os === 'string' ? blob.os : '',
    architecture: typeof blob.architecture === 'string' ? blob.architecture : '',
  };
}

export interface LayoutLayer {
  /** The blob's path in the layout. */
  path: string;
  mediaType: string;
  size: number;
}

/** The layers of the image tagged `tag`, in order, with their blobs' paths. */
export async function readLayoutLayers(layout: string, tag: string): Promise<LayoutLayer[]> {
  const index = await readIndex(layout);
  const entry = (index.manifests ?? []).find((m) => m.annotations?.[REF_NAME] === tag);
  if (entry === undefined)
    throw new HangarError('failed_precondition', `the OCI layout ${layout} has no image tagged ${tag}`);
  const manifest = await readBlobJson(layout, entry.digest);
  const layers = Array.isArray(manifest.layers) ? (manifest.layers as Record<string, unknown>[]) : [];
  return layers.map((layer) => {
    const hex = typeof layer.digest === 'string' ? DIGEST.exec(layer.digest)?.[1] : undefined;
    if (hex === undefined)
      throw new HangarError(
        'failed_precondition',
        `the OCI layout ${layout} refers to an invalid layer digest`,
      );
    return {
      path: join(layout, 'blobs', 'sha256', hex),
      mediaType: typeof layer.mediaType === 'string' ? layer.mediaType : '',
      size: typeof layer.size === 'number' ? layer.size : 0,
    };
  });
}

/**
 * Drops the tags in `remove` from index.json (written to a temporary file and renamed, so a crash leaves
 * the old or the new index, never half of one). Returns the tags it removed. The blobs stay until
 * `umoci gc`. The caller must hold the layout's write lock.
 */
export async function removeLayoutTags(layout: string, remove: (tag: string) => boolean): Promise<string[]> {
  const index = await readIndex(layout);
  const removed: string[] = [];
  const kept = (index.manifests ?? []).filter((m) => {
    const tag = m.annotations?.[REF_NAME];
    if (tag === undefined || !remove(tag)) return true;
    removed.push(tag);
    return false;
  });
  if (removed.length > 0) {
    const path = join(layout, 'index.json');
    await writeFile(`${path}.tmp`, JSON.stringify({ ...index, manifests: kept }));
    await rename(`${path}.tmp`, path);
  }
  return removed;
}

export function imageConfigFromBlob(blob: Record<string, unknown>): ImageConfig {
  const c = (blob.config ?? {}) as Record<string, unknown>;
  const strings = (value: unknown) =>
    Array.isArray(value) ? value.filter((v) => typeof v === 'string') : [];
  const text = (value: unknown) => (typeof value === 'string' ? value : '');
  const env: Record<string, string> = {};
  for (const entry of strings(c.Env)) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
    else if (eq < 0) env[entry] = '';
  }
  const labels: Record<string, string> = {};
  if (c.Labels && typeof c.Labels === 'object') {
    for (const [key, value] of Object.entries(c.Labels)) if (typeof value === 'string') labels[key] = value;
  }
  return {
    entrypoint: strings(c.Entrypoint),
    cmd: strings(c.Cmd),
    env,
    workingDir: text(c.WorkingDir) || '/',
    user: text(c.User),
    stopSignal: text(c.StopSignal) || undefined,
    labels,
  };
}

import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * What an app's space holds in Hangar's registry, read from the registry's storage (distribution's
 * filesystem driver) rather than through its API: the files say exactly what occupies the disk.
 *
 *   repositories/<app>/<name…>/_manifests/revisions/sha256/<hex>/link   a manifest of the repository
 *   repositories/<app>/<name…>/_layers/sha256/<hex>/link                a blob (layer, config) linked to it
 *   repositories/<app>/<name…>/_uploads/<id>/data                       an upload in progress
 *   blobs/sha256/<xx>/<hex>/data                                        the bytes of every blob, once
 */
export interface SpaceUsage {
  /** Distinct manifest digests (`sha256:…`), tagged or not, across the app's repositories. */
  manifests: Set<string>;
  /** Distinct blobs (layers, configs and manifests) and uploads in progress, in bytes. */
  bytes: number;
}

const HEX = /^[a-f0-9]{64}$/;

export async function spaceUsage(storageRoot: string, app: string): Promise<SpaceUsage> {
  const manifests = new Set<string>();
  const blobs = new Set<string>();
  let uploads = 0;
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const path = join(dir, entry.name);
      if (entry.name === '_manifests') {
        for (const hex of await hexDirs(join(path, 'revisions', 'sha256'))) {
          manifests.add(`sha256:${hex}`);
          blobs.add(hex);
        }
      } else if (entry.name === '_layers') {
        for (const hex of await hexDirs(join(path, 'sha256'))) blobs.add(hex);
      } else if (entry.name === '_uploads') {
        for (const id of await readdir(path).catch(() => [])) {
          uploads += (await stat(join(path, id, 'data')).catch(() => undefined))?.size ?? 0;
        }
      } else {
        await walk(path);
      }
    }
  };
  await walk(join(storageRoot, 'repositories', app));
  let bytes = uploads;
  for (const hex of blobs) {
    bytes +=
      (await stat(join(storageRoot, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')).catch(() => undefined))
        ?.size ?? 0;
  }
  return { manifests, bytes };
}

/** The digests linked under `dir` (each a `<hex>/link` file). */
async function hexDirs(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const linked: string[] = [];
  for (const name of names) {
    if (HEX.test(name) && (await readFile(join(dir, name, 'link'), 'utf8').catch(() => '')))
      linked.push(name);
  }
  return linked;
}

// Hangar's registry as the CLI sees it: where it is, the credentials a push uses (the CLI's token as the
// password of Basic credentials, in an auth file and a registries.conf of the push's own, so that neither
// applies to any other registry), and the registry API calls that read back what was pushed.

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface RegistryTarget {
  /** `host:port` where the CLI reaches Hangar's registry. */
  address: string;
  /** A token that may push to the app's space (sent as the password of Basic credentials). */
  token: string;
}

/** Hangar's registry for an API URL: the same host, the next port (4280 → 4281), unless told otherwise. */
export function defaultRegistryAddress(apiUrl: string): string {
  const url = new URL(apiUrl);
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80)) + 1;
  return `${url.hostname.includes(':') ? `[${url.hostname}]` : url.hostname}:${port}`;
}

/** `--registry`, else HANGAR_REGISTRY, else the API's host on the next port. */
export function registryAddress(
  flag: string | undefined,
  env: Record<string, string | undefined>,
  apiUrl: string,
): string {
  return flag ?? env.HANGAR_REGISTRY ?? defaultRegistryAddress(apiUrl);
}

function basic(token: string): string {
  return Buffer.from(`x:${token}`).toString('base64');
}

export interface PushCredentials {
  /** The auth file (also in `env` as REGISTRY_AUTH_FILE), for `--authfile`. */
  authFile: string;
  /** For buildah and skopeo: the auth file, and plain HTTP for Hangar's registry only. */
  env: Record<string, string>;
}

/** Writes the auth file (mode 0600) and registries.conf into `work`, a directory the caller removes. */
export async function writePushCredentials(work: string, registry: RegistryTarget): Promise<PushCredentials> {
  const authFile = join(work, 'auth.json');
  const registriesConf = join(work, 'registries.conf');
  await writeFile(
    authFile,
    JSON.stringify({ auths: { [registry.address]: { auth: basic(registry.token) } } }),
    {
      mode: 0o600,
    },
  );
  await writeFile(registriesConf, `[[registry]]\nlocation = "${registry.address}"\ninsecure = true\n`);
  return { authFile, env: { CONTAINERS_REGISTRIES_CONF: registriesConf, REGISTRY_AUTH_FILE: authFile } };
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export interface ManifestSummary {
  layers: number;
  bytes: number;
}

interface Manifest {
  config?: { size?: number };
  layers?: Array<{ size?: number }>;
}

const MANIFEST_TYPES =
  'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

/** Reads a pushed manifest back, to say what was pushed (layers and bytes); zeros when it cannot. */
export async function describePushed(
  registry: RegistryTarget,
  repository: string,
  digest: string,
): Promise<ManifestSummary> {
  const response = await fetch(`http://${registry.address}/v2/${repository}/manifests/${digest}`, {
    headers: { authorization: `Basic ${basic(registry.token)}`, accept: MANIFEST_TYPES },
  });
  if (!response.ok) return { layers: 0, bytes: 0 };
  const manifest = (await response.json()) as Manifest;
  const layers = manifest.layers ?? [];
  return {
    layers: layers.length,
    bytes: layers.reduce((sum, l) => sum + (l.size ?? 0), manifest.config?.size ?? 0),
  };
}

/** One line for a push's end: `Pushed 1 layer, 1.1 MB (sha256:…)`. */
export function pushedLine(summary: ManifestSummary, digest: string): string {
  const { layers, bytes } = summary;
  return `Pushed ${layers} layer${layers === 1 ? '' : 's'}, ${formatBytes(bytes)} (${digest})`;
}

/**
 * The tags of a repository in Hangar's registry, through its API with the token; undefined when the
 * registry refuses or cannot be reached (the caller shows what it knows without them).
 */
export async function listTags(
  registry: RegistryTarget,
  repository: string,
  fetchImpl: typeof fetch = fetch,
): Promise<string[] | undefined> {
  try {
    const response = await fetchImpl(`http://${registry.address}/v2/${repository}/tags/list`, {
      headers: { authorization: `Basic ${basic(registry.token)}` },
    });
    if (!response.ok) return undefined;
    const body = (await response.json()) as { tags?: string[] | null };
    return [...(body.tags ?? [])].sort();
  } catch {
    return undefined;
  }
}

/**
 * What a request to Hangar's registry asks for, from its method and path (the Docker registry HTTP API,
 * `/v2/…`). Repositories live in app spaces: the first component of a repository name is the app.
 */

export type RegistryAction = 'pull' | 'push';

export type RegistryRoute =
  | { kind: 'root' }
  | { kind: 'catalog' }
  | {
      kind: 'repository';
      repository: string;
      /** The app whose space the repository is in; undefined for a name outside every space (`foo`). */
      app: string | undefined;
      action: RegistryAction;
      /** A cross-repository blob mount reads this repository too (`?mount=…&from=<repository>`). */
      mountFrom: { repository: string; app: string | undefined } | undefined;
    }
  | { kind: 'unknown' };

/** Docker's repository name grammar: lowercase path components joined by `/`. */
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
/** `<name>/tags/list`, `<name>/manifests/<ref>`, `<name>/blobs/<digest>`, `<name>/blobs/uploads/[<id>]`. */
const ENDPOINT =
  /^\/v2\/(.+?)\/(?:tags\/list|manifests\/[^/]+|blobs\/uploads\/[^/]*|blobs\/uploads|blobs\/[^/]+)$/;

function appOf(repository: string): string | undefined {
  const slash = repository.indexOf('/');
  return slash > 0 ? repository.slice(0, slash) : undefined;
}

/** Reads and HEADs pull; everything else (uploads, manifest puts, deletes) pushes. */
export function actionOf(method: string): RegistryAction {
  return method === 'GET' || method === 'HEAD' ? 'pull' : 'push';
}

export function parseRegistryPath(method: string, pathname: string, query: URLSearchParams): RegistryRoute {
  if (pathname === '/v2/' || pathname === '/v2') return { kind: 'root' };
  if (pathname === '/v2/_catalog') return { kind: 'catalog' };
  const repository = ENDPOINT.exec(pathname)?.[1];
  if (repository === undefined || !REPOSITORY.test(repository)) return { kind: 'unknown' };
  const from = query.get('from');
  const mountFrom =
    query.has('mount') && from !== null && REPOSITORY.test(from)
      ? { repository: from, app: appOf(from) }
      : undefined;
  if (query.has('mount') && mountFrom === undefined && from !== null) return { kind: 'unknown' };
  return { kind: 'repository', repository, app: appOf(repository), action: actionOf(method), mountFrom };
}

/**
 * The token in a registry request's Authorization header: the password of Basic credentials (any user
 * name, as with Fly's registry), or a Bearer token. Undefined when there is none.
 */
export function registryToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (basic) {
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const password = colon >= 0 ? decoded.slice(colon + 1) : '';
    return password === '' ? undefined : password;
  }
  const bearer = /^(?:Bearer|FlyV1)\s+(\S.*)$/i.exec(header.trim());
  return bearer?.[1];
}

// What `hangar image push` copies from: a reference with a containers-image transport (`oci:`,
// `oci-archive:`, `docker-archive:`, `containers-storage:`, `dir:`), a local OCI layout directory, or the
// name of an image in the local containers storage (what buildah and podman build into).

import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CliError } from '../../errors.js';

const TRANSPORTS = ['oci:', 'oci-archive:', 'docker-archive:', 'containers-storage:', 'dir:'];

/** The skopeo source for `given`; fails with a hint when `given` names a file it cannot tell apart. */
export function skopeoSource(given: string): string {
  if (TRANSPORTS.some((t) => given.startsWith(t))) return given;
  if (given.startsWith('docker://')) {
    throw new CliError(
      `${given} is in a remote registry`,
      'push a local image (an OCI layout directory, oci-archive:, docker-archive: or a buildah image name)',
    );
  }
  // `./dir` or `./dir:tag`: an OCI layout directory, optionally naming one of its images.
  const colon = given.lastIndexOf(':');
  const path = colon > 0 && !existsSync(given) ? given.slice(0, colon) : given;
  if (existsSync(path)) {
    if (!statSync(path).isDirectory()) {
      throw new CliError(
        `${given} is a file`,
        `say what kind of archive it is: oci-archive:${given} or docker-archive:${given}`,
      );
    }
    if (!existsSync(join(path, 'oci-layout'))) {
      throw new CliError(
        `${path} is not an OCI layout directory (it has no oci-layout file)`,
        'name an OCI layout directory, an archive or a buildah image',
      );
    }
    return `oci:${given}`;
  }
  return `containers-storage:${given}`;
}

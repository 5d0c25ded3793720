// The image a deploy runs: an image reference as given (`--image`, `[build].image`), or one built from
// the app's Dockerfile with buildah (no Docker daemon) and pushed into the app's space of Hangar's
// registry (`<registry>/<app>/<app>:deployment-<id>`) with the CLI's token.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { CliError } from '../../errors.js';
import type { BuildConfig } from '../../fly-toml/index.js';
import { describePushed, pushedLine, type RegistryTarget, writePushCredentials } from '../../registry.js';
import { runTool } from './tool.js';

export interface BuildRequest {
  app: string;
  build: BuildConfig;
  /** The directory of fly.toml: Dockerfile paths and the build context are relative to it. */
  baseDir: string;
  registry: RegistryTarget;
  /** Extra `--build-arg` values (over [build.args]). */
  buildArgs?: Record<string, string>;
  progress(line: string): void;
}

export interface BuiltImage {
  reference: string;
  digest: string;
  layers: number;
  bytes: number;
}

const BUILDAH_HINT =
  'install buildah (apt-get install buildah): Hangar builds images without a Docker daemon';

/** A tag no other deploy uses: `deployment-20261204T061500-9f3a`. */
export function deploymentTag(now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, '');
  return `deployment-${stamp}-${randomBytes(2).toString('hex')}`;
}

export function dockerfilePath(build: BuildConfig, baseDir: string): string {
  const name = build.dockerfile ?? 'Dockerfile';
  return isAbsolute(name) ? name : resolve(baseDir, name);
}

/**
 * Builds with `buildah bud --isolation chroot` in a storage of its own (removed afterwards), then pushes.
 * Credentials and plain HTTP apply to Hangar's registry only, through an auth file and a registries.conf
 * of the build's own: a base image from another registry is pulled with neither.
 */
export async function buildAndPush(request: BuildRequest): Promise<BuiltImage> {
  const { app, build, baseDir, registry, progress } = request;
  const dockerfile = dockerfilePath(build, baseDir);
  if (!existsSync(dockerfile)) {
    throw new CliError(
      `no Dockerfile at ${dockerfile}`,
      'add one beside fly.toml, name it in [build] dockerfile, or deploy an image with [build] image / --image',
    );
  }
  const work = await mkdtemp(join(tmpdir(), 'hangar-build-'));
  try {
    const credentials = await writePushCredentials(work, registry);
    const auth = credentials.authFile;
    const driver = process.env.HANGAR_BUILDAH_DRIVER === 'overlay' ? 'overlay' : 'vfs';
    const storage = [
      '--root',
      join(work, 'root'),
      '--runroot',
      join(work, 'run'),
      '--storage-driver',
      driver,
    ];
    const env = { ...credentials.env, BUILDAH_ISOLATION: 'chroot' };
    const localTag = `localhost/hangar-build/${app}:latest`;

    const args = [
      ...storage,
      'bud',
      '--isolation',
      'chroot',
      '--authfile',
      auth,
      '-f',
      dockerfile,
      '-t',
      localTag,
    ];
    if (build.target) args.push('--target', build.target);
    for (const [key, value] of Object.entries({ ...build.args, ...request.buildArgs })) {
      args.push('--build-arg', `${key}=${value}`);
    }
    if (build.ignorefile) args.push('--ignorefile', resolve(baseDir, build.ignorefile));
    // The context is the Dockerfile's directory, as flyctl does when fly.toml sits beside it.
    args.push(dirname(dockerfile));
    progress(`Building image from ${dockerfile} with buildah (${driver} storage)`);
    await runTool('buildah', args, {
      env,
      onLine: (line) => progress(`  ${line}`),
      installHint: BUILDAH_HINT,
    });

    const repository = `${app}/${app}`;
    const reference = `${registry.address}/${repository}:${deploymentTag()}`;
    const digestFile = join(work, 'digest');
    progress(`Pushing ${reference}`);
    await runTool(
      'buildah',
      [...storage, 'push', '--authfile', auth, '--digestfile', digestFile, localTag, `docker://${reference}`],
      { env, onLine: (line) => progress(`  ${line}`), installHint: BUILDAH_HINT },
    );
    const digest = (await readFile(digestFile, 'utf8')).trim();
    const { layers, bytes } = await describePushed(registry, repository, digest);
    progress(pushedLine({ layers, bytes }, digest));
    return { reference, digest, layers, bytes };
  } finally {
    // buildah leaves its storage mounted-over files owned by root: remove the whole temp tree.
    await rm(work, { recursive: true, force: true });
  }
}

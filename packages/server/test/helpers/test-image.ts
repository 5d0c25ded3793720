import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { LocalRegistry } from '../../src/runtime/images/registry.js';
import { freePort } from './ports.js';

/**
 * Small images for tests, built without a daemon: umoci lays out an empty image, the host's static busybox
 * and the requested files go into its root filesystem, umoci repacks it into one layer, and skopeo pushes
 * it to a registry over plain HTTP. About 0.1 s per image.
 */
const run = promisify(execFile);

/** Applets the tests use; each is a symlink to /bin/busybox (`trap` is a shell builtin). */
const APPLETS = [
  'sh',
  'httpd',
  'cat',
  'echo',
  'sleep',
  'env',
  'ls',
  'id',
  'touch',
  'mkdir',
  'rm',
  'head',
  'tr',
  'ps',
  'kill',
  'wc',
  'nc',
  'hostname',
  'printf',
  'grep',
  'test',
  '[',
  'wget',
  'timeout',
  'nslookup',
  'ping',
  'yes',
  'seq',
  'ping6',
  'ip',
];
const BUSYBOX = '/bin/busybox';

export interface TestImageConfig {
  cmd?: string[];
  entrypoint?: string[];
  env?: Record<string, string>;
  workingDir?: string;
  stopSignal?: string;
  labels?: Record<string, string>;
  /** The image's USER (`name`, `uid`, `name:group`...). */
  user?: string;
}

export interface TestImageOptions {
  /** `host:port` of a registry that speaks plain HTTP. */
  registry: string;
  /** In Hangar's registry, `<app>/<name>`: repositories live in their app's space. */
  repository: string;
  /** A Hangar token that may push to the repository's app (Hangar's registry wants one). */
  token?: string;
  tag?: string;
  /** Extra files, by absolute path in the image; a string is written with mode 0644. */
  files?: Record<string, string | { content: string | Buffer; mode: number }>;
  /** Symlinks, by absolute path in the image, to their target as written (nothing is checked). */
  symlinks?: Record<string, string>;
  /** Without `cmd`, the image serves /www with busybox httpd on port 8080. */
  config?: TestImageConfig;
  /** Copy the image into this OCI layout directory (as `<dir>:<tag>`) instead of pushing it. */
  ociLayout?: string;
}

export const DEFAULT_TEST_CMD = ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'];

/** Builds and pushes the image; returns its full reference `host:port/repository:tag` (or `<ociLayout>:<tag>`). */
export async function buildTestImage(options: TestImageOptions): Promise<string> {
  const tag = options.tag ?? 'latest';
  const work = await mkdtemp(join(tmpdir(), 'hangar-test-image-'));
  try {
    const image = `${join(work, 'img')}:build`;
    const bundle = join(work, 'bundle');
    await umoci('init', '--layout', join(work, 'img'));
    await umoci('new', '--image', image);
    await umoci('unpack', '--image', image, bundle);

    const rootfs = join(bundle, 'rootfs');
    await mkdir(join(rootfs, 'bin'), { recursive: true });
    await copyFile(BUSYBOX, join(rootfs, 'bin/busybox'));
    await chmod(join(rootfs, 'bin/busybox'), 0o755);
    for (const applet of APPLETS) await symlink('busybox', join(rootfs, 'bin', applet));
    await mkdir(join(rootfs, 'tmp'));
    await chmod(join(rootfs, 'tmp'), 0o1777);
    const files = { '/www/index.html': `hello from ${options.repository}:${tag}\n`, ...options.files };
    for (const [path, file] of Object.entries(files)) {
      if (!path.startsWith('/') || path.split('/').includes('..')) throw new Error(`bad image path ${path}`);
      const target = join(rootfs, path);
      const { content, mode } = typeof file === 'string' ? { content: file, mode: 0o644 } : file;
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, content);
      await chmod(target, mode);
    }
    for (const [path, target] of Object.entries(options.symlinks ?? {})) {
      if (!path.startsWith('/') || path.split('/').includes('..')) throw new Error(`bad image path ${path}`);
      await mkdir(dirname(join(rootfs, path)), { recursive: true });
      await rm(join(rootfs, path), { force: true });
      await symlink(target, join(rootfs, path));
    }
    await umoci('repack', '--image', image, bundle);

    const config = options.config ?? {};
    const args = ['config', '--image', image, '--no-history'];
    for (const part of config.cmd ?? DEFAULT_TEST_CMD) args.push('--config.cmd', part);
    for (const part of config.entrypoint ?? []) args.push('--config.entrypoint', part);
    for (const [key, value] of Object.entries(config.env ?? {})) args.push('--config.env', `${key}=${value}`);
    for (const [key, value] of Object.entries(config.labels ?? {}))
      args.push('--config.label', `${key}=${value}`);
    if (config.workingDir !== undefined) args.push('--config.workingdir', config.workingDir);
    if (config.stopSignal !== undefined) args.push('--config.stopsignal', config.stopSignal);
    if (config.user !== undefined) args.push('--config.user', config.user);
    await umoci(...args);
    await umoci('gc', '--layout', join(work, 'img'));

    if (options.ociLayout) {
      const layout = `${options.ociLayout}:${tag}`;
      await run('skopeo', ['copy', '--quiet', `oci:${image}`, `oci:${layout}`]);
      return layout;
    }
    const reference = `${options.registry}/${options.repository}:${tag}`;
    await run('skopeo', [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      // Any user name and the token as password, as with Fly's registry.
      ...(options.token ? ['--dest-creds', `hangar:${options.token}`] : ['--dest-no-creds']),
      `oci:${image}`,
      `docker://${reference}`,
    ]);
    return reference;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function umoci(...args: string[]): Promise<void> {
  await run('umoci', args);
}

/** Re-exported for the tests that build images for a registry of their own. */
export { freePort };

/** A LocalRegistry on a free loopback port in a temp dir; closed and removed after the test. */
export async function startTestRegistry(t: TestContext): Promise<LocalRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-test-registry-'));
  const registry = new LocalRegistry({ dir: join(dir, 'registry'), port: await freePort() });
  t.after(async () => {
    await registry.close();
    await rm(dir, { recursive: true, force: true });
  });
  await registry.start();
  return registry;
}

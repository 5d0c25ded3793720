import { chmod, chown, copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../shared/errors.js';
import { runCommand } from '../../shared/run.js';
import { MachineCgroups } from './cgroups.js';
import { OciCli, type OciRuntimeChoice } from './oci-cli.js';
import { defaultSeccompProfile } from './seccomp.js';

/** Where the static init comes from (Debian's tini package); it is also PID 1 of every machine. */
export const INIT_BINARY = '/usr/bin/tini-static';

const CANDIDATES: OciRuntimeChoice[] = [
  { name: 'crun', binary: 'crun', hideUnifiedCgroup: false },
  { name: 'crun', binary: 'crun', hideUnifiedCgroup: true },
  { name: 'runc', binary: 'runc', hideUnifiedCgroup: false },
];

export interface Detection {
  choice: OciRuntimeChoice;
  /** Why earlier candidates were passed over, for the log and `docs/runtime.md`. */
  refused: string[];
}

/**
 * Finds an OCI runtime that really works on this host by running a tiny container with the features
 * machines use (user, pid, mount and network namespaces, cgroups, the seccomp profile). crun first: it starts and deletes
 * faster, and its exec can enter a machine whose network namespace belongs to the host.
 */
export async function detectOciRuntime(scratchDir: string, stateRoot: string): Promise<Detection> {
  await mkdir(scratchDir, { recursive: true });
  const bundle = await mkdtemp(join(scratchDir, 'probe-'));
  // Root inside the container is an unprivileged host uid: it must be able to pass through the bundle.
  await chmod(scratchDir, 0o711);
  await chmod(bundle, 0o711);
  const refused: string[] = [];
  const cgroups = new MachineCgroups();
  try {
    const rootfs = join(bundle, 'rootfs');
    await mkdir(rootfs);
    await copyFile(INIT_BINARY, join(rootfs, 'init')).catch(() => {
      throw new HangarError(
        'runtime_unavailable',
        `${INIT_BINARY} is missing: install Debian's tini package (scripts/install.sh does)`,
      );
    });
    await chmod(join(rootfs, 'init'), 0o755);
    const paths = [rootfs, join(rootfs, 'init'), join(rootfs, 'proc'), join(rootfs, 'dev')];
    await mkdir(join(rootfs, 'proc'));
    await mkdir(join(rootfs, 'dev'));
    for (const path of paths) await chown(path, PROBE_ID, PROBE_ID);
    await writeFile(join(bundle, 'config.json'), JSON.stringify(probeConfig()));
    for (const choice of CANDIDATES) {
      const cli = new OciCli(choice, stateRoot);
      const id = `hangar-probe-${process.pid}`;
      const { file, args } = cli.runCommandLine(bundle, id, join(bundle, 'pid'));
      const result = await runCommand(file, args, { timeoutMs: 15_000 }).catch((error: Error) => ({
        code: -1,
        stdout: '',
        stderr: error.message,
      }));
      await cli.delete(id).catch(() => undefined);
      await cgroups.remove(`probe-${process.pid}`);
      if (result.code === 0) return { choice, refused };
      const why = (result.stderr || result.stdout).trim().split('\n').pop() ?? `exit ${result.code}`;
      refused.push(`${choice.binary}${choice.hideUnifiedCgroup ? ' (cgroup2 hidden)' : ''}: ${why}`);
    }
    throw new HangarError('runtime_unavailable', `no OCI runtime works on this host: ${refused.join('; ')}`);
  } finally {
    await rm(bundle, { recursive: true, force: true });
  }
}

/** The probe's root maps to the first id below every app's range (uid-range.ts). */
const PROBE_ID = 0x10_0000;

function probeConfig() {
  const mapping = [{ containerID: 0, hostID: PROBE_ID, size: 65_536 }];
  return {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args: ['/init', '--version'], env: [], cwd: '/' },
    root: { path: 'rootfs', readonly: true },
    hostname: 'probe',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=1024k'] },
    ],
    linux: {
      uidMappings: mapping,
      gidMappings: mapping,
      namespaces: [
        { type: 'pid' },
        { type: 'mount' },
        { type: 'user' },
        { type: 'network' },
        { type: 'ipc' },
        { type: 'uts' },
      ],
      cgroupsPath: `/hangar/probe-${process.pid}`,
      resources: { pids: { limit: 16 } },
      // A runtime (or libseccomp) that cannot load the machines' profile is no use for them.
      seccomp: defaultSeccompProfile(),
    },
  };
}

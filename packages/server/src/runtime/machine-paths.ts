import { join } from 'node:path';

/** Where a machine's runtime files live, under `<dataDir>/machines/<machine id>/`. */
export function machinePaths(dataDir: string, machineId: string) {
  const dir = join(dataDir, 'machines', machineId);
  return {
    dir,
    config: join(dir, 'config.json'),
    /** The overlay mount point: the image underneath, this boot's changes in `upper`. */
    rootfs: join(dir, 'rootfs'),
    upper: join(dir, 'upper'),
    work: join(dir, 'work'),
    /** config.files and the generated /etc files, bind-mounted into the machine. */
    files: join(dir, 'files'),
    /** The volume ids this boot mounted, to unmount when it ends. */
    volumes: join(dir, 'volumes.json'),
    /** The image's STOPSIGNAL for this boot (empty: none). */
    stopSignal: join(dir, 'stop-signal'),
    /** The env of this boot, for exec. */
    env: join(dir, 'env.json'),
    log: join(dir, 'log'),
    /** Written by the OCI runtime once the container runs. */
    pid: join(dir, 'pid'),
    /** Written by the shim when the container exits: the exit status, one number. */
    exit: join(dir, 'exit'),
    /** The next boot's root filesystem and cgroup are ready (what for, as JSON); taken by that boot. */
    nextBoot: join(dir, 'next-boot.json'),
  };
}

export const containerId = (machineId: string) => `hangar-${machineId}`;
export const machineIdOf = (containerName: string) =>
  containerName.startsWith('hangar-') ? containerName.slice('hangar-'.length) : undefined;

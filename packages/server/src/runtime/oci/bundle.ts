import { HangarError } from '../../shared/errors.js';
import type { UidMapping } from '../uid-range.js';
import { defaultSeccompProfile } from './seccomp.js';

/** What a machine's OCI config is made of; built by the runtime from the machine, its image and host paths. */
export interface BundleInput {
  hostname: string;
  rootfs: string;
  /** The program and its arguments; the init is put in front of them here. */
  args: string[];
  env: Record<string, string>;
  cwd: string;
  user: { uid: number; gid: number };
  mapping: UidMapping;
  initBinary: string;
  netnsPath: string;
  /** The machine's user namespace, which owns its network namespace (machine-namespaces.ts). */
  usernsPath: string;
  cgroupsPath: string;
  /** Set in the config only on cgroup v2; on v1 the machine's parent cgroup holds it (see cgroups.ts). */
  memoryBytes: number | undefined;
  cpus: number;
  pidsLimit: number;
  binds: { source: string; destination: string; readonly: boolean }[];
  /** Runtime annotations (compiled-seccomp.ts hands crun its own compiled filter this way). */
  annotations?: Record<string, string> | undefined;
}

/** Docker's default capability set: enough for ordinary services, nothing that administers the host. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Where the init binary appears inside every machine. */
export const INIT_PATH = '/.hangar/init';
const CPU_PERIOD_US = 100_000;

export function buildOciConfig(input: BundleInput) {
  const idMap = [{ containerID: 0, hostID: input.mapping.hostId, size: input.mapping.size }];
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      // 022 whatever hangard's own umask: files the app creates are as the app expects them.
      user: { ...input.user, umask: 0o022 },
      // tini as PID 1: it forwards stop signals to the program and reaps orphaned children.
      args: [INIT_PATH, '--', ...input.args],
      env: Object.entries(input.env).map(([key, value]) => `${key}=${value}`),
      cwd: input.cwd,
      noNewPrivileges: true,
      capabilities: {
        bounding: DEFAULT_CAPABILITIES,
        effective: DEFAULT_CAPABILITIES,
        permitted: DEFAULT_CAPABILITIES,
      },
    },
    root: { path: input.rootfs, readonly: false },
    hostname: input.hostname,
    ...(input.annotations ? { annotations: input.annotations } : {}),
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      {
        destination: '/dev/mqueue',
        type: 'mqueue',
        source: 'mqueue',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      // A sysfs of the machine's network namespace (its network devices only), read-only; not the
      // host's /sys. The runtime can mount it because that namespace belongs to the machine's user one.
      {
        destination: '/sys',
        type: 'sysfs',
        source: 'sysfs',
        options: ['nosuid', 'noexec', 'nodev', 'ro'],
      },
      // In the machine's cgroup namespace: only its own cgroup, as the root of each hierarchy.
      {
        destination: '/sys/fs/cgroup',
        type: 'cgroup',
        source: 'cgroup',
        options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
      },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
      { destination: INIT_PATH, type: 'bind', source: input.initBinary, options: ['bind', 'ro'] },
      ...input.binds.map((bind) => ({
        destination: bind.destination,
        type: 'bind',
        source: bind.source,
        options: ['rbind', 'nosuid', 'nodev', ...(bind.readonly ? ['ro'] : ['rw'])],
      })),
    ],
    linux: {
      uidMappings: idMap,
      gidMappings: idMap,
      namespaces: [
        { type: 'pid' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        // Joined, not made: the namespace that owns the machine's network namespace. runc needs the
        // mappings above even so; they are the ones it was made with.
        { type: 'user', path: input.usernsPath },
        { type: 'cgroup' },
        { type: 'network', path: input.netnsPath },
      ],
      cgroupsPath: input.cgroupsPath,
      resources: {
        ...(input.memoryBytes !== undefined
          ? { memory: { limit: input.memoryBytes, swap: input.memoryBytes } }
          : {}),
        cpu: { shares: 1024 * input.cpus, quota: CPU_PERIOD_US * input.cpus, period: CPU_PERIOD_US },
        pids: { limit: input.pidsLimit },
        devices: [{ allow: false, access: 'rwm' }],
      },
      seccomp: defaultSeccompProfile(),
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/proc/scsi',
        '/sys/firmware',
        '/sys/devices/virtual/powercap',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

export interface ImageDefaults {
  entrypoint: string[];
  cmd: string[];
}

/**
 * The program a machine runs: `init.exec` replaces the image's ENTRYPOINT and CMD; otherwise
 * `init.entrypoint` and `init.cmd` each override their image default (fly-semantics §2).
 */
export function resolveCommand(
  init: { exec?: string[]; entrypoint?: string[]; cmd?: string[] } | undefined,
  image: ImageDefaults,
): string[] {
  if (init?.exec && init.exec.length > 0) return init.exec;
  const command = [...(init?.entrypoint ?? image.entrypoint), ...(init?.cmd ?? image.cmd)];
  if (command.length === 0) {
    throw new HangarError(
      'failed_precondition',
      'the image sets no command and the machine config has none: set config.init.cmd or config.init.exec',
    );
  }
  return command;
}

/** `user`, `uid`, `uid:gid` or `name[:group]` from the image, resolved against the rootfs's passwd/group. */
export function resolveUser(spec: string, passwd: string, group: string): { uid: number; gid: number } {
  if (spec === '' || spec === 'root') return { uid: 0, gid: 0 };
  const [userPart, groupPart] = spec.split(':') as [string, string | undefined];
  const lookup = (table: string, name: string, idField: number) =>
    table
      .split('\n')
      .map((line) => line.split(':'))
      .find((fields) => fields[0] === name)?.[idField];
  const uidText = /^\d+$/.test(userPart) ? userPart : lookup(passwd, userPart, 2);
  if (uidText === undefined)
    throw new HangarError('failed_precondition', `the image's user "${userPart}" is not in its /etc/passwd`);
  const uid = Number(uidText);
  let gid: number;
  if (groupPart === undefined) {
    const passwdGid = passwd
      .split('\n')
      .map((line) => line.split(':'))
      .find((fields) => fields[2] === String(uid))?.[3];
    gid = passwdGid === undefined ? uid : Number(passwdGid);
  } else {
    const gidText = /^\d+$/.test(groupPart) ? groupPart : lookup(group, groupPart, 2);
    if (gidText === undefined)
      throw new HangarError(
        'failed_precondition',
        `the image's group "${groupPart}" is not in its /etc/group`,
      );
    gid = Number(gidText);
  }
  return { uid, gid };
}

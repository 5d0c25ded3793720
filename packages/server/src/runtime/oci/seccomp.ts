/**
 * The default seccomp profile: every syscall is allowed except those a workload has no business making
 * and that widen the kernel's attack surface (modules, kexec, clock and swap control, keyrings, bpf,
 * perf, ptrace-like memory access across processes, namespace tricks). The list follows what Docker's
 * default profile refuses to unprivileged containers; an error (EPERM) is returned, never a kill, so
 * programs that probe for a feature degrade instead of crashing.
 */
const BLOCKED_SYSCALLS = [
  'acct',
  'add_key',
  'bpf',
  'clock_adjtime',
  'clock_settime',
  'create_module',
  'delete_module',
  'fanotify_init',
  'finit_module',
  'fsconfig',
  'fsmount',
  'fsopen',
  'fspick',
  'get_kernel_syms',
  'init_module',
  'ioperm',
  'iopl',
  'kcmp',
  'kexec_file_load',
  'kexec_load',
  'keyctl',
  'lookup_dcookie',
  'mount',
  'mount_setattr',
  'move_mount',
  'name_to_handle_at',
  'nfsservctl',
  'open_by_handle_at',
  'open_tree',
  'perf_event_open',
  'pivot_root',
  'process_vm_readv',
  'process_vm_writev',
  'ptrace',
  'query_module',
  'quotactl',
  'quotactl_fd',
  'reboot',
  'request_key',
  'setns',
  'settimeofday',
  'stime',
  'swapoff',
  'swapon',
  'sysfs',
  '_sysctl',
  'umount',
  'umount2',
  'unshare',
  'uselib',
  'userfaultfd',
  'ustat',
  'vm86',
  'vm86old',
];

const EPERM = 1;

export function defaultSeccompProfile() {
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: [
      'SCMP_ARCH_X86_64',
      'SCMP_ARCH_X86',
      'SCMP_ARCH_X32',
      'SCMP_ARCH_AARCH64',
      'SCMP_ARCH_ARM',
    ],
    syscalls: [{ names: BLOCKED_SYSCALLS, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM }],
  };
}

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { followLines, readTail, rotateIfLarge, tailLines } from '../../src/runtime/machine-logs.js';
import { buildOciConfig, INIT_PATH, resolveCommand, resolveUser } from '../../src/runtime/oci/bundle.js';
import { CompiledSeccomp, SECCOMP_BPF_ANNOTATION } from '../../src/runtime/oci/compiled-seccomp.js';
import {
  CLONE_NAMESPACE_FLAGS,
  CLONE_NAMESPACE_MASK,
  defaultSeccompProfile,
  REFUSED_SYSCALLS,
} from '../../src/runtime/oci/seccomp.js';
import { decodeAddress } from '../../src/runtime/process-info.js';
import { uidRangeForApp } from '../../src/runtime/uid-range.js';

test('command: init.exec replaces, entrypoint and cmd override one by one', () => {
  const image = { entrypoint: ['/entry'], cmd: ['serve'] };
  assert.deepEqual(resolveCommand(undefined, image), ['/entry', 'serve']);
  assert.deepEqual(resolveCommand({ cmd: ['migrate'] }, image), ['/entry', 'migrate']);
  assert.deepEqual(resolveCommand({ entrypoint: ['/other'] }, image), ['/other', 'serve']);
  assert.deepEqual(resolveCommand({ exec: ['/bin/sh', '-c', 'x'], cmd: ['ignored'] }, image), [
    '/bin/sh',
    '-c',
    'x',
  ]);
  assert.throws(() => resolveCommand(undefined, { entrypoint: [], cmd: [] }), /init\.cmd/);
});

test('user: numeric, named, with group, and errors', () => {
  const passwd = 'root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n';
  const group = 'root:x:0:\nstaff:x:50:\n';
  assert.deepEqual(resolveUser('', passwd, group), { uid: 0, gid: 0 });
  assert.deepEqual(resolveUser('www', passwd, group), { uid: 33, gid: 34 });
  assert.deepEqual(resolveUser('www:staff', passwd, group), { uid: 33, gid: 50 });
  assert.deepEqual(resolveUser('1000', passwd, group), { uid: 1000, gid: 1000 });
  assert.deepEqual(resolveUser('1000:7', passwd, group), { uid: 1000, gid: 7 });
  assert.throws(() => resolveUser('nobody', passwd, group), /not in its \/etc\/passwd/);
});

test('uid ranges: one per app, never overlapping, above the host users', () => {
  const a = uidRangeForApp(1);
  const b = uidRangeForApp(2);
  assert.equal(b.hostId - a.hostId, a.size);
  assert.ok(a.hostId >= 0x10_0000 + 65_536);
  assert.throws(() => uidRangeForApp(0), /no uid range/);
});

test('OCI config: init first, user namespace, limits, the machine netns, no host devices', () => {
  const config = buildOciConfig({
    hostname: 'm1',
    rootfs: '/r',
    args: ['/app', '--port', '8080'],
    env: { A: '1' },
    cwd: '/srv',
    user: { uid: 0, gid: 0 },
    mapping: uidRangeForApp(3),
    initBinary: '/usr/bin/tini-static',
    netnsPath: '/var/run/netns/hangar-m1',
    usernsPath: '/var/run/hangar/userns/hangar-m1',
    cgroupsPath: '/hangar/m1/ctr',
    memoryBytes: undefined,
    cpus: 2,
    pidsLimit: 100,
    binds: [{ source: '/vol', destination: '/data', readonly: false }],
  });
  assert.deepEqual(config.process.args, [INIT_PATH, '--', '/app', '--port', '8080']);
  assert.deepEqual(config.process.env, ['A=1']);
  assert.equal(config.process.noNewPrivileges, true);
  assert.ok(!config.process.capabilities.bounding.includes('CAP_SYS_ADMIN'));
  assert.deepEqual(config.linux.uidMappings, [
    { containerID: 0, hostID: uidRangeForApp(3).hostId, size: 65_536 },
  ]);
  assert.deepEqual(
    config.linux.namespaces.find((n) => n.type === 'user'),
    { type: 'user', path: '/var/run/hangar/userns/hangar-m1' },
    "joins the user namespace that owns the machine's network namespace",
  );
  assert.deepEqual(
    config.linux.namespaces.find((n) => n.type === 'network'),
    { type: 'network', path: '/var/run/netns/hangar-m1' },
  );
  assert.equal(
    'memory' in config.linux.resources,
    false,
    'on cgroup v1 the parent cgroup holds the memory limit',
  );
  assert.deepEqual(config.linux.resources.cpu, { shares: 2048, quota: 200_000, period: 100_000 });
  assert.deepEqual(config.linux.resources.devices, [{ allow: false, access: 'rwm' }]);
  assert.ok(config.mounts.some((m) => m.destination === '/data' && m.source === '/vol'));
  assert.deepEqual(
    config.mounts.find((m) => m.destination === '/sys'),
    {
      destination: '/sys',
      type: 'sysfs',
      source: 'sysfs',
      options: ['nosuid', 'noexec', 'nodev', 'ro'],
    },
    "the machine's own sysfs, never the host's /sys",
  );
  const cgroupMount = config.mounts.find((m) => m.destination === '/sys/fs/cgroup');
  assert.equal(cgroupMount?.type, 'cgroup');
  assert.ok(cgroupMount?.options?.includes('ro'));
  assert.ok(config.linux.namespaces.some((n) => n.type === 'cgroup'));
});

test('seccomp: an allow-list; namespaces refused on clone, clone3 ENOSYS, io_uring and the old deny list EPERM', () => {
  const profile = defaultSeccompProfile();
  assert.equal(profile.defaultAction, 'SCMP_ACT_ERRNO');
  assert.equal(profile.defaultErrnoRet, 38, 'unknown syscalls: ENOSYS, so a newer libc falls back');
  const rulesFor = (name: string) => profile.syscalls.filter((rule) => rule.names.includes(name));
  const allowed = (name: string) =>
    rulesFor(name).some((rule) => rule.action === 'SCMP_ACT_ALLOW' && !('args' in rule));
  for (const name of ['read', 'openat', 'execve', 'socket', 'futex', 'epoll_wait', 'fork', 'getrandom'])
    assert.ok(allowed(name), `${name} is allowed`);
  for (const name of [
    'kexec_load',
    'unshare',
    'setns',
    'mount',
    'bpf',
    'io_uring_setup',
    'io_uring_enter',
    'io_uring_register',
    'ptrace',
    'keyctl',
    'userfaultfd',
    'open_by_handle_at',
  ]) {
    assert.deepEqual(
      rulesFor(name).map((rule) => [rule.action, 'errnoRet' in rule ? rule.errnoRet : undefined]),
      [['SCMP_ACT_ERRNO', 1]],
      `${name}: EPERM, and no other rule`,
    );
  }
  assert.deepEqual(
    rulesFor('clone3').map((rule) => [rule.action, 'errnoRet' in rule ? rule.errnoRet : undefined]),
    [['SCMP_ACT_ERRNO', 38]],
  );
  // clone: allowed only with every namespace flag clear; each flag on its own is EPERM.
  const clone = rulesFor('clone');
  const allowRule = clone.find((rule) => rule.action === 'SCMP_ACT_ALLOW');
  assert.deepEqual('args' in allowRule! ? allowRule.args : undefined, [
    { index: 0, value: 0x7e02_0000, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' },
  ]);
  assert.equal(CLONE_NAMESPACE_MASK, 0x7e02_0000);
  const refusedFlags = clone
    .filter((rule) => rule.action === 'SCMP_ACT_ERRNO')
    .map((rule) => ('args' in rule ? rule.args?.[0]?.value : undefined));
  assert.deepEqual(refusedFlags.sort(), Object.values(CLONE_NAMESPACE_FLAGS).sort());
  // No syscall is both allowed outright and refused.
  const allowedNames = new Set(
    profile.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW' && !('args' in r)).flatMap((r) => r.names),
  );
  assert.deepEqual(
    REFUSED_SYSCALLS.filter((name) => allowedNames.has(name)),
    [],
  );
});

test('logs: rotation keeps one older file; tail reads across both', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-logs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const log = join(dir, 'log');
  writeFileSync(log, 'one\ntwo\nthree\n');
  assert.equal(await rotateIfLarge(log, 100), false);
  assert.equal(await rotateIfLarge(log, 5), true);
  assert.equal(readFileSync(log, 'utf8'), '');
  writeFileSync(log, 'four\n', { flag: 'a' });
  assert.deepEqual(await tailLines(log, 2), ['three', 'four']);
  assert.deepEqual(await tailLines(log, 10), ['one', 'two', 'three', 'four']);
  assert.deepEqual(await tailLines(join(dir, 'none'), 3), []);
});

test('logs: following from where the tail ended repeats and skips no line written in between', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-logs-'));
  const abort = new AbortController();
  t.after(() => {
    abort.abort();
    rmSync(dir, { recursive: true, force: true });
  });
  const log = join(dir, 'log');
  writeFileSync(log, '1\n2\n');
  const tail = await readTail(log, 10);
  assert.deepEqual(tail.lines, ['1', '2']);
  // Written after the tail was read and before following began: the gap where lines used to repeat.
  writeFileSync(log, '3\n4\n', { flag: 'a' });
  const follow = followLines(log, abort.signal, tail.endOffset);
  const seen: string[] = [];
  for await (const line of follow) {
    seen.push(line);
    if (seen.length === 2) break;
  }
  assert.deepEqual(seen, ['3', '4']);
});

test('ps: /proc/net addresses decode', () => {
  assert.equal(decodeAddress('0100007F:1F90'), '127.0.0.1:8080');
  assert.equal(decodeAddress('00000000:0050'), '0.0.0.0:80');
  assert.equal(decodeAddress('00000000000000000000000000000000:1F90'), '[::]:8080');
});

test('compiled seccomp: kept per exact profile, only what looks like a BPF program', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-seccomp-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const program = Buffer.alloc(8 * 3, 7);
  writeFileSync(join(dir, 'good.bpf'), program);
  writeFileSync(join(dir, 'torn.bpf'), Buffer.alloc(13));
  writeFileSync(join(dir, 'empty.bpf'), Buffer.alloc(0));
  const profile = defaultSeccompProfile();
  const other = { ...profile, defaultErrnoRet: 1 };

  const compiled = new CompiledSeccomp();
  assert.equal(compiled.annotationsFor(profile), undefined, 'nothing before a boot compiled it');
  for (const bad of ['torn.bpf', 'empty.bpf', 'missing.bpf']) await compiled.learn(profile, join(dir, bad));
  assert.equal(compiled.annotationsFor(profile), undefined, 'no program from a torn, empty or missing file');

  await compiled.learn(profile, join(dir, 'good.bpf'));
  assert.deepEqual(compiled.annotationsFor(defaultSeccompProfile()), {
    [SECCOMP_BPF_ANNOTATION]: program.toString('base64'),
  });
  assert.equal(compiled.annotationsFor(other), undefined, 'another profile is compiled by the runtime');
});

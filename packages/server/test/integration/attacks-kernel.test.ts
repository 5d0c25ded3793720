import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { usernsPath } from '../../src/runtime/machine-namespaces.js';
import { runCommand } from '../../src/shared/run.js';
import { createApp, startTestHangard } from '../helpers/hangard.js';
import { type Json, mountsUnder, NEEDS_ROOT, ok, processesMentioning } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * The kernel side of a machine, attacked the way a tenant can: through the public API only (create an
 * app, push an image, boot it, exec in it). Each attack must fail for its stated reason (the errno or
 * message is asserted, not only a non-zero exit), and each probe has a positive control beside it: the
 * same probe succeeding where it should, which proves the probe can see a success at all.
 *
 * - namespaces through clone/clone3/unshare, and io_uring (the way to nf_tables and other host bugs);
 * - the host's network topology through /sys (bridges hgn*, veths hgv*);
 * - other machines' cgroups through /sys/fs/cgroup;
 * - hangard made to read a host file through the image's /etc/passwd;
 * - and the usability that isolation must not break: ping over IPv4 and IPv6.
 */

const run = promisify(execFile);
const skip = NEEDS_ROOT;
const PROBE_SOURCE = fileURLToPath(new URL('../fixtures/probes/nsprobe.c', import.meta.url));

interface ExecResult {
  exit_code: number;
  stdout: string;
  stderr: string;
}

/** The probe's "name: result" lines as a map. */
function probeLines(output: string): Record<string, string> {
  return Object.fromEntries(
    output
      .trim()
      .split('\n')
      .map((line) => {
        const at = line.lastIndexOf(': ');
        return [line.slice(0, at), line.slice(at + 2)];
      }),
  );
}

/** What the probe gets in a machine: the attacks refused with the seccomp profile's errno. */
const IN_MACHINE = {
  // The same calls without namespace flags still work in the machine.
  fork: 'ok',
  'clone(plain)': 'ok',
  'socket(inet)': 'ok',
  'socket(netlink netfilter)': 'ok',
  // The attacks, each with the errno the seccomp profile gives.
  'clone(NEWUSER|NEWNET)': 'EPERM',
  'clone(NEWNS)': 'EPERM',
  'clone(NEWPID)': 'EPERM',
  clone3: 'ENOSYS',
  'unshare(NEWNET)': 'EPERM',
  io_uring_setup: 'EPERM',
};

test('kernel attacks: a tenant in a machine gets nothing', { skip, timeout: 300_000 }, async (t) => {
  const began = performance.now();
  const scratch = await mkdtemp(join(tmpdir(), 'hangar-attacks-kernel-'));
  const probe = join(scratch, 'nsprobe');
  await run('cc', ['-static', '-O1', '-o', probe, PROBE_SOURCE]);
  const probeBinary = await readFile(probe);

  const port = await freePort();
  const h = await startTestHangard(t, {
    config: { runtime: 'required', registry: { port }, network: { mode: 'required', egress: false } },
  });
  const machineIds = new Set<string>();
  const hostNetns = 'attacks-kernel-ping-control';
  // After-hooks run first in, first out: this runs after hangard's hook closed it and removed its dir.
  t.after(async () => {
    await rm(scratch, { recursive: true, force: true });
    await runCommand('ip', ['netns', 'delete', hostNetns]);
    const netns = (await runCommand('ip', ['netns', 'list'])).stdout;
    assert.deepEqual(
      {
        netns: [...[...machineIds].map((id) => `hangar-${id}`), hostNetns].filter((name) =>
          netns.includes(name),
        ),
        userns: [...machineIds].filter((id) => existsSync(usernsPath(id))),
        mounts: await mountsUnder(h.dataDir),
        processes: await processesMentioning(h.dataDir),
        dirs: [h.dataDir, scratch].filter((dir) => existsSync(dir)),
      },
      { netns: [], userns: [], mounts: [], processes: [], dirs: [] },
      'nothing of the test is left on the host',
    );
  });

  const registry = `127.0.0.1:${port}`;
  await createApp(h, 'atk');
  await createApp(h, 'atk-neighbour');
  const attackerImage = await buildTestImage({
    registry,
    token: h.token,
    repository: 'atk/probe',
    files: { '/bin/nsprobe': { content: probeBinary, mode: 0o755 } },
  });
  const neighbourImage = await buildTestImage({ registry, token: h.token, repository: 'atk-neighbour/img' });
  const boot = async (app: string, image: string) => {
    const machine = await ok(h, 'POST', `/v1/apps/${app}/machines`, { config: { image } });
    machineIds.add(machine.id);
    const waited = await h.call(
      'GET',
      `/v1/apps/${app}/machines/${machine.id}/wait?state=started&timeout=30`,
    );
    assert.equal(waited.status, 200, JSON.stringify(waited.body));
    return machine as Json;
  };
  const attacker = await boot('atk', attackerImage);
  const neighbour = await boot('atk-neighbour', neighbourImage);
  const inMachine = (command: string[]): Promise<ExecResult> =>
    ok(h, 'POST', `/v1/apps/atk/machines/${attacker.id}/exec`, { command, timeout: 20 });
  const sh = (script: string) => inMachine(['/bin/sh', '-c', script]);
  /** The probe's calls get what IN_MACHINE says, and busybox unshare (a tenant's own tool) is refused. */
  const expectCallsRefused = async () => {
    const result = await inMachine(['/bin/nsprobe']);
    assert.equal(result.exit_code, 0, JSON.stringify(result));
    assert.deepEqual(probeLines(result.stdout), IN_MACHINE);
    // And with the tools a tenant has: busybox unshare goes through unshare(2).
    const unshare = await sh('/bin/busybox unshare -U -n true');
    assert.notEqual(unshare.exit_code, 0);
    assert.match(unshare.stderr, /Operation not permitted/, JSON.stringify(unshare));
  };

  await t.test(
    'namespaces: clone with namespace flags, clone3, unshare and io_uring are refused',
    async () => {
      // Positive control: on the host, unconfined, every attempt of the probe succeeds.
      const onHost = probeLines((await run(probe, [])).stdout);
      const ioUringDisabled = (
        await readFile('/proc/sys/kernel/io_uring_disabled', 'utf8').catch(() => '0')
      ).trim();
      assert.deepEqual(onHost, {
        fork: 'ok',
        'clone(plain)': 'ok',
        'socket(inet)': 'ok',
        'socket(netlink netfilter)': 'ok',
        'clone(NEWUSER|NEWNET)': 'ok',
        'netfilter socket in the new netns': 'ok',
        'clone(NEWNS)': 'ok',
        'clone(NEWPID)': 'ok',
        clone3: 'ok',
        'unshare(NEWNET)': 'ok',
        io_uring_setup: ioUringDisabled === '0' ? 'ok' : onHost.io_uring_setup,
      });

      await expectCallsRefused();
    },
  );

  await t.test(
    'after a stop and a start (crun handed its own compiled seccomp program), the same calls are refused',
    async () => {
      const one = `/v1/apps/atk/machines/${attacker.id}`;
      await ok(h, 'POST', `${one}/stop`);
      await ok(h, 'GET', `${one}/wait?state=stopped&timeout=30`);
      await ok(h, 'POST', `${one}/start`);
      await ok(h, 'GET', `${one}/wait?state=started&timeout=30`);
      // With crun (it keeps seccomp.bpf in its state), this boot took the program from the annotation.
      if (existsSync(join(h.dataDir, 'oci-state', `hangar-${attacker.id}`, 'seccomp.bpf'))) {
        const config = JSON.parse(
          await readFile(join(h.dataDir, 'machines', attacker.id, 'config.json'), 'utf8'),
        );
        assert.ok(config.annotations?.['run.oci.seccomp_bpf_data'], 'the boot carries the compiled program');
      }
      await expectCallsRefused();
    },
  );

  await t.test("sysfs: the host's bridges and veths are not visible", async () => {
    // Positive control: the host's /sys lists Hangar's bridges and veths, so a shared /sys would show them.
    const hostLinks = await readdir('/sys/class/net');
    assert.ok(
      hostLinks.some((name) => name.startsWith('hgn')) && hostLinks.some((name) => name.startsWith('hgv')),
      `the host has hgn*/hgv* links: ${hostLinks.join(' ')}`,
    );
    const listed = await sh('ls /sys/class/net');
    assert.deepEqual(listed.stdout.trim().split(/\s+/).sort(), ['eth0', 'lo'], JSON.stringify(listed));
    // The same find, first for what must be there (so find can succeed), then for the host's names.
    const found = await sh('/bin/busybox find /sys/class/net/ /sys/devices/virtual/net/ -name "eth*"');
    assert.match(found.stdout, /\/eth0\n/, JSON.stringify(found));
    const hostNames = await sh('/bin/busybox find /sys -name "hg[nv]*" 2>/dev/null; echo done');
    assert.equal(hostNames.stdout, 'done\n', `no hgn*/hgv* anywhere under /sys: ${hostNames.stdout}`);
    const write = await sh('touch /sys/hangar-probe');
    assert.match(write.stderr, /Read-only file system/, JSON.stringify(write));
  });

  await t.test('cgroups: the machine sees only its own cgroup, read-only', async () => {
    // Positive control: on the host both machines' cgroups are there by id.
    const hostRoot = existsSync('/sys/fs/cgroup/cgroup.controllers')
      ? '/sys/fs/cgroup/hangar'
      : '/sys/fs/cgroup/memory/hangar';
    const onHost = await readdir(hostRoot);
    assert.ok(onHost.includes(attacker.id) && onHost.includes(neighbour.id), onHost.join(' '));
    const own = await sh('cat /proc/self/cgroup');
    for (const line of own.stdout.trim().split('\n'))
      assert.match(line, /:\/$/, `the root of its view: ${line}`);
    const listing = await sh('ls /sys/fs/cgroup');
    assert.ok(listing.stdout.trim().length > 0, 'the machine has a cgroup view');
    const seen = await sh(
      `/bin/busybox find /sys/fs/cgroup -name hangar -o -name ${attacker.id} -o -name ${neighbour.id} -o -name "*.procs" 2>/dev/null | /bin/busybox grep -v procs; echo done`,
    );
    assert.equal(seen.stdout, 'done\n', `no machine ids or Hangar's cgroups in view: ${seen.stdout}`);
    const procs = await sh('/bin/busybox find /sys/fs/cgroup -name cgroup.procs | head -1');
    assert.match(procs.stdout, /cgroup\.procs/, 'positive control: the same find sees its own cgroup files');
    const write = await sh('mkdir /sys/fs/cgroup/pids/escape || mkdir /sys/fs/cgroup/escape');
    assert.match(write.stderr, /Read-only file system/, JSON.stringify(write));
  });

  await t.test('user tables: an image cannot make hangard read outside its rootfs', async () => {
    // A host file holding the user the image asks for: a host-side read through the symlink would find it.
    const hostPasswd = join(scratch, 'host-passwd');
    await writeFile(hostPasswd, 'intruder:x:4242:4242::/:/bin/sh\n', { mode: 0o644 });
    // A host FIFO nobody writes to: a host-side open or read through the symlink would hang the boot.
    const hostFifo = join(scratch, 'host-fifo');
    await run('mkfifo', [hostFifo]);
    const images = {
      normal: await buildTestImage({
        registry,
        token: h.token,
        repository: 'atk/probe',
        tag: 'passwd-normal',
        files: { '/etc/passwd': 'root:x:0:0::/root:/bin/sh\nintruder:x:1000:1000::/:/bin/sh\n' },
        config: { user: 'intruder' },
      }),
      devZero: await buildTestImage({
        registry,
        token: h.token,
        repository: 'atk/probe',
        tag: 'passwd-dev-zero',
        symlinks: { '/etc/passwd': '/dev/zero' },
        config: { user: 'intruder' },
      }),
      hostFile: await buildTestImage({
        registry,
        token: h.token,
        repository: 'atk/probe',
        tag: 'passwd-host-file',
        symlinks: { '/etc/passwd': hostPasswd },
        config: { user: 'intruder' },
      }),
      hostFifo: await buildTestImage({
        registry,
        token: h.token,
        repository: 'atk/probe',
        tag: 'passwd-host-fifo',
        symlinks: { '/etc/passwd': hostFifo, '/etc/group': hostFifo },
        config: { user: 'intruder:intruder' },
      }),
      escape: await buildTestImage({
        registry,
        token: h.token,
        repository: 'atk/probe',
        tag: 'passwd-escape',
        symlinks: { '/etc/passwd': `../../../../../../../..${hostPasswd}` },
        config: { user: 'intruder' },
      }),
    };
    const start = async (image: string) => {
      const machine = await ok(h, 'POST', '/v1/apps/atk/machines', { config: { image }, skip_launch: true });
      machineIds.add(machine.id);
      const at = performance.now();
      const started = await h.call('POST', `/v1/apps/atk/machines/${machine.id}/start`);
      return { machine, started, ms: performance.now() - at };
    };
    const destroy = (id: string) => ok(h, 'DELETE', `/v1/apps/atk/machines/${id}?force=true`);

    // Positive control: a normal passwd names the user, and the machine runs as it.
    const normal = await start(images.normal);
    assert.equal(normal.started.status, 200, JSON.stringify(normal.started.body));
    const id = await ok(h, 'POST', `/v1/apps/atk/machines/${normal.machine.id}/exec`, {
      command: ['id', '-u'],
    });
    assert.equal(id.stdout, '1000\n');
    await destroy(normal.machine.id);

    for (const [what, image, reason] of [
      ['a symlink to /dev/zero', images.devZero, /"intruder" is not in its \/etc\/passwd/],
      ['a symlink to a host file', images.hostFile, /"intruder" is not in its \/etc\/passwd/],
      ['a symlink to a host FIFO', images.hostFifo, /"intruder" is not in its \/etc\/passwd/],
      ['a .. escape to a host file', images.escape, /\/etc\/passwd cannot be used .*climbs out of the image/],
    ] as const) {
      const attempt = await start(image);
      assert.equal(attempt.started.status, 412, `${what}: ${JSON.stringify(attempt.started.body)}`);
      assert.match(attempt.started.body.error, reason, what);
      assert.ok(attempt.ms < 10_000, `${what}: answered promptly (${Math.round(attempt.ms)} ms)`);
      const events = (await ok(h, 'GET', `/v1/apps/atk/machines/${attempt.machine.id}/events`)) as Json[];
      assert.ok(
        events.some(
          (e) => e.type === 'start' && e.status === 'failed' && reason.test(e.request?.error ?? ''),
        ),
        `${what}: the machine's events say why: ${JSON.stringify(events)}`,
      );
      await destroy(attempt.machine.id);
    }
  });

  await t.test('ping: ICMP echo works in the machine over IPv4 and IPv6', async () => {
    // Ping sockets (iputils ping as a non-root user). Negative control: a network namespace without
    // Hangar's setting refuses them (EACCES) to a machine-like unprivileged gid; the same probe works
    // once the setting is there.
    await runCommand('ip', ['netns', 'delete', hostNetns]);
    await run('ip', ['netns', 'add', hostNetns]);
    await run('ip', ['-n', hostNetns, 'link', 'set', 'lo', 'up']);
    const asMachineRoot = [
      `--net=/run/netns/${hostNetns}`,
      '--',
      'setpriv',
      '--reuid',
      '1048576',
      '--regid',
      '1048576',
      '--clear-groups',
      probe,
      'ping',
      '127.0.0.1',
      '::1',
    ];
    assert.deepEqual(probeLines((await run('nsenter', asMachineRoot)).stdout), {
      'ping 127.0.0.1': 'EACCES',
      'ping ::1': 'EACCES',
    });
    await runCommand(
      'nsenter',
      [`--net=/run/netns/${hostNetns}`, '--', 'tee', '/proc/sys/net/ipv4/ping_group_range'],
      {
        input: '0 2147483647',
      },
    );
    assert.deepEqual(probeLines((await run('nsenter', asMachineRoot)).stdout), {
      'ping 127.0.0.1': 'ok',
      'ping ::1': 'ok',
    });
    await run('ip', ['netns', 'delete', hostNetns]);

    const privateIp = attacker.private_ip as string;
    const pinged = await inMachine(['/bin/nsprobe', 'ping', '127.0.0.1', '::1', privateIp]);
    assert.deepEqual(probeLines(pinged.stdout), {
      'ping 127.0.0.1': 'ok',
      'ping ::1': 'ok',
      [`ping ${privateIp}`]: 'ok',
    });
    // Raw sockets (busybox ping, Alpine's): root in the machine has CAP_NET_RAW over its own network
    // namespace, which belongs to the machine's user namespace.
    for (const [command, target] of [
      [['ping', '-c1', '-W5'], '127.0.0.1'],
      [['ping', '-6', '-c1', '-W5'], '::1'],
      [['ping', '-6', '-c1', '-W5'], privateIp],
      [['ping6', '-c1', '-W5'], privateIp],
    ] as const) {
      const pinged = await inMachine([...command, target]);
      assert.equal(pinged.exit_code, 0, `${command.join(' ')} ${target}: ${JSON.stringify(pinged)}`);
      assert.match(pinged.stdout, /1 packets transmitted, 1 packets received/, JSON.stringify(pinged));
    }
  });

  await t.test(
    'network administration: the machine cannot change its own links, addresses or routes',
    async () => {
      // Docker's default capabilities exactly: CAP_NET_RAW, not CAP_NET_ADMIN (bit 12).
      const caps = await sh('/bin/busybox grep CapEff /proc/self/status');
      assert.match(caps.stdout, /^CapEff:\t00000000a80425fb$/m, JSON.stringify(caps));
      const attempts = [
        ['ip addr add 10.77.0.1/32 dev lo', /RTNETLINK answers: Operation not permitted/],
        ['ip -6 addr add fdaa:77::1/128 dev eth0', /RTNETLINK answers: Operation not permitted/],
        ['ip route add 10.78.0.0/16 dev eth0', /RTNETLINK answers: Operation not permitted/],
        ['ip link set eth0 down', /Operation not permitted/],
        ['ip link add hgx0 type bridge', /RTNETLINK answers: Operation not permitted/],
      ] as const;
      // Positive control: the same commands succeed as root of a user namespace (with every capability)
      // that owns its network namespace, so each failure below is the missing capability, nothing else.
      const control = await run('unshare', [
        '--user',
        '--map-root-user',
        '--net',
        'sh',
        '-c',
        `busybox ip link set lo up && busybox ip link add eth0 type bridge && busybox ip link set eth0 up && ${attempts
          .map(([command]) => `busybox ${command}`)
          .join(' && ')} && echo done`,
      ]);
      assert.equal(control.stdout, 'done\n', JSON.stringify(control));
      for (const [command, reason] of attempts) {
        const attempt = await sh(command);
        assert.notEqual(attempt.exit_code, 0, `${command}: ${JSON.stringify(attempt)}`);
        assert.match(attempt.stderr, reason, `${command}: ${JSON.stringify(attempt)}`);
      }
      // Nothing changed: eth0 is up with its address, and the machine still reaches itself over it.
      const link = await sh('ip -6 addr show dev eth0');
      assert.match(link.stdout, /state UP|,UP/, JSON.stringify(link));
      assert.ok(link.stdout.includes(attacker.private_ip as string), JSON.stringify(link));
      assert.doesNotMatch(link.stdout, /fdaa:77::1/);
      const routes = await sh('ip route; ip -6 route');
      assert.doesNotMatch(routes.stdout, /10\.78\.0\.0/, JSON.stringify(routes));
    },
  );

  t.diagnostic(`attacks-kernel took ${Math.round(performance.now() - began)} ms`);
});

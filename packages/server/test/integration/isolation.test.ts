import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { usernsPath } from '../../src/runtime/machine-namespaces.js';
import { runCommand } from '../../src/shared/run.js';
import { createApp, startTestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT, ok, processesMentioning } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Isolation, shown by trying to break it. Two apps on different custom networks run one machine each
 * (app A's with a volume). From inside the machines, as root, every attempt to see the other app's
 * processes, files or volume, to reach the host's filesystem, or to act on the host (sysctls, sysrq,
 * mounts, device nodes, /sys, kernel modules, the clock, namespaces, chroot escapes) must fail; and on
 * the host, whatever the machine's root created or runs is owned by an unprivileged mapped uid.
 */

const run = promisify(execFile);
const skip = NEEDS_ROOT;

interface ExecResult {
  exit_code: number;
  stdout: string;
  stderr: string;
}

/** The uid line of /proc/<pid>/status on the host: real, effective, saved, filesystem. */
async function hostUids(pid: number): Promise<number[]> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return (/^Uid:\s+(.+)$/m.exec(status)?.[1] ?? '').trim().split(/\s+/).map(Number);
}

/**
 * A tiny static program for the classic chroot escape: chroot into a subdirectory without changing
 * into it, climb with `..` from the cwd left outside, chroot to where the climb ended, then look for a
 * host path. Exit 0 means the host path became visible (escaped); anything else, it did not.
 */
const CHROOT_ESCAPE_C = `
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
  struct stat st;
  mkdir("/escape-jail", 0755);
  if (chroot("/escape-jail") != 0) { printf("chroot: %s\\n", strerror(errno)); return 1; }
  for (int i = 0; i < 64; i++) chdir("..");
  if (chroot(".") != 0) { printf("chroot .: %s\\n", strerror(errno)); return 1; }
  int host = argc > 1 && stat(argv[1], &st) == 0;
  int machine = stat("/.hangar/init", &st) == 0;
  printf("host path visible: %d; still in the machine's root: %d\\n", host, machine);
  return host ? 0 : 2;
}
`;

async function buildChrootEscape(dir: string): Promise<string | undefined> {
  const source = join(dir, 'escape.c');
  const binary = join(dir, 'escape');
  await writeFile(source, CHROOT_ESCAPE_C);
  try {
    await run('cc', ['-static', '-O1', '-o', binary, source]);
    return (await readFile(binary)).toString('base64');
  } catch {
    return undefined;
  }
}

test('isolation: machines cannot reach other apps or the host', { skip, timeout: 120_000 }, async (t) => {
  const began = performance.now();
  const port = await freePort();
  const h = await startTestHangard(t, { config: { runtime: 'required', registry: { port } } });
  const machineIds = new Set<string>();
  const scratch = await mkdtemp(join(tmpdir(), 'hangar-isolation-'));
  // After-hooks run first in, first out: this runs after hangard's hook closed it and removed its dir.
  t.after(async () => {
    await rm(scratch, { recursive: true, force: true });
    const netns = (await runCommand('ip', ['netns', 'list'])).stdout;
    const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
    const loops = (await runCommand('losetup', ['-a'])).stdout;
    assert.deepEqual(
      {
        netns: [...machineIds].filter((id) => netns.includes(`hangar-${id}`)),
        userns: [...machineIds].filter((id) => existsSync(usernsPath(id))),
        mounts: mountinfo.split('\n').filter((line) => line.split(' ')[4]?.startsWith(h.dataDir)),
        loopDevices: loops.split('\n').filter((line) => line.includes(h.dataDir)),
        processes: await processesMentioning(h.dataDir),
        cgroups: [...machineIds].filter((id) => existsSync(join('/sys/fs/cgroup/memory/hangar', id))),
        dirs: [h.dataDir, scratch].filter((dir) => existsSync(dir)),
      },
      { netns: [], userns: [], mounts: [], loopDevices: [], processes: [], cgroups: [], dirs: [] },
      'nothing of the test is left on the host',
    );
  });

  // The host's marker: world-readable, so only the machine's view of the filesystem can hide it.
  const markerDir = join(scratch, 'host-marker');
  const marker = join(markerDir, 'marker.txt');
  await run('mkdir', ['-m', '0777', markerDir]);
  await writeFile(marker, 'host data\n', { mode: 0o666 });
  // A host file the chroot escape looks for; no machine ever creates this path in its own rootfs.
  const escapeTarget = join(scratch, 'escape-target');
  await writeFile(escapeTarget, 'host only\n', { mode: 0o644 });
  const escapeProgram = await buildChrootEscape(scratch);

  const registry = `127.0.0.1:${port}`;
  await createApp(h, 'iso-a', 'net-a');
  await createApp(h, 'iso-b', 'net-b');
  const imageA = await buildTestImage({
    registry,
    token: h.token,
    repository: 'iso-a/web',
    files: { '/www/index.html': 'app A\n', '/a-image-only': 'A\n' },
  });
  const imageB = await buildTestImage({
    registry,
    token: h.token,
    repository: 'iso-b/web',
    files: { '/www/index.html': 'app B\n' },
  });
  const volume = await ok(h, 'POST', '/v1/apps/iso-a/volumes', { name: 'a_data', size_gb: 1 });
  const a = (
    await ok(h, 'POST', '/v1/apps/iso-a/machines', {
      config: { image: imageA, mounts: [{ volume: volume.id, path: '/data' }] },
    })
  ).id as string;
  machineIds.add(a);
  const b = (
    await ok(h, 'POST', '/v1/apps/iso-b/machines', {
      config: { image: imageB },
    })
  ).id as string;
  machineIds.add(b);
  for (const [app, id] of [
    ['iso-a', a],
    ['iso-b', b],
  ] as const) {
    const waited = await h.call('GET', `/v1/apps/${app}/machines/${id}/wait?state=started&timeout=30`);
    assert.equal(waited.status, 200, JSON.stringify(waited.body));
  }

  const execIn = async (app: string, id: string, command: string[]): Promise<ExecResult> =>
    ok(h, 'POST', `/v1/apps/${app}/machines/${id}/exec`, { command, timeout: 20 });
  const inA = (script: string) => execIn('iso-a', a, ['/bin/sh', '-c', script]);
  const inB = (script: string) => execIn('iso-b', b, ['/bin/sh', '-c', script]);
  const attempts: string[] = [];
  if (escapeProgram) {
    // Into B's rootfs through exec's stdin, in chunks under the API's 1 MiB body limit.
    for (let at = 0; at < escapeProgram.length; at += 400_000) {
      const chunk = await ok(h, 'POST', `/v1/apps/iso-b/machines/${b}/exec`, {
        command: ['/bin/sh', '-c', '/bin/busybox base64 -d >> /escape && chmod 755 /escape'],
        stdin: escapeProgram.slice(at, at + 400_000),
      });
      assert.equal(chunk.exit_code, 0, JSON.stringify(chunk));
    }
  }
  /** One attempt that must fail: a non-zero exit, and (when given) an error text that says why. */
  const mustFail = async (what: string, result: ExecResult | Promise<ExecResult>, why?: RegExp) => {
    const r = await result;
    attempts.push(`${what}: ${(r.stderr || r.stdout).trim().split('\n').at(-1) || `exit ${r.exit_code}`}`);
    assert.notEqual(r.exit_code, 0, `${what} must fail, but: ${JSON.stringify(r)}`);
    if (why) assert.match(`${r.stdout}${r.stderr}`, why, `${what}: ${JSON.stringify(r)}`);
  };

  // What A holds: a file in its rootfs, one on its volume, and its processes' host pids.
  assert.equal(
    (await inA('echo a-secret > /a-rootfs-file && echo vol-secret > /data/a-volume-file')).exit_code,
    0,
  );
  const stateRoot = join(h.dataDir, 'oci-state');
  const hostPidsOf = async (id: string) =>
    JSON.parse(
      (await run('crun', ['--root', stateRoot, 'ps', '--format', 'json', `hangar-${id}`])).stdout,
    ) as number[];
  const aHostPids = await hostPidsOf(a);
  const bHostPids = await hostPidsOf(b);
  assert.ok(aHostPids.length >= 2 && bHostPids.length >= 2, 'init and httpd in each');
  const aRootfs = join(h.dataDir, 'machines', a, 'rootfs');
  const aVolumeOnHost = join(h.dataDir, 'volumes', 'mnt', volume.id);
  assert.ok(existsSync(join(aVolumeOnHost, 'a-volume-file')), 'the volume host path is right');

  await t.test('processes: B sees only its own', async () => {
    const environs = await inB(
      'for p in /proc/[0-9]*; do tr "\\0" "\\n" < $p/environ 2>/dev/null | grep ^FLY_MACHINE_ID=; done | sort -u',
    );
    assert.equal(environs.stdout, `FLY_MACHINE_ID=${b}\n`, "every process B can see is B's");
    const ps = await inB('ps -o pid,args');
    assert.ok(!ps.stdout.includes(a), ps.stdout);
    const pids = (await inB('ls /proc')).stdout
      .split(/\s+/)
      .filter((p) => /^\d+$/.test(p))
      .map(Number);
    assert.ok(pids.length <= 6, `a handful of processes in B's pid namespace: ${pids.join(' ')}`);
    for (const pid of aHostPids.filter((p) => !pids.includes(p))) {
      await mustFail(`B: read /proc/${pid} (A's process by host pid)`, inB(`cat /proc/${pid}/environ`));
    }
    await mustFail("B: kill A's processes by host pid", inB(`kill -9 ${aHostPids.join(' ')}`));
    await mustFail(
      'B: enter pid 1 namespaces (nsenter)',
      inB('/bin/busybox nsenter -t 1 -m -p -n true'),
      /not permitted/i,
    );
    await mustFail(
      'B: a new user namespace (unshare -U -r)',
      inB('/bin/busybox unshare -U -r true'),
      /not permitted/i,
    );
    const stillThere = await inA('echo alive');
    assert.equal(stillThere.stdout, 'alive\n', 'A is untouched');
  });

  await t.test("files and volumes: B cannot reach A's rootfs or volume", async () => {
    await mustFail("B: A's rootfs file by its machine path", inB('cat /a-rootfs-file'));
    await mustFail("B: A's image file", inB('cat /a-image-only'));
    await mustFail("B: A's rootfs by its host path", inB(`ls ${aRootfs}`));
    await mustFail("B: A's volume at A's mount path", inB('ls /data/a-volume-file'));
    await mustFail("B: A's volume by its host path", inB(`ls ${aVolumeOnHost}`));
    await mustFail("B: A's upper dir by its host path", inB(`ls ${join(h.dataDir, 'machines', a, 'upper')}`));
    await mustFail(
      "B: hangard's database and secrets key",
      inB(`cat ${join(h.dataDir, 'secrets.key')} ${join(h.dataDir, 'hangar.db')}`),
    );
    await mustFail("B: A's files through /proc/<pid>/root", inB(`ls /proc/${aHostPids[0]}/root/data`));
    await mustFail(
      "B: /proc/1/root is B's own root (no A volume there)",
      inB('cat /proc/1/root/data/a-volume-file'),
    );
    const created = await h.call('POST', '/v1/apps/iso-b/machines', {
      config: { image: imageB, mounts: [{ volume: volume.id, path: '/data' }] },
    });
    attempts.push("API: a machine of app B mounting A's volume");
    assert.equal(created.status, 400, `refused: ${JSON.stringify(created.body)}`);
    assert.match(JSON.stringify(created.body), /not found in app iso-b/);
    const lsA = (await inA('ls /')).stdout;
    const lsB = (await inB('ls /')).stdout;
    assert.notEqual(lsA, lsB, 'each machine has its own root');
    assert.ok(lsA.includes('a-rootfs-file') && !lsB.includes('a-rootfs-file'));
  });

  await t.test('host filesystem: unreachable outside the rootfs and volumes', async () => {
    for (const [name, exec] of [
      ['A', inA],
      ['B', inB],
    ] as const) {
      await mustFail(`${name}: read the host marker`, exec(`cat ${marker}`));
      await mustFail(`${name}: list the host marker dir`, exec(`ls ${markerDir}`));
      await mustFail(`${name}: the host's /etc/os-release`, exec('cat /etc/os-release'));
      // Creating the same path inside the machine works, but lands in the machine's own rootfs.
      const wrote = await exec(`mkdir -p ${markerDir} && echo pwned > ${marker} && echo written`);
      attempts.push(`${name}: overwrite the host marker by its path`);
      assert.equal(wrote.stdout, 'written\n');
      assert.equal(await readFile(marker, 'utf8'), 'host data\n', 'the host file is untouched');
      await exec('echo x > /etc/hangar-escape; echo x > /proc/1/root/../../etc/hangar-escape');
      attempts.push(`${name}: write /etc/hangar-escape (directly and through /proc/1/root/..)`);
      assert.ok(!existsSync('/etc/hangar-escape'), 'nothing was written to the host /etc');
    }
    assert.equal((await inA(`cat ${marker}`)).stdout, 'pwned\n', "A's write went to A's own filesystem");
    assert.deepEqual(await readdir(markerDir), ['marker.txt'], 'nothing new in the host marker dir');
    if (escapeProgram) {
      await mustFail(
        'B: chroot escape (chroot without chdir, climb .., chroot .)',
        inB(`/escape ${escapeTarget}`),
        /host path visible: 0; still in the machine's root: 1/,
      );
    } else {
      t.diagnostic('no C compiler: the compiled chroot escape attempt was skipped');
    }
    await mustFail(
      'B: busybox chroot and climb',
      inB(
        `mkdir -p /j/bin && /bin/busybox cp /bin/busybox /j/bin/ && /bin/busybox chroot /j /bin/busybox sh -c 'cd ../../../..; /bin/busybox cat ${escapeTarget}'`,
      ),
      /can't open/,
    );
  });

  await t.test('root in the machine cannot act on the host', async () => {
    const hostName = hostname();
    await mustFail('write /proc/sys/kernel/hostname', inB('echo hacked > /proc/sys/kernel/hostname'));
    assert.equal(hostname(), hostName);
    await mustFail('sysctl -w kernel.hostname', inB('/bin/busybox sysctl -w kernel.hostname=hacked'));
    // 'h' only prints help to the kernel log, so a successful write would be harmless.
    await mustFail('write /proc/sysrq-trigger', inB('echo h > /proc/sysrq-trigger'));
    await mustFail(
      'mount a tmpfs',
      inB('mkdir -p /mnt && /bin/busybox mount -t tmpfs none /mnt'),
      /not permitted|denied/i,
    );
    await mustFail(
      'mount proc again',
      inB('mkdir -p /p2 && /bin/busybox mount -t proc proc /p2'),
      /not permitted|denied/i,
    );
    await mustFail(
      'bind-mount / elsewhere',
      inB('mkdir -p /b2 && /bin/busybox mount --bind / /b2'),
      /not permitted|denied/i,
    );
    await mustFail('umount /proc', inB('/bin/busybox umount -l /proc'), /not permitted|denied/i);
    await mustFail('mknod a block device', inB('/bin/busybox mknod /dev/sda b 8 0'), /not permitted|denied/i);
    await mustFail(
      'read a disk through a new device node',
      inB('/bin/busybox mknod /tmp/disk b 8 0; head -c 512 /tmp/disk | wc -c | grep -qv "^0$"'),
    );
    await mustFail(
      'mknod /dev/mem and read it',
      inB('/bin/busybox mknod /dev/mem c 1 1; head -c 16 /dev/mem'),
    );
    await mustFail('read a loop device', inB('/bin/busybox mknod /tmp/loop0 b 7 0; head -c 16 /tmp/loop0'));
    await mustFail('create a file under /sys', inB('touch /sys/hangar-escape'));
    await mustFail(
      'raise its own memory limit in /sys/fs/cgroup',
      inB(`echo 4294967296 > /sys/fs/cgroup/memory/hangar/${b}/memory.limit_in_bytes`),
    );
    await mustFail(
      'mount the memory cgroup to raise its limit',
      inB('mkdir -p /cg && /bin/busybox mount -t cgroup -o memory cgroup /cg'),
      /not permitted|denied/i,
    );
    await mustFail('write a /sys kernel knob', inB('echo 1 > /sys/kernel/mm/ksm/run'));
    await mustFail(
      'load a kernel module (insmod)',
      inB('echo junk > /tmp/junk.ko && /bin/busybox insmod /tmp/junk.ko'),
      /not permitted/i,
    );
    await mustFail(
      'unload a kernel module (rmmod)',
      inB('/bin/busybox rmmod loop'),
      /not permitted|no such|unknown/i,
    );
    const before = Date.now();
    // Sets the clock to what it already is: a success would be caught without moving the host's time.
    // busybox date reports the refusal but exits 0 (it prints the date anyway): judged by the error.
    const setClock = await inB('/bin/busybox date -s "@$(/bin/busybox date +%s)"');
    attempts.push('set the clock (date -s)');
    assert.match(setClock.stderr, /can't set date: Operation not permitted/, JSON.stringify(setClock));
    await mustFail('set the hardware clock', inB('/bin/busybox hwclock -w'));
    assert.ok(Math.abs(Date.now() - before) < 60_000, "the host's clock did not move");
    await mustFail('reboot the host', inB('/bin/busybox reboot -f -n'), /not permitted/i);
    await mustFail('swapoff -a', inB('/bin/busybox swapoff -a; /bin/busybox swapon /dev/null'));
    await mustFail('change the machine hostname (no CAP_SYS_ADMIN)', inB('hostname hacked'));
  });

  await t.test('on the host, machine root is an unprivileged mapped uid', async () => {
    assert.equal((await inB('touch /created-by-root && id -u')).stdout, '0\n', 'root inside');
    const upperFile = await stat(join(h.dataDir, 'machines', b, 'upper', 'created-by-root'));
    const aFile = await stat(join(aVolumeOnHost, 'a-volume-file'));
    const aRootFile = await stat(join(h.dataDir, 'machines', a, 'upper', 'a-rootfs-file'));
    assert.notEqual(upperFile.uid, 0, 'a file B root created is not owned by host root');
    assert.ok(upperFile.uid >= 0x10_0000, `a high mapped uid: ${upperFile.uid}`);
    assert.equal(upperFile.gid, upperFile.uid);
    assert.ok(aFile.uid >= 0x10_0000 && aRootFile.uid === aFile.uid, `A's files: ${aFile.uid}`);
    assert.notEqual(aFile.uid, upperFile.uid, 'each app has its own uid range');
    for (const [name, pids, uid] of [
      ['A', aHostPids, aFile.uid],
      ['B', bHostPids, upperFile.uid],
    ] as const) {
      for (const pid of pids)
        assert.deepEqual(await hostUids(pid), [uid, uid, uid, uid], `${name} pid ${pid}`);
    }
    // Exec sessions too: their host pid is found through the machine's process list while they run.
    const long = inB('sleep 3');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const during = await hostPidsOf(b);
    const extra = during.filter((p) => !bHostPids.includes(p));
    assert.ok(extra.length >= 1, 'the exec session shows up');
    for (const pid of extra)
      assert.deepEqual(await hostUids(pid), [upperFile.uid, upperFile.uid, upperFile.uid, upperFile.uid]);
    await long;
    const ps = (await ok(h, 'GET', `/v1/apps/iso-b/machines/${b}/ps`)) as Json[];
    assert.equal(ps.find((p) => p.pid === 1)?.command.startsWith('/.hangar/init'), true);
    const uidMap = await readFile(`/proc/${bHostPids[0]}/uid_map`, 'utf8');
    assert.deepEqual(
      uidMap.trim().split(/\s+/).map(Number),
      [0, upperFile.uid, 65536],
      'uid 0 → mapped uid, 65536 ids',
    );
  });

  await t.test('networks: each machine has only its own namespace', async () => {
    const links = (await run('ip', ['-n', `hangar-${b}`, '-o', 'link'])).stdout;
    assert.ok(!links.includes(a), links);
    const own = await runCommand('ip', [
      'netns',
      'exec',
      `hangar-${b}`,
      'timeout',
      '5',
      'busybox',
      'wget',
      '-qO-',
      'http://127.0.0.1:8080/',
    ]);
    assert.equal(own.stdout, 'app B\n', "B's loopback reaches B's server only");
    const machineA = await ok(h, 'GET', `/v1/apps/iso-a/machines/${a}`);
    if (machineA.private_ip) {
      const cross = await runCommand('ip', [
        'netns',
        'exec',
        `hangar-${b}`,
        'timeout',
        '3',
        'busybox',
        'wget',
        '-qO-',
        `http://[${machineA.private_ip}]:8080/`,
      ]);
      attempts.push("B: A's private address");
      assert.notEqual(cross.code, 0, `B reached A across networks: ${JSON.stringify(cross)}`);
    }
  });

  t.diagnostic(`${attempts.length} escape attempts made, all refused`);
  if (process.env.HANGAR_TEST_VERBOSE) for (const attempt of attempts) t.diagnostic(attempt);
  t.diagnostic(`whole file: ${Math.round(performance.now() - began)} ms`);
});

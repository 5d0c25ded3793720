import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCommand } from '../../src/shared/run.js';
import { type DaemonProcess, daemonHarness } from '../helpers/daemon-process.js';
import { cgroupDirsOf, crunList, forceCleanup, loopDevicesHeld } from '../helpers/host-cleanup.js';
import { type Json, mountsUnder, NEEDS_ROOT, ok, processesMentioning } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * The crash gaps, each hit exactly: hangard runs as a child process with HANGAR_TEST_CRASH_AT naming
 * the point at which it SIGKILLs itself (src/shared/crash-points.ts), and the next hangard on the same
 * data directory must repair what that crash left, at start, before it serves:
 * 1. boot-volumes-mounted: a boot killed after mounting its volume: the volume is unmounted, its loop
 *    device gone (volumes.json is written ahead of the mounts).
 * 2. snapshot-frozen: a snapshot killed between fsfreeze and thaw: the volume is thawed (its machine
 *    writes again) and the snapshot, which has no image, is `failed`, never half-recorded.
 * 3. snapshot-published: a snapshot killed after publishing its image, before completing its record:
 *    the snapshot is recorded whole (its digest is the image's).
 * 4. destroy-recorded: a destroy killed after recording `destroying`: the machine is destroyed to the
 *    end (container, mounts), its volume detached, its lease dropped, with an event saying so; the app
 *    then deletes without `force`.
 * Every container, mount, loop device, namespace and process is gone at the end, even on failure.
 */

const skip = NEEDS_ROOT;

test('kill -9 at each crash point: the next hangard repairs what it left', {
  skip,
  timeout: 120_000,
}, async (t) => {
  const ids = new Set<string>();
  const daemons: DaemonProcess[] = [];
  let dataDir = '';
  // After-hooks run first in, first out: daemons and host leftovers go before the harness removes dirs.
  t.after(async () => {
    for (const daemon of daemons) await daemon.kill().catch(() => undefined);
    if (dataDir !== '') await forceCleanup(dataDir, ids);
  });
  const harness = daemonHarness(t);
  dataDir = harness.makeDataDir();
  t.after(async () => {
    const netns = (await runCommand('ip', ['netns', 'list'])).stdout;
    assert.deepEqual(
      {
        netns: [...ids].filter((id) => netns.includes(`hangar-${id}`)),
        mounts: await mountsUnder(dataDir),
        loopDevices: await loopDevicesHeld(dataDir),
        processes: (await processesMentioning(dataDir)).map((p) => p.cmdline),
        cgroups: await cgroupDirsOf(ids),
        dataDir: existsSync(dataDir),
      },
      { netns: [], mounts: [], loopDevices: [], processes: [], cgroups: [], dataDir: false },
      'nothing of the test is left on the host',
    );
  });
  const stateRoot = join(dataDir, 'oci-state');
  const volumesDir = join(dataDir, 'volumes');
  const registryPort = await freePort();
  const configFile = join(harness.makeDataDir(), 'hangar.json');
  writeFileSync(configFile, JSON.stringify({ runtime: 'required', registry: { port: registryPort } }));
  const startDaemon = async (crashAt?: string) => {
    const daemon = await harness.start(
      dataDir,
      { HANGAR_RUNTIME: 'required', ...(crashAt ? { HANGAR_TEST_CRASH_AT: crashAt } : {}) },
      ['--config', configFile],
    );
    daemons.push(daemon);
    return daemon;
  };
  /** Sends a request that makes the daemon kill itself; waits until it is dead by SIGKILL. */
  const crashOn = async (d: DaemonProcess, method: string, path: string, body?: unknown) => {
    await d.call(method, path, body).catch(() => undefined);
    const exited = await d.exited;
    assert.equal(exited.signal, 'SIGKILL', `hangard killed itself at its crash point:\n${d.output()}`);
  };
  // Volumes are mounted below the mount root (itself a shared bind while hangard runs: volume-storage.ts).
  const volumeMounts = () => mountsUnder(`${join(volumesDir, 'mnt')}/`);
  /** exec, bounded: a write to a frozen filesystem would block the call forever. */
  const exec = async (d: DaemonProcess, id: string, script: string) => {
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`exec "${script}" did not return within 20 s`)), 20_000);
    });
    try {
      return await Promise.race([
        ok(d, 'POST', `/v1/apps/gaps/machines/${id}/exec`, {
          command: ['/bin/sh', '-c', script],
          timeout: 10,
        }),
        bound,
      ]);
    } finally {
      clearTimeout(timer);
    }
  };

  // 1. A boot killed after mounting its volume.
  const first = await startDaemon('boot-volumes-mounted');
  await ok(first, 'POST', '/v1/apps', { app_name: 'gaps', org_slug: 'personal' });
  const image = await buildTestImage({
    registry: `127.0.0.1:${registryPort}`,
    token: first.token,
    repository: 'gaps/web',
  });
  const volume = await ok(first, 'POST', '/v1/apps/gaps/volumes', { name: 'data', size_gb: 1 });
  const created = await first.call('POST', '/v1/apps/gaps/machines', {
    config: { image, restart: { policy: 'no' }, mounts: [{ volume: volume.id, path: '/data' }] },
  });
  assert.ok(created.status >= 200 && created.status < 300, JSON.stringify(created.body));
  const machineId = created.body.id as string;
  ids.add(machineId);
  assert.equal((await first.exited).signal, 'SIGKILL', `killed during the boot:\n${first.output()}`);
  assert.equal((await volumeMounts()).length, 1, 'the crash left the volume mounted');

  const second = await startDaemon('snapshot-frozen');
  const machine = async (d: DaemonProcess) => ok(d, 'GET', `/v1/apps/gaps/machines/${machineId}`);
  assert.equal((await machine(second)).state, 'stopped');
  assert.deepEqual(await volumeMounts(), [], 'the interrupted boot is undone: its volume is unmounted');
  assert.deepEqual(await loopDevicesHeld(volumesDir), [], 'and its loop device released');

  // 2. A snapshot killed with the volume's filesystem frozen, its machine running.
  await ok(second, 'POST', `/v1/apps/gaps/machines/${machineId}/start`);
  assert.equal((await exec(second, machineId, 'echo one > /data/one && cat /data/one')).stdout, 'one\n');
  await crashOn(second, 'POST', `/v1/apps/gaps/volumes/${volume.id}/snapshots`);

  const third = await startDaemon('snapshot-published');
  assert.equal((await machine(third)).state, 'started', 'the machine survived the crash');
  const wrote = await exec(third, machineId, 'echo two > /data/two && cat /data/two');
  assert.equal(wrote.stdout, 'two\n', 'the volume is thawed: its machine writes to it');
  const [frozenSnapshot] = await ok(third, 'GET', `/v1/apps/gaps/volumes/${volume.id}/snapshots`);
  assert.equal(frozenSnapshot.status, 'failed', JSON.stringify(frozenSnapshot));
  assert.deepEqual(readdirSync(join(volumesDir, 'snapshots')), [], 'the failed snapshot has no image');
  const restore = await third.call('POST', '/v1/apps/gaps/volumes', {
    name: 'restored',
    snapshot_id: frozenSnapshot.id,
  });
  assert.equal(restore.status, 412, `a failed snapshot does not restore: ${JSON.stringify(restore.body)}`);

  // 3. A snapshot killed after its image is published, before its record is completed.
  await crashOn(third, 'POST', `/v1/apps/gaps/volumes/${volume.id}/snapshots`);

  const fourth = await startDaemon('destroy-recorded');
  const snapshots = (await ok(fourth, 'GET', `/v1/apps/gaps/volumes/${volume.id}/snapshots`)) as Json[];
  const published = snapshots.find((s) => s.id !== frozenSnapshot.id);
  assert.ok(published, JSON.stringify(snapshots));
  assert.equal(published.status, 'created', 'the published snapshot is recorded whole');
  const file = join(volumesDir, 'snapshots', `${published.id}.img`);
  assert.equal(published.digest, `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`);
  assert.ok(published.size > 0);

  // 4. A destroy killed after recording `destroying`, the machine leased and running.
  const lease = await ok(fourth, 'POST', `/v1/apps/gaps/machines/${machineId}/lease`, { ttl: 600 });
  const nonce = lease.data.nonce as string;
  await fourth
    .call('DELETE', `/v1/apps/gaps/machines/${machineId}?force=true`, undefined, {
      headers: { 'fly-machine-lease-nonce': nonce },
    })
    .catch(() => undefined);
  assert.equal((await fourth.exited).signal, 'SIGKILL', `killed during the destroy:\n${fourth.output()}`);
  assert.equal((await crunList(stateRoot)).length, 1, 'the crash left the container running');

  const fifth = await startDaemon();
  assert.equal((await machine(fifth)).state, 'destroyed');
  const events = (await ok(fifth, 'GET', `/v1/apps/gaps/machines/${machineId}/events?limit=100`)) as Json[];
  const destroyed = events.find((e) => e.type === 'destroy' && e.status === 'destroyed');
  assert.ok(destroyed, JSON.stringify(events));
  assert.equal(destroyed.request?.recovered, true, JSON.stringify(destroyed));
  assert.equal((await ok(fifth, 'GET', `/v1/apps/gaps/volumes/${volume.id}`)).attached_machine_id, null);
  assert.equal((await fifth.call('GET', `/v1/apps/gaps/machines/${machineId}/lease`)).status, 404);
  assert.deepEqual(await crunList(stateRoot), [], 'no container is left');
  // While hangard runs, the volumes' shared mount root stays (volume-storage.ts); the after-hook checks
  // that nothing at all is left once it closed.
  assert.deepEqual(await volumeMounts(), [], 'no volume is left mounted');
  assert.deepEqual(
    (await mountsUnder(dataDir)).filter((point) => point !== join(volumesDir, 'mnt')),
    [],
    'no mount is left',
  );
  assert.deepEqual(await loopDevicesHeld(dataDir), [], 'no loop device is left');
  assert.ok(!existsSync(join(dataDir, 'machines', machineId)), 'the machine dir is gone');
  await ok(fifth, 'DELETE', '/v1/apps/gaps');
  await fifth.stop();
  assert.deepEqual(
    (await processesMentioning(dataDir)).map((p) => p.cmdline),
    [],
    'no registry, shim or runtime process is left',
  );
});

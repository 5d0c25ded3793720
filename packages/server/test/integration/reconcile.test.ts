import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { usernsPath } from '../../src/runtime/machine-namespaces.js';
import { detectOciRuntime } from '../../src/runtime/oci/detect.js';
import { OciCli } from '../../src/runtime/oci/oci-cli.js';
import { runCommand } from '../../src/shared/run.js';
import { type DaemonProcess, daemonHarness } from '../helpers/daemon-process.js';
import { cgroupDirsOf, crunList, forceCleanup } from '../helpers/host-cleanup.js';
import {
  type Json,
  mountsUnder,
  NEEDS_ROOT,
  ok,
  pollUntil,
  processesMentioning,
} from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * kill -9 of hangard with machines running: they keep serving while it is down, and the next hangard on
 * the same data directory re-adopts the survivors (it can stop them and gets their exit), settles the
 * machines whose container exited or vanished meanwhile, and removes a container the store does not
 * know. Hangard runs as a child process with the real runtime; every container, mount, namespace and
 * process it made is gone at the end, even when the test fails.
 */

const skip = NEEDS_ROOT;

async function waitState(d: DaemonProcess, app: string, id: string, state: string) {
  const response = await d.call('GET', `/v1/apps/${app}/machines/${id}/wait?state=${state}&timeout=30`);
  assert.equal(response.status, 200, `machine ${id} → ${state}: ${JSON.stringify(response.body)}`);
}

/** GET / from inside the machine's network namespace (coreutils timeout: busybox wget -T crashes). */
async function httpInMachine(id: string): Promise<string> {
  const result = await runCommand(
    'ip',
    ['netns', 'exec', `hangar-${id}`, 'timeout', '5', 'busybox', 'wget', '-qO-', 'http://127.0.0.1:8080/'],
    { timeoutMs: 15_000 },
  );
  assert.equal(result.code, 0, `HTTP into machine ${id}: ${JSON.stringify(result)}`);
  return result.stdout;
}

test('kill -9 of hangard: machines keep running, the next hangard re-adopts and settles them', {
  skip,
  timeout: 150_000,
}, async (t) => {
  const began = performance.now();
  const ids = new Set<string>();
  const daemons: DaemonProcess[] = [];
  let dataDir = '';
  // After-hooks run first in, first out: this one (kill daemons, then anything they left) runs before the
  // harness removes the directories, so no directory is removed under a mounted rootfs.
  t.after(async () => {
    for (const daemon of daemons) await daemon.kill().catch(() => undefined);
    if (dataDir !== '') await forceCleanup(dataDir, ids);
  });
  const harness = daemonHarness(t);
  dataDir = harness.makeDataDir();
  // Registered last, so it runs last: after the harness removed the directories.
  t.after(async () => {
    const netns = (await runCommand('ip', ['netns', 'list'])).stdout;
    assert.deepEqual(
      {
        netns: [...ids].filter((id) => netns.includes(`hangar-${id}`)),
        userns: [...ids].filter((id) => existsSync(usernsPath(id))),
        mounts: await mountsUnder(dataDir),
        processes: (await processesMentioning(dataDir)).map((p) => p.cmdline),
        cgroups: await cgroupDirsOf(ids),
        dataDir: existsSync(dataDir),
      },
      { netns: [], userns: [], mounts: [], processes: [], cgroups: [], dataDir: false },
      'nothing of the test is left on the host',
    );
  });
  const stateRoot = join(dataDir, 'oci-state');
  const registryPort = await freePort();
  const configFile = join(harness.makeDataDir(), 'hangar.json');
  writeFileSync(configFile, JSON.stringify({ runtime: 'required', registry: { port: registryPort } }));
  const startDaemon = async () => {
    const t0 = performance.now();
    const daemon = await harness.start(dataDir, { HANGAR_RUNTIME: 'required' }, ['--config', configFile]);
    daemons.push(daemon);
    t.diagnostic(`hangard ready in ${Math.round(performance.now() - t0)} ms`);
    return daemon;
  };

  // 1. A hangard with four running machines, one of them suspended.
  const first = await startDaemon();
  const created = await first.call('POST', '/v1/apps', { app_name: 'rec', org_slug: 'personal' });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const image = await buildTestImage({
    registry: `127.0.0.1:${registryPort}`,
    token: first.token,
    repository: 'rec/web',
    files: { '/www/index.html': 'still here\n' },
  });
  const create = async (config: Record<string, unknown>) => {
    const body = await ok(first, 'POST', '/v1/apps/rec/machines', { config: { image, ...config } });
    ids.add(body.id);
    return body.id as string;
  };
  /** Survives, keeps serving, re-adopted as started. */
  const survivor = await create({ stop_config: { signal: 'SIGTERM', timeout: '5s' } });
  /** Survives frozen, re-adopted as suspended. */
  const frozen = await create({});
  /** Its container is killed from outside while hangard is down: the shim records the exit. */
  const killed = await create({ restart: { policy: 'no' } });
  /** Its container vanishes without a trace (shim and container gone, no exit status). */
  const vanished = await create({ restart: { policy: 'no' } });
  for (const id of [survivor, frozen, killed, vanished]) await waitState(first, 'rec', id, 'started');
  await ok(first, 'POST', `/v1/apps/rec/machines/${frozen}/suspend`);

  // 2. kill -9: nothing of hangard gets to run.
  await first.kill();
  assert.equal((await first.exited).signal, 'SIGKILL');

  // 3. While hangard is down: the machines serve, the frozen one stays frozen.
  for (const id of [survivor, killed, vanished]) assert.equal(await httpInMachine(id), 'still here\n');
  const downList = await crunList(stateRoot);
  assert.equal(downList.find((c) => c.id === `hangar-${frozen}`)?.status, 'paused');

  // The killed one: SIGKILL its container from outside; its shim writes the exit status.
  const killResult = await runCommand('crun', ['--root', stateRoot, 'kill', `hangar-${killed}`, 'KILL']);
  assert.equal(killResult.code, 0, killResult.stderr);
  await pollUntil('the shim to record the exit', async () =>
    existsSync(join(dataDir, 'machines', killed, 'exit')) ? true : undefined,
  );

  // The vanished one: its shim dies first (no exit status will be written), then its container goes.
  const shims = (await processesMentioning(`machines/${vanished}/exit`)).filter((p) =>
    p.cmdline.includes('hangar-shim'),
  );
  // The shim and the subshells of its pipeline into the log writer: all of them.
  assert.ok(shims.length >= 1, JSON.stringify(shims));
  for (const shim of shims) process.kill(shim.pid, 'SIGKILL');
  await runCommand('crun', ['--root', stateRoot, 'kill', `hangar-${vanished}`, 'KILL']);
  await pollUntil('the vanished container to be gone', async () => {
    const list = await crunList(stateRoot);
    if (!list.some((c) => c.id === `hangar-${vanished}`)) return true;
    await runCommand('crun', ['--root', stateRoot, 'delete', '-f', `hangar-${vanished}`]);
    return undefined;
  });
  assert.ok(!existsSync(join(dataDir, 'machines', vanished, 'exit')), 'no exit status for the vanished one');

  // A stray: a container in Hangar's state root that no machine record names (as if created by a run
  // that crashed before its record was written), sharing the survivor's rootfs, with its own netns.
  const strayId = 'ffffffff5742a9';
  ids.add(strayId);
  const strayDir = join(dataDir, 'machines', strayId);
  await mkdir(strayDir, { recursive: true });
  const config = JSON.parse(await readFile(join(dataDir, 'machines', survivor, 'config.json'), 'utf8'));
  config.process.args = ['/.hangar/init', '--', '/bin/busybox', 'sleep', '600'];
  config.hostname = 'stray';
  config.linux.cgroupsPath = `/hangar/${strayId}/ctr`;
  config.linux.namespaces = config.linux.namespaces.map((ns: Json) =>
    ns.type === 'network' ? { type: 'network' } : ns,
  );
  await writeFile(join(strayDir, 'config.json'), JSON.stringify(config));
  const scratch = harness.makeDataDir();
  const { choice } = await detectOciRuntime(join(scratch, 'probe'), join(scratch, 'probe-state'));
  const line = new OciCli(choice, stateRoot).runCommandLine(
    strayDir,
    `hangar-${strayId}`,
    join(strayDir, 'pid'),
  );
  const strayProcess = spawn(line.file, line.args, { detached: true, stdio: 'ignore' });
  strayProcess.unref();
  await pollUntil('the stray container to run', async () =>
    (await crunList(stateRoot)).some((c) => c.id === `hangar-${strayId}` && c.status === 'running')
      ? true
      : undefined,
  );

  // 4. A new hangard on the same data directory.
  const second = await startDaemon();
  const machine = (id: string) => ok(second, 'GET', `/v1/apps/rec/machines/${id}`);
  assert.equal((await machine(survivor)).state, 'started');
  assert.equal((await machine(frozen)).state, 'suspended');
  assert.equal((await machine(killed)).state, 'stopped');
  assert.equal((await machine(vanished)).state, 'stopped');

  const lastExit = async (id: string) =>
    ((await ok(second, 'GET', `/v1/apps/rec/machines/${id}/events?limit=100`)) as Json[]).find(
      (e) => e.type === 'exit',
    );
  const killedExit = await lastExit(killed);
  assert.ok(killedExit, 'the killed machine has an exit event');
  assert.equal(killedExit.request.exit_event.exit_code, 137, JSON.stringify(killedExit));
  assert.equal(killedExit.request.exit_event.signal, 'SIGKILL');
  assert.equal(killedExit.request.exit_event.requested_stop, false);
  assert.equal(killedExit.request.exit_event.oom_killed, false, 'a SIGKILL from outside is no OOM kill');
  assert.equal(killedExit.request.exit_event.restarting, false);
  const vanishedExit = await lastExit(vanished);
  assert.ok(vanishedExit, 'the vanished machine has an exit event');
  assert.equal(vanishedExit.request.exit_event.exit_code, null);
  assert.match(vanishedExit.request.error, /vanished/);

  // Exactly the containers of started/suspended machines are left: the stray is gone with its dir.
  const after = await crunList(stateRoot);
  assert.deepEqual(
    after.map((c) => `${c.id}:${c.status}`).sort(),
    [`hangar-${survivor}:running`, `hangar-${frozen}:paused`].sort(),
  );
  assert.ok(!existsSync(strayDir), 'the stray runtime dir is removed');
  assert.deepEqual(await cgroupDirsOf([strayId]), [], 'the stray cgroups are removed');
  assert.deepEqual(
    (await mountsUnder(join(dataDir, 'machines'))).sort(),
    [join(dataDir, 'machines', survivor, 'rootfs'), join(dataDir, 'machines', frozen, 'rootfs')].sort(),
    'only the running machines keep their rootfs mounted',
  );

  // 5. The survivors are really re-adopted: they answer, resume, and stop with a real exit status.
  assert.equal(await httpInMachine(survivor), 'still here\n');
  assert.equal(
    (await ok(second, 'POST', `/v1/apps/rec/machines/${frozen}/start`)).previous_state,
    'suspended',
  );
  assert.equal(await httpInMachine(frozen), 'still here\n');
  const t0 = performance.now();
  await ok(second, 'POST', `/v1/apps/rec/machines/${survivor}/stop`, {});
  const stopMs = Math.round(performance.now() - t0);
  assert.equal((await machine(survivor)).state, 'stopped');
  const stopExit = await lastExit(survivor);
  assert.ok(stopExit, 'the stopped survivor has an exit event');
  // tini reports the program killed by SIGTERM as 143; a runtime that had not re-adopted the container
  // could not have seen it end (it would report no status).
  assert.equal(stopExit.request.exit_event.exit_code, 143, JSON.stringify(stopExit));
  assert.equal(stopExit.request.exit_event.requested_stop, true);
  assert.ok(stopMs < 4_000, `stopped by its signal, not by the timeout (${stopMs} ms)`);
  assert.ok(!(await crunList(stateRoot)).some((c) => c.id === `hangar-${survivor}`));

  // 6. Destroy every machine, then a clean shutdown: nothing is left running.
  for (const id of [survivor, frozen, killed, vanished]) {
    await ok(second, 'DELETE', `/v1/apps/rec/machines/${id}?force=true`);
  }
  await second.stop();
  assert.deepEqual(await crunList(stateRoot), [], 'no container is left');
  assert.deepEqual(await mountsUnder(dataDir), [], 'no mount is left');
  assert.deepEqual(
    (await processesMentioning(dataDir)).map((p) => p.cmdline),
    [],
    'no registry, shim or runtime process is left',
  );
  t.diagnostic(
    `stop of a re-adopted machine: ${stopMs} ms; whole test ${Math.round(performance.now() - began)} ms`,
  );
});

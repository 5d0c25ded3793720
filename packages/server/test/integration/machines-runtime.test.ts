import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { usernsPath } from '../../src/runtime/machine-namespaces.js';
import { runCommand } from '../../src/shared/run.js';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT, ok, pollUntil, processesMentioning, sleep } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Machines really running as OCI containers: small busybox images built with umoci, pushed to Hangar's
 * own registry, created through the Machines API and checked from inside their network namespace. One
 * hangard (with its registry) serves every subtest; its close removes every machine, and the last hook
 * checks that nothing (namespace, mount, container, process, cgroup, directory) is left on the host.
 */

const skip = NEEDS_ROOT;

interface Fixture {
  h: TestHangard;
  registry: string;
  /** Every machine any subtest created, for the leftover check. */
  machineIds: Set<string>;
}

async function createMachine(f: Fixture, app: string, config: Record<string, unknown>): Promise<string> {
  const body = await ok(f.h, 'POST', `/v1/apps/${app}/machines`, { config });
  f.machineIds.add(body.id);
  return body.id as string;
}

async function waitState(h: TestHangard, app: string, id: string, state: string, timeoutSec = 30) {
  const response = await h.call(
    'GET',
    `/v1/apps/${app}/machines/${id}/wait?state=${state}&timeout=${timeoutSec}`,
  );
  if (response.status !== 200) {
    const machine = await h.call('GET', `/v1/apps/${app}/machines/${id}`);
    assert.fail(
      `machine ${id} did not become ${state}: ${response.status} ${JSON.stringify(response.body)}; ` +
        `machine: ${JSON.stringify(machine.body?.state)} events ${JSON.stringify(machine.body?.events)}`,
    );
  }
}

async function events(h: TestHangard, app: string, id: string): Promise<Json[]> {
  return (await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/events?limit=1000`)) as Json[];
}

/** Newest first, as the API lists them. */
const exitEvents = (list: Json[]) => list.filter((e) => e.type === 'exit');

/**
 * An HTTP GET from inside the machine's network namespace with busybox wget, bounded by coreutils'
 * `timeout` (exit 124 when it expires): Debian's busybox 1.35 wget crashes (SIGSEGV) when given `-T`.
 */
function wgetInMachine(id: string, timeoutSec: number, path = '/') {
  return runCommand(
    'ip',
    [
      'netns',
      'exec',
      `hangar-${id}`,
      'timeout',
      String(timeoutSec),
      'busybox',
      'wget',
      '-qO-',
      `http://127.0.0.1:8080${path}`,
    ],
    { timeoutMs: (timeoutSec + 10) * 1000 },
  );
}

async function exec(f: Fixture, app: string, id: string, command: string[], stdin?: string) {
  return ok(f.h, 'POST', `/v1/apps/${app}/machines/${id}/exec`, {
    command,
    ...(stdin !== undefined ? { stdin } : {}),
  });
}

/** Reads the NDJSON logs; with `follow`, until `enough` says so, then aborts the request. */
async function readLogs(
  h: TestHangard,
  app: string,
  id: string,
  query: string,
  enough?: (lines: Json[]) => boolean,
): Promise<Json[]> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 20_000);
  const response = await fetch(`${h.url}/v1/apps/${app}/machines/${id}/logs?${query}`, {
    headers: { authorization: `Bearer ${h.token}` },
    signal: abort.signal,
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /application\/x-ndjson/);
  const lines: Json[] = [];
  let buffered = '';
  const decoder = new TextDecoder();
  const reader = response.body!.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      for (const part of parts) if (part !== '') lines.push(JSON.parse(part));
      if (enough?.(lines)) break;
    }
  } catch (error) {
    if (!abort.signal.aborted) throw error;
    assert.fail(`the log stream did not deliver what was expected in time; got ${JSON.stringify(lines)}`);
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
  return lines;
}

/** Nothing of this file's hangard may outlive it: run after its close and directory removal. */
async function assertHostClean(dataDir: string, machineIds: Set<string>): Promise<void> {
  const netns = (await runCommand('ip', ['netns', 'list'])).stdout;
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const loops = (await runCommand('losetup', ['-a'])).stdout;
  const leftovers = {
    netns: [...machineIds].filter((id) => new RegExp(`^hangar-${id}\\b`, 'm').test(netns)),
    userns: [...machineIds].filter((id) => existsSync(usernsPath(id))),
    mounts: mountinfo.split('\n').filter((line) => line.split(' ')[4]?.startsWith(dataDir)),
    loopDevices: loops.split('\n').filter((line) => line.includes(dataDir)),
    processes: await processesMentioning(dataDir),
    cgroups: [...machineIds].filter((id) => existsSync(join('/sys/fs/cgroup/memory/hangar', id))),
    dataDir: existsSync(dataDir) ? [dataDir] : [],
  };
  assert.deepEqual(leftovers, {
    netns: [],
    userns: [],
    mounts: [],
    loopDevices: [],
    processes: [],
    cgroups: [],
    dataDir: [],
  });
}

async function setUp(t: TestContext): Promise<Fixture> {
  const port = await freePort();
  const machineIds = new Set<string>();
  const h = await startTestHangard(t, { config: { runtime: 'required', registry: { port } } });
  // After-hooks run first in, first out: this one runs after hangard's own closed it and removed its dir.
  t.after(() => assertHostClean(h.dataDir, machineIds));
  t.diagnostic(`runtime: ${JSON.stringify(h.runtime)}`);
  return { h, registry: `127.0.0.1:${port}`, machineIds };
}

const script = (text: string) => ['/bin/sh', '-c', text];

test('machines run as OCI containers', { skip, timeout: 150_000 }, async (t) => {
  const started = performance.now();
  const f = await setUp(t);
  const { h } = f;
  await createApp(h, 'rt-app');
  const app = 'rt-app';
  const web = await buildTestImage({
    registry: f.registry,
    token: f.h.token,
    repository: 'rt-app/rt-web',
    files: { '/www/index.html': 'hello from the machine\n' },
  });
  let webMachine = '';

  await t.test(
    '(a) running: create, started, answers HTTP in its namespace, image_ref has the digest',
    async () => {
      const t0 = performance.now();
      webMachine = await createMachine(f, app, { image: web, guest: { memory_mb: 128 } });
      await waitState(h, app, webMachine, 'started');
      const startMs = Math.round(performance.now() - t0);
      // `started` means the process runs, not that it listens yet: allow httpd a moment to bind.
      let answer = await wgetInMachine(webMachine, 5);
      for (let i = 0; i < 50 && /Connection refused/.test(answer.stderr); i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        answer = await wgetInMachine(webMachine, 5);
      }
      assert.equal(answer.code, 0, answer.stderr);
      assert.equal(answer.stdout, 'hello from the machine\n');
      const machine = await ok(h, 'GET', `/v1/apps/${app}/machines/${webMachine}`);
      assert.equal(machine.state, 'started');
      assert.equal(machine.image_ref.registry, f.registry);
      assert.equal(machine.image_ref.repository, 'rt-app/rt-web');
      assert.equal(machine.image_ref.tag, 'latest');
      assert.match(machine.image_ref.digest, /^sha256:[0-9a-f]{64}$/);
      const kinds = machine.events.map((e: Json) => `${e.type}:${e.status}`);
      assert.deepEqual(kinds.slice(0, 2), ['start:started', 'launch:created']);
      t.diagnostic(`create → started ${startMs} ms; events ${kinds.join(', ')}`);
    },
  );

  await t.test('(i) ps lists the machine processes with pid 1 = the init', async () => {
    assert.ok(webMachine, 'needs the machine of (a)');
    const list = (await ok(h, 'GET', `/v1/apps/${app}/machines/${webMachine}/ps`)) as Json[];
    const init = list.find((p) => p.pid === 1);
    assert.ok(init, `pid 1 in ${JSON.stringify(list)}`);
    assert.match(init.command, /^\/\.hangar\/init -- /, 'pid 1 is tini, in front of the command');
    const httpd = list.find((p) => /busybox httpd -f -p 8080/.test(p.command) && p.pid !== 1);
    assert.ok(httpd, `httpd is listed: ${JSON.stringify(list)}`);
    assert.ok(httpd.pid > 1 && httpd.pid < 100, `pids are the machine's own (pid namespace): ${httpd.pid}`);
    assert.ok(
      httpd.listen_sockets.some((s: Json) => s.proto === 'tcp' && /:8080$/.test(s.address)),
      `httpd listens on 8080: ${JSON.stringify(httpd.listen_sockets)}`,
    );
    assert.ok(httpd.rss > 0);
  });

  await t.test('(b) stop with a signal the app traps: exit code passes through, logs show it', async () => {
    const trapImage = await buildTestImage({
      registry: f.registry,
      token: f.h.token,
      repository: 'rt-app/rt-trap',
      config: {
        cmd: script("trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 1 & wait; done"),
      },
    });
    const id = await createMachine(f, app, {
      image: trapImage,
      stop_config: { signal: 'SIGTERM', timeout: '10s' },
    });
    await waitState(h, app, id, 'started');
    await pollUntil('the trap to be installed', async () => {
      const lines = await readLogs(h, app, id, 'tail=10');
      return lines.some((l) => l.message === 'ready') ? true : undefined;
    });
    const t0 = performance.now();
    await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/stop`, {});
    const stopMs = Math.round(performance.now() - t0);
    const machine = await ok(h, 'GET', `/v1/apps/${app}/machines/${id}`);
    assert.equal(machine.state, 'stopped');
    const [exit] = exitEvents(await events(h, app, id));
    assert.ok(exit, 'an exit event');
    assert.equal(exit.request.exit_event.exit_code, 7, JSON.stringify(exit));
    assert.equal(exit.request.exit_event.requested_stop, true);
    assert.equal(exit.request.exit_event.signal, null);
    assert.equal(exit.request.exit_event.oom_killed, false);
    assert.ok(stopMs < 5_000, `the trapped TERM ended it at once (${stopMs} ms), not after the timeout`);
    const logs = await readLogs(h, app, id, 'tail=50');
    assert.ok(
      logs.some((l) => l.message === 'got TERM' && l.instance === id),
      `logs: ${JSON.stringify(logs)}`,
    );

    const stubborn = await buildTestImage({
      registry: f.registry,
      token: f.h.token,
      repository: 'rt-app/rt-stubborn',
      config: { cmd: script("trap '' TERM; echo ignoring; while true; do sleep 1 & wait; done") },
    });
    const id2 = await createMachine(f, app, {
      image: stubborn,
      stop_config: { signal: 'SIGTERM', timeout: '1s' },
    });
    await waitState(h, app, id2, 'started');
    await pollUntil('the trap to be installed', async () => {
      const lines = await readLogs(h, app, id2, 'tail=10');
      return lines.some((l) => l.message === 'ignoring') ? true : undefined;
    });
    const t1 = performance.now();
    await ok(h, 'POST', `/v1/apps/${app}/machines/${id2}/stop`, {});
    const killMs = Math.round(performance.now() - t1);
    const [killed] = exitEvents(await events(h, app, id2));
    assert.ok(killed, 'an exit event');
    assert.equal(killed.request.exit_event.signal, 'SIGKILL', JSON.stringify(killed));
    assert.equal(killed.request.exit_event.requested_stop, true);
    assert.equal(killed.request.exit_event.oom_killed, false, 'a SIGKILL Hangar sent is no OOM kill');
    assert.ok(killMs >= 900, `SIGKILL only after the 1 s timeout (${killMs} ms)`);
    assert.ok(killMs < 8_000, `and soon after it (${killMs} ms)`);
    t.diagnostic(`trapped TERM stop ${stopMs} ms; ignored TERM → SIGKILL after ${killMs} ms`);
  });

  await t.test('(c) suspend: requests hang while frozen and complete after resume', async () => {
    assert.ok(webMachine, 'needs the machine of (a)');
    await ok(h, 'POST', `/v1/apps/${app}/machines/${webMachine}/suspend`);
    assert.equal((await ok(h, 'GET', `/v1/apps/${app}/machines/${webMachine}`)).state, 'suspended');
    const t0 = performance.now();
    const frozen = await wgetInMachine(webMachine, 2);
    const frozenMs = Math.round(performance.now() - t0);
    assert.equal(frozen.code, 124, `no answer from a suspended machine (got ${JSON.stringify(frozen)})`);
    assert.ok(frozenMs >= 1_500, `the request hung until its timeout (${frozenMs} ms)`);

    let settled = false;
    const pending = wgetInMachine(webMachine, 20).finally(() => {
      settled = true;
    });
    await sleep(700);
    assert.equal(settled, false, 'the request started during the suspension is still waiting');
    const t1 = performance.now();
    const resumed = await ok(h, 'POST', `/v1/apps/${app}/machines/${webMachine}/start`);
    assert.equal(resumed.previous_state, 'suspended');
    const answer = await pending;
    const resumeMs = Math.round(performance.now() - t1);
    assert.equal(answer.code, 0, answer.stderr);
    assert.equal(answer.stdout, 'hello from the machine\n');
    assert.equal((await ok(h, 'GET', `/v1/apps/${app}/machines/${webMachine}`)).state, 'started');
    t.diagnostic(`resume → the held request answered in ${resumeMs} ms`);
  });

  await t.test('(d) memory limit: the main process is OOM-killed and the exit event says so', async () => {
    const hungry = await buildTestImage({
      registry: f.registry,
      token: f.h.token,
      repository: 'rt-app/rt-hungry',
      config: {
        cmd: script(
          "sleep 1; echo allocating; x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived; sleep 1000",
        ),
      },
    });
    const id = await createMachine(f, app, {
      image: hungry,
      guest: { memory_mb: 128 },
      restart: { policy: 'no' },
    });
    await waitState(h, app, id, 'stopped');
    const [exit] = exitEvents(await events(h, app, id));
    assert.ok(exit, 'an exit event');
    const info = exit.request.exit_event;
    assert.equal(info.oom_killed, true, JSON.stringify(exit));
    assert.equal(info.requested_stop, false);
    assert.equal(info.restarting, false);
    assert.equal(info.signal, 'SIGKILL');
    assert.equal(info.exit_code, 137);
    const logs = (await readLogs(h, app, id, 'tail=50')).map((l) => l.message);
    assert.ok(logs.includes('allocating'), JSON.stringify(logs));
    assert.ok(!logs.includes('survived'), 'the allocation never completed');
  });

  await t.test('(e) secrets and platform variables are in the machine environment', async () => {
    await ok(h, 'POST', `/v1/apps/${app}/secrets`, {
      values: { DB_PASSWORD: 'hunter2-secret', SHARED_NAME: 'from-secret' },
    });
    const id = await createMachine(f, app, {
      image: web,
      env: { SHARED_NAME: 'from-config', PLAIN_VAR: 'plain' },
    });
    await waitState(h, app, id, 'started');
    const parse = (text: string) =>
      Object.fromEntries(
        text
          .split(/[\n\0]/)
          .filter((l) => l.includes('='))
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
    const viaExec = await exec(f, app, id, ['env']);
    assert.equal(viaExec.exit_code, 0);
    // The machine's own processes (pid 1 and the app it runs) have it too, not just exec sessions.
    const pid1 = await exec(f, app, id, ['cat', '/proc/1/environ']);
    const machine = await ok(h, 'GET', `/v1/apps/${app}/machines/${id}`);
    const ref = machine.image_ref;
    for (const [source, env] of [
      ['exec env', parse(viaExec.stdout)],
      ['/proc/1/environ', parse(pid1.stdout)],
    ] as const) {
      assert.equal(env.DB_PASSWORD, 'hunter2-secret', `${source}: the secret`);
      assert.equal(env.SHARED_NAME, 'from-secret', `${source}: a secret wins over config.env`);
      assert.equal(env.PLAIN_VAR, 'plain', source);
      assert.equal(env.FLY_APP_NAME, app, source);
      assert.equal(env.FLY_MACHINE_ID, id, source);
      assert.equal(env.FLY_REGION, 'local', source);
      assert.equal(env.FLY_MACHINE_VERSION, machine.instance_id, source);
      assert.equal(env.FLY_IMAGE_REF, `${ref.registry}/${ref.repository}:${ref.tag}@${ref.digest}`, source);
    }
  });

  await t.test('(f) a file written to a volume survives destroy and recreate of the machine', async () => {
    const volume = await ok(h, 'POST', `/v1/apps/${app}/volumes`, { name: 'rt_data', size_gb: 1 });
    const config = { image: web, mounts: [{ volume: volume.id, path: '/data' }] };
    const first = await createMachine(f, app, config);
    await waitState(h, app, first, 'started');
    const wrote = await exec(
      f,
      app,
      first,
      script('echo "kept $FLY_MACHINE_ID" > /data/kept.txt && sync && cat /data/kept.txt'),
    );
    assert.equal(wrote.exit_code, 0, wrote.stderr);
    // And one in the rootfs, which must not survive (each machine boots from the image).
    await exec(f, app, first, ['touch', '/not-kept']);
    await ok(h, 'DELETE', `/v1/apps/${app}/machines/${first}?force=true`);
    const attached = await ok(h, 'GET', `/v1/apps/${app}/volumes/${volume.id}`);
    assert.equal(attached.attached_machine_id, null);

    const second = await createMachine(f, app, config);
    await waitState(h, app, second, 'started');
    const read = await exec(f, app, second, ['cat', '/data/kept.txt']);
    assert.equal(read.exit_code, 0, read.stderr);
    assert.equal(read.stdout, `kept ${first}\n`);
    const rootfs = await exec(f, app, second, ['ls', '/not-kept']);
    assert.notEqual(rootfs.exit_code, 0, 'the rootfs of the destroyed machine is gone');
    await ok(h, 'DELETE', `/v1/apps/${app}/machines/${second}?force=true`);
  });

  await t.test('(g) exec: stdout, stderr, exit code, stdin; logs: tail and follow', async () => {
    const chatty = await buildTestImage({
      registry: f.registry,
      token: f.h.token,
      repository: 'rt-app/rt-chatty',
      config: { cmd: script('i=0; while true; do echo "line-$i"; i=$((i+1)); sleep 0.2; done') },
    });
    const id = await createMachine(f, app, { image: chatty });
    await waitState(h, app, id, 'started');

    const result = await exec(f, app, id, script('echo to-out; echo to-err >&2; exit 3'));
    assert.deepEqual(result, { exit_code: 3, exit_signal: null, stdout: 'to-out\n', stderr: 'to-err\n' });
    const piped = await exec(f, app, id, ['sh', '-c', 'cat; echo " and more"'], 'from stdin');
    assert.equal(piped.exit_code, 0);
    assert.equal(piped.stdout, 'from stdin and more\n');
    const cmd = await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/exec`, { cmd: 'id -u' });
    assert.equal(cmd.stdout, '0\n');

    // A command past its timeout answers 408, and is ended inside the machine, not left running.
    const slow = await h.call('POST', `/v1/apps/${app}/machines/${id}/exec`, {
      command: ['sleep', '37'],
      timeout: 1,
    });
    assert.equal(slow.status, 408, JSON.stringify(slow.body));
    await pollUntil(
      'the timed-out command to be gone from the machine',
      async () => {
        const processes = (await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/ps`)) as Json[];
        return processes.some((p) => String(p.command).includes('sleep 37')) ? undefined : true;
      },
      5_000,
    );

    await pollUntil('five log lines', async () => {
      const lines = await readLogs(h, app, id, 'tail=100');
      return lines.length >= 5 ? true : undefined;
    });
    const tail = await readLogs(h, app, id, 'tail=3');
    assert.equal(tail.length, 3);
    for (const line of tail) {
      assert.equal(line.instance, id);
      assert.match(line.message, /^line-\d+$/);
    }
    const lastTail = Number(tail[2].message.slice(5));
    assert.equal(Number(tail[0].message.slice(5)), lastTail - 2, 'the last lines, in order');

    const t0 = performance.now();
    const followed = await readLogs(h, app, id, 'tail=1&follow=true', (lines) => lines.length >= 4);
    const followMs = Math.round(performance.now() - t0);
    const numbers = followed.map((l) => Number(String(l.message).slice(5)));
    assert.ok(
      numbers.every((n, i) => i === 0 || n === numbers[i - 1]! + 1),
      JSON.stringify(numbers),
    );
    assert.ok(numbers[3]! > lastTail, 'new lines arrived while the request was open');
    t.diagnostic(`follow: 3 new lines in ${followMs} ms`);
    await ok(h, 'DELETE', `/v1/apps/${app}/machines/${id}?force=true`);
  });

  await t.test(
    '(h) restart policies: on-failure restarts, no stays stopped, auto_destroy destroys',
    async () => {
      const failing = await buildTestImage({
        registry: f.registry,
        token: f.h.token,
        repository: 'rt-app/rt-failing',
        config: { cmd: script('echo booted; sleep 1; exit 1') },
      });
      const ending = await buildTestImage({
        registry: f.registry,
        token: f.h.token,
        repository: 'rt-app/rt-ending',
        config: { cmd: script('sleep 1; exit 0') },
      });
      const onFailure = await createMachine(f, app, {
        image: failing,
        restart: { policy: 'on-failure', max_retries: 1 },
      });
      const never = await createMachine(f, app, { image: failing, restart: { policy: 'no' } });
      const once = await createMachine(f, app, {
        image: ending,
        auto_destroy: true,
        restart: { policy: 'no' },
      });

      // on-failure: a second start after the first exit, then (max_retries 1 used) it stays stopped.
      const list = await pollUntil('on-failure to restart once and then give up', async () => {
        const all = await events(h, app, onFailure);
        const machine = await ok(h, 'GET', `/v1/apps/${app}/machines/${onFailure}`);
        return exitEvents(all).length >= 2 && machine.state === 'stopped' ? all : undefined;
      });
      const starts = list.filter((e) => e.type === 'start' && e.status === 'started');
      assert.equal(starts.length, 2, `two boots: ${JSON.stringify(list)}`);
      const [second, first] = exitEvents(list);
      assert.equal(first.request.exit_event.exit_code, 1);
      assert.equal(first.request.exit_event.restarting, true);
      assert.equal(second.request.exit_event.exit_code, 1);
      assert.equal(second.request.exit_event.restarting, false, 'max_retries reached');
      const logs = (await readLogs(h, app, onFailure, 'tail=20')).filter((l) => l.message === 'booted');
      assert.equal(logs.length, 2, 'the program ran twice');

      // no: stopped after the exit, and stays so.
      await waitState(h, app, never, 'stopped');
      await sleep(1_500);
      const neverEvents = await events(h, app, never);
      assert.equal((await ok(h, 'GET', `/v1/apps/${app}/machines/${never}`)).state, 'stopped');
      assert.equal(neverEvents.filter((e) => e.type === 'start' && e.status === 'started').length, 1);
      const [neverExit] = exitEvents(neverEvents);
      assert.equal(neverExit.request.exit_event.exit_code, 1);
      assert.equal(neverExit.request.exit_event.restarting, false);

      // auto_destroy: the exit destroys it.
      await waitState(h, app, once, 'destroyed');
      const destroyed = await ok(h, 'GET', `/v1/apps/${app}/machines/${once}`);
      assert.equal(destroyed.state, 'destroyed');
      assert.ok(!existsSync(join(h.dataDir, 'machines', once)), 'its runtime directory is gone');
      const netns = (await runCommand('ip', ['netns', 'list'])).stdout;
      assert.ok(!netns.includes(`hangar-${once}`), 'its network namespace is gone');
    },
  );

  await t.test(
    '(j) a stop makes the next boot ready: a fresh root filesystem, rebuilt when it went away, removed by destroy',
    async () => {
      const id = await createMachine(f, app, { image: web, guest: { memory_mb: 128 } });
      await waitState(h, app, id, 'started');
      const dir = join(h.dataDir, 'machines', id);
      const rootfsMounted = async () =>
        (await readFile('/proc/self/mountinfo', 'utf8'))
          .split('\n')
          .some((line) => line.split(' ')[4] === join(dir, 'rootfs'));
      // Positive control: a file the boot writes outside any volume is there while it runs.
      const written = await exec(f, app, id, script('echo left > /left-behind && cat /left-behind'));
      assert.equal(written.stdout, 'left\n', JSON.stringify(written));

      await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/stop`);
      await waitState(h, app, id, 'stopped');
      assert.ok(existsSync(join(dir, 'next-boot.json')), 'the stop left the next boot ready');
      assert.ok(await rootfsMounted(), 'with its root filesystem mounted');
      assert.equal(
        existsSync(join(dir, 'upper', 'left-behind')),
        false,
        'over a fresh upper layer: nothing of the last boot',
      );

      await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/start`);
      await waitState(h, app, id, 'started');
      assert.equal(existsSync(join(dir, 'next-boot.json')), false, 'the boot took it');
      const gone = await exec(f, app, id, script('test -e /left-behind; echo $?'));
      assert.equal(gone.stdout, '1\n', 'a boot after a stop starts from the image');

      // The prepared mount disappears while stopped (as after a host reboot): the boot makes it again.
      await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/stop`);
      await waitState(h, app, id, 'stopped');
      assert.ok(await rootfsMounted());
      await runCommand('umount', [join(dir, 'rootfs')]);
      await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/start`);
      await waitState(h, app, id, 'started');
      let answer = await wgetInMachine(id, 5);
      for (let i = 0; i < 50 && /Connection refused/.test(answer.stderr); i++) {
        await sleep(100);
        answer = await wgetInMachine(id, 5);
      }
      assert.equal(answer.stdout, 'hello from the machine\n', answer.stderr);

      // Destroy of a stopped machine removes what its stop made ready.
      await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/stop`);
      await waitState(h, app, id, 'stopped');
      await ok(h, 'DELETE', `/v1/apps/${app}/machines/${id}?force=true`);
      assert.equal(await rootfsMounted(), false, 'its root filesystem is unmounted');
      assert.equal(existsSync(dir), false, 'its directory is gone');
      assert.equal(existsSync(join('/sys/fs/cgroup/memory/hangar', id)), false, 'its cgroup is gone');
    },
  );

  t.diagnostic(`whole file: ${Math.round(performance.now() - started)} ms`);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeRuntime, userEnv } from '../helpers/fake-runtime.js';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';

// The orchestrator's state machine driven through the API; the runtime is a test FAKE (see helper).

async function started(h: TestHangard, app: string, body: Record<string, unknown>) {
  const created = await h.call('POST', `/v1/apps/${app}/machines`, body);
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const wait = await h.call(
    'GET',
    `/v1/apps/${app}/machines/${created.body.id}/wait?state=started&timeout=10`,
  );
  assert.equal(wait.status, 200, JSON.stringify(wait.body));
  return created.body as { id: string; instance_id: string };
}

const states = async (h: TestHangard, app: string, id: string) =>
  (await h.call('GET', `/v1/apps/${app}/machines/${id}/events?limit=50`)).body
    .map((e: { type: string; status: string }) => `${e.type}:${e.status}`)
    .reverse();

test('lifecycle: create boots; stop, start, suspend, resume, restart, signal', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'life');
  const m = await started(h, 'life', {
    config: {
      image: 'img:1',
      env: { A: 'env', SHARED: 'from-env' },
      stop_config: { signal: 'SIGTERM', timeout: '7s' },
    },
  });
  const base = `/v1/apps/life/machines/${m.id}`;
  const got = await h.call('GET', base);
  assert.equal(got.body.state, 'started');
  assert.equal(got.body.image_ref.digest, 'sha256:fake', 'image_ref comes from the pulled image');

  assert.equal((await h.call('POST', `${base}/stop`)).status, 200);
  assert.ok(runtime.calls.includes(`stop ${m.id} SIGTERM 7000`), 'stop_config decides signal and timeout');
  assert.equal((await h.call('GET', base)).body.state, 'stopped');
  assert.equal((await h.call('POST', `${base}/stop`)).status, 200, 'stopping a stopped machine is a no-op');

  const start = await h.call('POST', `${base}/start`);
  assert.deepEqual(start.body, { previous_state: 'stopped', migrated: false, new_host: '' });
  assert.equal((await h.call('POST', `${base}/start`)).body.previous_state, 'started', 'idempotent');

  assert.equal((await h.call('POST', `${base}/stop`, { signal: 'SIGUSR1', timeout: '2s' })).status, 200);
  assert.ok(runtime.calls.includes(`stop ${m.id} SIGUSR1 2000`), 'the request overrides stop_config');
  await h.call('POST', `${base}/start`);

  assert.equal((await h.call('POST', `${base}/suspend`)).status, 200);
  assert.equal((await h.call('GET', `${base}/wait?state=suspended&timeout=5`)).status, 200);
  assert.equal(runtime.running.get(m.id)?.paused, true);
  await h.call('POST', `${base}/start`);
  assert.equal(runtime.running.get(m.id)?.paused, false, 'start resumes a suspended machine');
  assert.equal(
    runtime.calls.filter((c) => c === `prepare ${m.id}`).length,
    3,
    'three boots; the resume pulled nothing',
  );

  assert.equal((await h.call('POST', `${base}/restart?signal=SIGHUP&timeout=3s`)).status, 200);
  assert.ok(runtime.calls.includes(`stop ${m.id} SIGHUP 3000`));
  assert.equal((await h.call('GET', base)).body.state, 'started');

  assert.equal((await h.call('POST', `${base}/signal`, { signal: 9 })).status, 200, 'fly-go sends numbers');
  assert.equal((await h.call('POST', `${base}/signal`, { signal: 'usr2' })).status, 200);
  assert.ok(
    runtime.calls.includes(`signal ${m.id} SIGKILL`) && runtime.calls.includes(`signal ${m.id} SIGUSR2`),
  );
  assert.equal((await h.call('POST', `${base}/signal`, { signal: 'SIGNOPE' })).status, 400);

  assert.deepEqual(await states(h, 'life', m.id), [
    'launch:created',
    'start:started',
    'stop:stopping',
    'exit:stopped',
    'stop:stopped',
    'start:started',
    'stop:stopping',
    'exit:stopped',
    'stop:stopped',
    'start:started',
    'suspend:suspending',
    'suspend:suspended',
    'start:started',
    'restart:stopping',
    'exit:stopped',
    'restart:stopped',
    'start:started',
    'signal:SIGKILL',
    'signal:SIGUSR2',
  ]);
});

test('lifecycle: secrets win over env in what the runtime receives; min_secrets_version', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'envs');
  const set = await h.call('POST', '/v1/apps/envs/secrets', {
    values: { SHARED: 'from-secret', TOKEN: 's3cret' },
  });
  const ahead = await h.call('POST', '/v1/apps/envs/machines', {
    config: { image: 'img:1' },
    min_secrets_version: set.body.version + 1,
  });
  assert.equal(ahead.status, 412);
  assert.match(ahead.body.error, /min_secrets_version/);
  const m = await started(h, 'envs', {
    config: { image: 'img:1', env: { SHARED: 'from-env', PLAIN: 'p' } },
    min_secrets_version: set.body.version,
  });
  assert.deepEqual(userEnv(runtime.running.get(m.id)?.spec), {
    SHARED: 'from-secret',
    PLAIN: 'p',
    TOKEN: 's3cret',
  });
});

test('lifecycle: update reboots a running machine into the new version; a stopped one stays stopped', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'upd');
  const m = await started(h, 'upd', { config: { image: 'img:1' } });
  const base = `/v1/apps/upd/machines/${m.id}`;
  const updated = await h.call('POST', base, { config: { image: 'img:2' } });
  assert.equal(updated.status, 200);
  assert.equal(updated.body.state, 'started');
  assert.equal(runtime.running.get(m.id)?.spec.version, updated.body.instance_id);
  assert.equal(
    (await h.call('GET', `${base}/wait?state=started&version=${updated.body.instance_id}&timeout=2`)).status,
    200,
  );
  // The old version was replaced: waiting for it to start can never succeed, waiting for it to stop can.
  assert.equal(
    (await h.call('GET', `${base}/wait?state=started&version=${m.instance_id}&timeout=2`)).status,
    412,
  );
  assert.equal(
    (await h.call('GET', `${base}/wait?state=stopped&instance_id=${m.instance_id}&timeout=2`)).status,
    200,
  );

  await h.call('POST', `${base}/stop`);
  const quiet = await h.call('POST', base, { config: { image: 'img:3' } });
  assert.equal(quiet.body.state, 'stopped', 'no surprise boot of a stopped machine');
  const skip = await h.call('POST', `${base}/start`);
  assert.equal(skip.status, 200);
  const noLaunch = await h.call('POST', base, { config: { image: 'img:4' }, skip_launch: true });
  assert.equal(noLaunch.body.state, 'stopped', 'skip_launch leaves an updated running machine stopped');
});

test('lifecycle: destroy refuses a running machine unless forced; exec and ps reach the runtime', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'gone');
  const m = await started(h, 'gone', { config: { image: 'img:1' } });
  const base = `/v1/apps/gone/machines/${m.id}`;

  const exec = await h.call('POST', `${base}/exec`, { command: ['echo', 'hi'], timeout: 5 });
  assert.deepEqual(exec.body, { exit_code: 0, exit_signal: null, stdout: 'ran echo hi', stderr: '' });
  assert.equal(
    (await h.call('POST', `${base}/exec`, { cmd: 'ls /' })).body.stdout,
    'ran sh -c ls /',
    'deprecated cmd',
  );
  assert.equal((await h.call('POST', `${base}/exec`, {})).status, 400);
  assert.equal((await h.call('GET', `${base}/ps`)).body[0].pid, 1);

  const refused = await h.call('DELETE', base);
  assert.equal(refused.status, 412);
  assert.match(refused.body.error, /force=true/);
  assert.equal((await h.call('DELETE', `${base}?kill=true`)).status, 200, 'fly-go says kill');
  assert.ok(runtime.calls.includes(`destroy ${m.id}`));
  assert.equal((await h.call('POST', `${base}/start`)).status, 412, 'nothing happens to a destroyed machine');
});

test('lifecycle: a failed image pull leaves the machine failed with the reason in its events', async (t) => {
  const runtime = new FakeRuntime();
  runtime.failPrepare = 'manifest unknown: registry.example/missing:1';
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'pull');
  const created = await h.call('POST', '/v1/apps/pull/machines', {
    config: { image: 'registry.example/missing:1' },
  });
  const wait = await h.call('GET', `/v1/apps/pull/machines/${created.body.id}/wait?state=failed&timeout=5`);
  assert.equal(wait.status, 200);
  // Waiting for `started` answers at once with the reason, instead of a 408 after the timeout.
  const never = await h.call(
    'GET',
    `/v1/apps/pull/machines/${created.body.id}/wait?state=started&timeout=30`,
  );
  assert.equal(never.status, 412);
  assert.match(never.body.error, /manifest unknown/);
  const events = (await h.call('GET', `/v1/apps/pull/machines/${created.body.id}/events`)).body;
  assert.equal(events[0].status, 'failed');
  assert.match(events[0].request.error, /manifest unknown/);
  runtime.failPrepare = undefined;
  assert.equal(
    (await h.call('POST', `/v1/apps/pull/machines/${created.body.id}/start`)).status,
    200,
    'a failed machine can start',
  );
});

test('lifecycle: concurrent actions on one machine are serialized', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'race');
  const m = await started(h, 'race', { config: { image: 'img:1' } });
  const base = `/v1/apps/race/machines/${m.id}`;
  const results = await Promise.all([
    h.call('POST', `${base}/stop`),
    h.call('POST', `${base}/start`),
    h.call('POST', `${base}/stop`),
    h.call('POST', `${base}/start`),
  ]);
  assert.deepEqual(
    results.map((r) => r.status),
    [200, 200, 200, 200],
  );
  // Every stop found a started machine and every start a stopped one: no interleaving.
  const transitions = (await states(h, 'race', m.id)).filter((s: string) => /^(stop|start):/.test(s));
  assert.deepEqual(transitions, [
    'start:started',
    'stop:stopping',
    'stop:stopped',
    'start:started',
    'stop:stopping',
    'stop:stopped',
    'start:started',
  ]);
});

test('an update of a suspended machine leaves it stopped (not stopping), and it starts again', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'asleep');
  const m = await started(h, 'asleep', { config: { image: 'img:1' } });
  const base = `/v1/apps/asleep/machines/${m.id}`;
  assert.equal((await h.call('POST', `${base}/suspend`)).status, 200);
  assert.equal((await h.call('GET', `${base}/wait?state=suspended&timeout=5`)).status, 200);
  const updated = await h.call('POST', base, { config: { image: 'img:2' }, skip_launch: true });
  assert.equal(updated.status, 200, JSON.stringify(updated.body));
  assert.equal(updated.body.state, 'stopped');
  assert.equal((await h.call('GET', base)).body.state, 'stopped');
  const start = await h.call('POST', `${base}/start`);
  assert.equal(start.status, 200, JSON.stringify(start.body));
  assert.equal((await h.call('GET', `${base}/wait?state=started&timeout=5`)).status, 200);
});

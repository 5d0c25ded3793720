import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';

// Exits the orchestrator did not ask for, driven through the test FAKE runtime (see the helper).

async function bootMachine(h: TestHangard, app: string, config: Record<string, unknown>) {
  const created = await h.call('POST', `/v1/apps/${app}/machines`, { config: { image: 'img:1', ...config } });
  assert.equal(
    (await h.call('GET', `/v1/apps/${app}/machines/${created.body.id}/wait?state=started&timeout=5`)).status,
    200,
  );
  return created.body.id as string;
}

const lastExit = async (h: TestHangard, app: string, id: string) =>
  (await h.call('GET', `/v1/apps/${app}/machines/${id}/events?limit=50`)).body.find(
    (e: { type: string }) => e.type === 'exit',
  );

test('restart policy on-failure: restarts after a failure, not after a clean exit', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'crashy');
  const id = await bootMachine(h, 'crashy', {});
  runtime.crash(id, { exitCode: 3 });
  const back = await h.call('GET', `/v1/apps/crashy/machines/${id}/wait?state=started&timeout=5`);
  assert.equal(back.status, 200);
  const exit = await lastExit(h, 'crashy', id);
  assert.equal(exit.request.exit_event.exit_code, 3);
  assert.equal(exit.request.exit_event.restarting, true);
  assert.equal(exit.request.restart_count, 0);
  assert.equal(runtime.calls.filter((c) => c === `start ${id}`).length, 2);

  runtime.crash(id, { exitCode: 0 });
  assert.equal(
    (await h.call('GET', `/v1/apps/crashy/machines/${id}/wait?state=stopped&timeout=5`)).status,
    200,
  );
  assert.equal((await lastExit(h, 'crashy', id)).request.exit_event.restarting, false);
});

test('restart policy: no stays down, always comes back, max_retries bounds it; OOM is recorded', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'policies');
  const never = await bootMachine(h, 'policies', { restart: { policy: 'no' } });
  runtime.crash(never, { exitCode: 137, signal: 'SIGKILL', oomKilled: true });
  assert.equal(
    (await h.call('GET', `/v1/apps/policies/machines/${never}/wait?state=stopped&timeout=5`)).status,
    200,
  );
  const oom = (await lastExit(h, 'policies', never)).request.exit_event;
  assert.deepEqual([oom.oom_killed, oom.signal, oom.restarting], [true, 'SIGKILL', false]);

  const always = await bootMachine(h, 'policies', { restart: { policy: 'always', max_retries: 2 } });
  for (let i = 0; i < 2; i++) {
    runtime.crash(always, { exitCode: 0 });
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(
      (await h.call('GET', `/v1/apps/policies/machines/${always}/wait?state=started&timeout=5`)).status,
      200,
    );
  }
  runtime.crash(always, { exitCode: 0 });
  assert.equal(
    (await h.call('GET', `/v1/apps/policies/machines/${always}/wait?state=stopped&timeout=5`)).status,
    200,
  );
  assert.equal(
    (await lastExit(h, 'policies', always)).request.restart_count,
    2,
    'the third exit found the budget spent',
  );
});

test('auto_destroy: a machine that exits for good is destroyed', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'oneshot');
  const id = await bootMachine(h, 'oneshot', { auto_destroy: true, restart: { policy: 'no' } });
  runtime.crash(id, { exitCode: 0 });
  assert.equal(
    (await h.call('GET', `/v1/apps/oneshot/machines/${id}/wait?state=destroyed&timeout=5`)).status,
    200,
  );
  assert.ok(runtime.calls.includes(`destroy ${id}`));
});

test('reconcile: what the runtime reports after a restart becomes the machine state', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'recover');
  const vanished = await bootMachine(h, 'recover', { restart: { policy: 'no' } });
  const exited = await bootMachine(h, 'recover', { restart: { policy: 'no' } });
  const alive = await bootMachine(h, 'recover', {});
  runtime.recovered = [
    { machineId: vanished, status: 'missing' },
    {
      machineId: exited,
      status: 'exited',
      exit: { exitCode: 2, signal: null, oomKilled: false, requestedStop: false, exitedAt: Date.now() },
    },
    { machineId: alive, status: 'running' },
  ];
  await h.platform.machines.reconcile();
  const state = async (id: string) => (await h.call('GET', `/v1/apps/recover/machines/${id}`)).body.state;
  assert.deepEqual(
    [await state(vanished), await state(exited), await state(alive)],
    ['stopped', 'stopped', 'started'],
  );
  assert.match((await lastExit(h, 'recover', vanished)).request.error, /vanished/);
  assert.equal((await lastExit(h, 'recover', exited)).request.exit_event.exit_code, 2);
});

test('logs: newline-delimited JSON from the runtime', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'logged');
  const id = await bootMachine(h, 'logged', {});
  const response = await fetch(`${h.url}/v1/apps/logged/machines/${id}/logs?tail=10`, {
    headers: { authorization: `Bearer ${h.token}` },
  });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
  assert.deepEqual(
    (await response.text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line)),
    [{ instance: id, message: `fake log line of ${id}` }],
  );
  assert.equal((await h.call('GET', `/v1/apps/logged/machines/${id}/logs?tail=-1`)).status, 400);
});

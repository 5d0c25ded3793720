import assert from 'node:assert/strict';
import { cpus, totalmem } from 'node:os';
import { test } from 'node:test';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';

// Quotas and capacity admission through the API, over the test FAKE runtime (see the helper).

const MIB = 1024 * 1024;

async function refused(
  h: TestHangard,
  method: string,
  path: string,
  body: unknown,
  code: string,
  key: string,
) {
  const answer = await h.call(method, path, body);
  assert.equal(answer.status, 422, JSON.stringify(answer.body));
  assert.equal(answer.body.status, code);
  assert.match(answer.body.error, new RegExp(key.replace('.', '\\.')), answer.body.error);
  return answer.body.error as string;
}

async function createStarted(h: TestHangard, app: string, config: Record<string, unknown>) {
  const created = await h.call('POST', `/v1/apps/${app}/machines`, { config });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const wait = await h.call(
    'GET',
    `/v1/apps/${app}/machines/${created.body.id}/wait?state=started&timeout=10`,
  );
  assert.equal(wait.status, 200);
  return created.body.id as string;
}

test('quotas: machines per app, volumes, volume bytes and snapshots per volume', async (t) => {
  const h = await startTestHangard(t, {
    runtime: new FakeRuntime(),
    config: {
      quotas: {
        machinesPerApp: 2,
        volumesPerApp: 2,
        volumeBytesPerApp: 3 * 1024 * 1024 * 1024,
        snapshotsPerVolume: 1,
      },
    },
  });
  await createApp(h, 'q');
  for (let i = 0; i < 2; i++) await createStarted(h, 'q', { image: 'img:1' });
  const message = await refused(
    h,
    'POST',
    '/v1/apps/q/machines',
    { config: { image: 'img:1' } },
    'quota_exceeded',
    'quotas.machinesPerApp',
  );
  assert.match(message, /at most 2 machines/);
  assert.equal((await h.call('GET', '/v1/apps/q/machines')).body.length, 2, 'nothing was created');
  // Another app has its own count.
  await createApp(h, 'q2');
  await createStarted(h, 'q2', { image: 'img:1' });

  const one = await h.call('POST', '/v1/apps/q/volumes', { name: 'a', size_gb: 1 });
  assert.equal(one.status, 200, JSON.stringify(one.body));
  assert.equal((await h.call('POST', '/v1/apps/q/volumes', { name: 'b', size_gb: 1 })).status, 200);
  await refused(
    h,
    'POST',
    '/v1/apps/q/volumes',
    { name: 'c', size_gb: 1 },
    'quota_exceeded',
    'quotas.volumesPerApp',
  );
  const extend = `/v1/apps/q/volumes/${one.body.id}/extend`;
  assert.equal((await h.call('PUT', extend, { size_gb: 2 })).status, 200);
  await refused(h, 'PUT', extend, { size_gb: 3 }, 'quota_exceeded', 'quotas.volumeBytesPerApp');

  const snapshots = `/v1/apps/q/volumes/${one.body.id}/snapshots`;
  assert.equal((await h.call('POST', snapshots, {})).status, 200);
  await refused(h, 'POST', snapshots, {}, 'quota_exceeded', 'quotas.snapshotsPerVolume');
});

test('capacity admission: memory and cpus of running machines against the host times the ratio', async (t) => {
  const h = await startTestHangard(t, {
    runtime: new FakeRuntime(),
    // Room for 700 MB of guest memory and 3 cpus on whatever host runs the test.
    config: { capacity: { memoryOvercommit: (700 * MIB) / totalmem(), cpuOvercommit: 3 / cpus().length } },
  });
  await createApp(h, 'cap');
  const a = await createStarted(h, 'cap', { image: 'img:1', guest: { cpus: 1, memory_mb: 512 } });
  const tooMuch = { config: { image: 'img:1', guest: { cpus: 1, memory_mb: 256 } } };
  const message = await refused(
    h,
    'POST',
    '/v1/apps/cap/machines',
    tooMuch,
    'insufficient_capacity',
    'capacity.memoryOvercommit',
  );
  assert.match(message, /hold 512 MB of 700 MB/);
  // Created without launching it holds nothing; starting it is admitted only once there is room.
  const idle = await h.call('POST', '/v1/apps/cap/machines', { ...tooMuch, skip_launch: true });
  assert.equal(idle.status, 200, JSON.stringify(idle.body));
  const startIdle = `/v1/apps/cap/machines/${idle.body.id}/start`;
  await refused(h, 'POST', startIdle, undefined, 'insufficient_capacity', 'capacity.memoryOvercommit');
  assert.equal((await h.call('POST', `/v1/apps/cap/machines/${a}/stop`)).status, 200);
  await h.call('GET', `/v1/apps/cap/machines/${a}/wait?state=stopped&timeout=10`);
  assert.equal((await h.call('POST', startIdle)).status, 200);
  // An update of a started machine is admitted as its new size, beside the others.
  await refused(
    h,
    'POST',
    `/v1/apps/cap/machines/${idle.body.id}`,
    { config: { image: 'img:1', guest: { cpus: 1, memory_mb: 1024 } } },
    'insufficient_capacity',
    'capacity.memoryOvercommit',
  );
  // cpus: 1 running, 3 allowed.
  await refused(
    h,
    'POST',
    '/v1/apps/cap/machines',
    { config: { image: 'img:1', guest: { cpus: 4, memory_mb: 256 } } },
    'insufficient_capacity',
    'capacity.cpuOvercommit',
  );
});

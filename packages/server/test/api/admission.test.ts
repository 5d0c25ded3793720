import assert from 'node:assert/strict';
import { cpus, totalmem } from 'node:os';
import { test } from 'node:test';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { type ApiResponse, createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { type Json, pollUntil } from '../helpers/integration.js';

// Concurrent requests against quotas and the host's capacity: the check and the commitment are one
// step, so with room for exactly K of N requests fired at once, exactly K pass and the others get the
// refusal naming the setting. Over the test FAKE runtime (see the helper), whose boots are immediate.

const MIB = 1024 * 1024;
const GB = 1024 * MIB;
const N = 6;
const K = 3;
const V = 2;

/** Exactly `k` answers are 200 and the others the 422 `code` whose message names `key`. */
function exactly(answers: ApiResponse[], k: number, code: string, key: string): ApiResponse[] {
  const passed = answers.filter((a) => a.status === 200);
  const refused = answers.filter((a) => a.status !== 200);
  assert.equal(passed.length, k, JSON.stringify(answers.map((a) => [a.status, a.body?.error])));
  for (const answer of refused) {
    assert.equal(answer.status, 422, JSON.stringify(answer.body));
    assert.equal(answer.body.status, code);
    assert.ok(answer.body.error.includes(key), answer.body.error);
  }
  return passed;
}

const all = (n: number, call: (i: number) => Promise<ApiResponse>) =>
  Promise.all(Array.from({ length: n }, (_, i) => call(i)));

async function startedCount(h: TestHangard, app: string): Promise<number> {
  const machines = (await h.call('GET', `/v1/apps/${app}/machines`)).body as { state: string }[];
  return machines.filter((m) => ['starting', 'started'].includes(m.state)).length;
}

test('concurrent creates, starts and updates take the host capacity exactly once', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, {
    runtime,
    // Room for exactly K machines of 256 MB (and plenty of cpus) on whatever host runs the test.
    config: {
      capacity: { memoryOvercommit: ((K * 256 + 200) * MIB) / totalmem(), cpuOvercommit: 64 / cpus().length },
    },
  });
  await createApp(h, 'race');
  const guest = { cpus: 1, memory_mb: 256 };
  const created = exactly(
    await all(N, () => h.call('POST', '/v1/apps/race/machines', { config: { image: 'img:1', guest } })),
    K,
    'insufficient_capacity',
    'capacity.memoryOvercommit',
  );
  for (const answer of created) {
    const wait = await h.call(
      'GET',
      `/v1/apps/race/machines/${answer.body.id}/wait?state=started&timeout=10`,
    );
    assert.equal(wait.status, 200);
  }
  assert.equal(await startedCount(h, 'race'), K, 'the refused creates left no machine behind');
  assert.equal((await h.call('GET', '/v1/apps/race/machines')).body.length, K);

  // Stop them all; N machines created without launching hold nothing; then all N start at once.
  for (const answer of created) {
    assert.equal((await h.call('POST', `/v1/apps/race/machines/${answer.body.id}/stop`)).status, 200);
  }
  const idle = await all(N - K, () =>
    h.call('POST', '/v1/apps/race/machines', { config: { image: 'img:1', guest }, skip_launch: true }),
  );
  for (const answer of idle) assert.equal(answer.status, 200, JSON.stringify(answer.body));
  const ids = [...created, ...idle].map((a) => a.body.id as string);
  const started = exactly(
    await all(ids.length, (i) => h.call('POST', `/v1/apps/race/machines/${ids[i]}/start`)),
    K,
    'insufficient_capacity',
    'capacity.memoryOvercommit',
  );
  assert.equal(started.length, K);
  assert.equal(await startedCount(h, 'race'), K);

  // An update that grows a started machine claims its new size before it stops the old version: a create
  // fired while it is stopping cannot take the room that the update's boot needs.
  const startedIds: string[] = [];
  for (const id of ids) {
    if ((await h.call('GET', `/v1/apps/race/machines/${id}`)).body.state === 'started') startedIds.push(id);
  }
  assert.equal(startedIds.length, K);
  assert.equal((await h.call('POST', `/v1/apps/race/machines/${startedIds[0]}/stop`)).status, 200);
  // K-1 machines of 256 MB run: 456 MB are free. Growing one to 512 MB takes 256 of them.
  let letStopsGo = () => {};
  runtime.holdStops = new Promise<void>((resolve) => {
    letStopsGo = resolve;
  });
  // Released in `finally`: hangard's close (an after-hook) waits for the held stop.
  let update: Promise<ApiResponse> | undefined;
  const grown = startedIds[1]!;
  try {
    update = h.call('POST', `/v1/apps/race/machines/${grown}`, {
      config: { image: 'img:1', guest: { cpus: 1, memory_mb: 512 } },
    });
    await pollUntil('the update to stop the old version', async () =>
      (await h.call('GET', `/v1/apps/race/machines/${grown}`)).body.state === 'stopping' ? true : undefined,
    );
    const meanwhile = await h.call('POST', '/v1/apps/race/machines', {
      config: { image: 'img:1', guest: { cpus: 1, memory_mb: 300 } },
    });
    assert.equal(meanwhile.status, 422, JSON.stringify(meanwhile.body));
    assert.match(meanwhile.body.error, /capacity\.memoryOvercommit/);
    // Positive control: what the update leaves free still fits.
    const small = await h.call('POST', '/v1/apps/race/machines', {
      config: { image: 'img:1', guest: { cpus: 1, memory_mb: 150 } },
    });
    assert.equal(small.status, 200, JSON.stringify(small.body));
  } finally {
    letStopsGo();
    runtime.holdStops = undefined;
  }
  const updated = await update!;
  assert.equal(updated.status, 200, JSON.stringify(updated.body));
  const wait = await h.call('GET', `/v1/apps/race/machines/${grown}/wait?state=started&timeout=10`);
  assert.equal(wait.status, 200);
  const machines = (await h.call('GET', '/v1/apps/race/machines')).body as Json[];
  const held = machines
    .filter((m) => ['starting', 'started'].includes(m.state))
    .reduce((sum, m) => sum + m.config.guest.memory_mb, 0);
  assert.equal(held, (K - 2) * 256 + 512 + 150, 'never more than the host admits');
});

test('concurrent creates take the last machine and volume slots exactly once', async (t) => {
  const h = await startTestHangard(t, {
    runtime: new FakeRuntime(),
    config: {
      quotas: { machinesPerApp: K, volumesPerApp: V, volumeBytesPerApp: 2 * V * GB, snapshotsPerVolume: V },
    },
  });
  await createApp(h, 'slots');
  exactly(
    await all(N, () => h.call('POST', '/v1/apps/slots/machines', { config: { image: 'img:1' } })),
    K,
    'quota_exceeded',
    'quotas.machinesPerApp',
  );
  assert.equal((await h.call('GET', '/v1/apps/slots/machines')).body.length, K);

  // Volumes are real ext4 images where the host can loop-mount (as root): fewer of them, V of V + 2.
  const volumes = exactly(
    await all(V + 2, (i) => h.call('POST', '/v1/apps/slots/volumes', { name: `v${i}`, size_gb: 1 })),
    V,
    'quota_exceeded',
    'quotas.volumesPerApp',
  );
  assert.equal((await h.call('GET', '/v1/apps/slots/volumes')).body.length, V);
  // V GB are left of 2V: concurrent extends of every volume by V GB each, only one fits.
  exactly(
    await all(V, (i) =>
      h.call('PUT', `/v1/apps/slots/volumes/${volumes[i]!.body.id}/extend`, { size_gb: 1 + V }),
    ),
    1,
    'quota_exceeded',
    'quotas.volumeBytesPerApp',
  );
  const snapshots = `/v1/apps/slots/volumes/${volumes[0]!.body.id}/snapshots`;
  exactly(
    await all(V + 1, () => h.call('POST', snapshots, {})),
    V,
    'quota_exceeded',
    'quotas.snapshotsPerVolume',
  );
  assert.equal((await h.call('GET', snapshots)).body.length, V);
});

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { createApp, startTestHangard } from '../helpers/hangard.js';

// The start-up repair of an interrupted destroy, through the test FAKE runtime (see the helper); the
// real runtime and a real SIGKILL are in test/integration/crash-points.test.ts.

test('reconcile: a machine left destroying is destroyed to the end, its volume and lease let go', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'halfway');
  const volume = (await h.call('POST', '/v1/apps/halfway/volumes', { name: 'data', size_gb: 1 })).body;
  const created = await h.call('POST', '/v1/apps/halfway/machines', {
    config: { image: 'img:1', mounts: [{ volume: volume.id, path: '/data' }] },
  });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const id = created.body.id as string;
  const waited = await h.call('GET', `/v1/apps/halfway/machines/${id}/wait?state=started&timeout=5`);
  assert.equal(waited.status, 200);
  assert.equal((await h.call('POST', `/v1/apps/halfway/machines/${id}/lease`, { ttl: 600 })).status, 201);

  // What a crash right after `destroying` was recorded leaves: the record says so, nothing else changed.
  const store = new SqliteStore({ path: join(h.dataDir, 'hangar.db') });
  try {
    await store.write((tx) => tx.machines.update({ ...tx.machines.get(id)!, state: 'destroying' }));
  } finally {
    store.close();
  }
  await h.platform.machines.reconcile();

  const machine = (await h.call('GET', `/v1/apps/halfway/machines/${id}`)).body;
  assert.equal(machine.state, 'destroyed');
  assert.ok(runtime.calls.includes(`destroy ${id}`), 'the runtime removed what was left of it');
  assert.equal((await h.call('GET', `/v1/apps/halfway/volumes/${volume.id}`)).body.attached_machine_id, null);
  assert.equal((await h.call('GET', `/v1/apps/halfway/machines/${id}/lease`)).status, 404);
  const events = (await h.call('GET', `/v1/apps/halfway/machines/${id}/events?limit=50`)).body;
  const destroyed = events.find((e: { type: string; status: string }) => e.status === 'destroyed');
  assert.equal(destroyed?.request?.recovered, true, JSON.stringify(events));
  assert.equal((await h.call('DELETE', '/v1/apps/halfway')).status, 202, 'the app deletes without force');
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { createApp, startTestHangard } from '../helpers/hangard.js';
import { pollUntil } from '../helpers/integration.js';

// Pruning on its schedule, through the API, over the test FAKE runtime (see the helper).

test('pruning keeps the newest events and versions and drops destroyed machines past retention', async (t) => {
  const h = await startTestHangard(t, {
    runtime: new FakeRuntime(),
    config: {
      pruning: { intervalSeconds: 1, eventsPerMachine: 3, versionsPerMachine: 2, destroyedRetentionHours: 0 },
    },
  });
  await createApp(h, 'pr');
  const created = await h.call('POST', '/v1/apps/pr/machines', { config: { image: 'img:1' } });
  assert.equal(created.status, 200);
  const base = `/v1/apps/pr/machines/${created.body.id}`;
  await h.call('GET', `${base}/wait?state=started&timeout=10`);
  for (let i = 2; i <= 4; i++) {
    const updated = await h.call('POST', base, { config: { image: 'img:1', env: { V: String(i) } } });
    assert.equal(updated.status, 200, JSON.stringify(updated.body));
  }
  const current = (await h.call('GET', base)).body.instance_id as string;
  const gone = await h.call('POST', '/v1/apps/pr/machines', { config: { image: 'img:1' } });
  await h.call('GET', `/v1/apps/pr/machines/${gone.body.id}/wait?state=started&timeout=10`);
  assert.equal((await h.call('DELETE', `/v1/apps/pr/machines/${gone.body.id}?force=true`)).status, 200);

  await pollUntil(
    'a pruning pass',
    async () =>
      (await h.call('GET', `/v1/apps/pr/machines/${gone.body.id}`)).status === 404 ? true : undefined,
    10_000,
    200,
  );
  const events = (await h.call('GET', `${base}/events?limit=100`)).body as { type: string }[];
  assert.equal(events.length, 3, JSON.stringify(events));
  const versions = (await h.call('GET', `${base}/versions`)).body as { version: string }[];
  assert.equal(versions.length, 2, JSON.stringify(versions));
  assert.ok(
    versions.some((v) => v.version === current),
    'the current version is kept',
  );
  // The live machine itself is untouched.
  assert.equal((await h.call('GET', base)).body.state, 'started');
});

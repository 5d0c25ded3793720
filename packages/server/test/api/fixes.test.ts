import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeRuntime, userEnv } from '../helpers/fake-runtime.js';
import { createApp, startTestHangard } from '../helpers/hangard.js';

test('wait: a version the machine never had is a 404, not a false success', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'versions');
  const m = (
    await h.call('POST', '/v1/apps/versions/machines', { config: { image: 'x' }, skip_launch: true })
  ).body;
  const response = await h.call(
    'GET',
    `/v1/apps/versions/machines/${m.id}/wait?state=stopped&version=01NOTAVERSION000000000000&timeout=1`,
  );
  assert.equal(response.status, 404);
  assert.match(response.body.error, /has no version/);
});

test('skip_secrets boots without the app secrets', async (t) => {
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'nosecrets');
  await h.call('POST', '/v1/apps/nosecrets/secrets', { values: { TOKEN: 'x' } });
  const m = await h.call('POST', '/v1/apps/nosecrets/machines', {
    config: { image: 'x', env: { A: '1' } },
    skip_secrets: true,
  });
  await h.call('GET', `/v1/apps/nosecrets/machines/${m.body.id}/wait?state=started&timeout=5`);
  assert.deepEqual(userEnv(runtime.running.get(m.body.id)?.spec), { A: '1' });
});

test('a destroyed machine takes no lease and no metadata', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'dead');
  const m = (await h.call('POST', '/v1/apps/dead/machines', { config: { image: 'x' }, skip_launch: true }))
    .body;
  await h.call('DELETE', `/v1/apps/dead/machines/${m.id}`);
  assert.equal((await h.call('POST', `/v1/apps/dead/machines/${m.id}/lease`, { ttl: 10 })).status, 412);
  assert.equal(
    (await h.call('POST', `/v1/apps/dead/machines/${m.id}/metadata/k`, { value: 'v' })).status,
    412,
  );
});

test('shutdown answers open waits at once with 503 instead of holding them', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'closing');
  const m = (await h.call('POST', '/v1/apps/closing/machines', { config: { image: 'x' }, skip_launch: true }))
    .body;
  const pending = h.call('GET', `/v1/apps/closing/machines/${m.id}/wait?state=stopped&timeout=60`);
  await new Promise((resolve) => setTimeout(resolve, 100));
  await h.close();
  const response = await pending;
  assert.equal(response.status, 503);
  assert.equal(response.body.status, 'unavailable');
});

test('the last org token cannot be revoked; a bad token is 401 whatever the body', async (t) => {
  const h = await startTestHangard(t);
  const tokens = (await h.call('GET', '/v1/tokens?org_slug=personal')).body.tokens;
  const response = await h.call('DELETE', `/v1/tokens/${tokens[0].id}`);
  assert.equal(response.status, 412);
  assert.match(response.body.error, /last org token/);
  assert.equal((await h.call('GET', '/v1/apps?org_slug=personal')).status, 200, 'still usable');
  const malformed = await h.call('POST', '/v1/apps', undefined, { token: 'nope', rawBody: '{oops' });
  assert.equal(malformed.status, 401);
});

test('ip allocation refuses a region this host does not serve', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'regions');
  const response = await h.call('POST', '/v1/apps/regions/ip_assignments', { type: 'v6', region: 'iad' });
  assert.equal(response.status, 400);
  assert.match(response.body.error, /^region:/);
});

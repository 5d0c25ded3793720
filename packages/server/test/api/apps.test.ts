import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createApp, startTestHangard } from '../helpers/hangard.js';

test('apps: create with app_name or name, show, list with networks, delete', async (t) => {
  const h = await startTestHangard(t);
  const created = await h.call('POST', '/v1/apps', {
    app_name: 'acme',
    org_slug: 'personal',
    network: 'acme-net',
  });
  assert.equal(created.status, 201);
  assert.equal(created.body.name, 'acme');
  assert.equal(created.body.network, 'acme-net');
  assert.equal(created.body.organization.slug, 'personal');
  assert.match(created.body.id, /^[a-z0-9]{16}$/);

  // fly-go sends `name` instead of `app_name`.
  const second = await h.call('POST', '/v1/apps', { name: 'globex', org_slug: 'personal' });
  assert.equal(second.status, 201);
  assert.equal(second.body.network, 'default');

  const shown = await h.call('GET', '/v1/apps/acme');
  assert.equal(shown.status, 200);
  assert.equal(shown.body.id, created.body.id);

  const list = await h.call('GET', '/v1/apps?org_slug=personal');
  assert.equal(list.status, 200);
  assert.equal(list.body.total_apps, 2);
  assert.deepEqual(list.body.apps.map((a: { name: string; network: string }) => [a.name, a.network]).sort(), [
    ['acme', 'acme-net'],
    ['globex', 'default'],
  ]);

  const deleted = await h.call('DELETE', '/v1/apps/acme');
  assert.equal(deleted.status, 202);
  assert.equal((await h.call('GET', '/v1/apps/acme')).status, 404);
});

test('apps: a network is bound to its name forever and its id is never reused', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'a1', 'shared-net');
  await createApp(h, 'a2', 'shared-net');
  const principal = await h.platform.tokens.authenticate(`Bearer ${h.token}`);
  const networkOf = (name: string) => h.platform.apps.get(principal, name);
  const first = (await networkOf('a1')).network;
  assert.equal((await networkOf('a2')).network.id, first.id, 'naming the network again joins it');

  // Deleting every app of the network keeps the network; a new app naming it joins the same id.
  await h.call('DELETE', '/v1/apps/a1');
  await h.call('DELETE', '/v1/apps/a2');
  await createApp(h, 'a3', 'shared-net');
  assert.equal((await networkOf('a3')).network.id, first.id);
  await createApp(h, 'a4', 'other-net');
  assert.ok((await networkOf('a4')).network.id > first.id, 'a new network gets a fresh id');
});

test('apps: invalid names and taken names are refused with nothing written', async (t) => {
  const h = await startTestHangard(t);
  for (const name of ['Acme', '-acme', 'acme-', 'a_b', 'x'.repeat(64), '']) {
    const response = await h.call('POST', '/v1/apps', { app_name: name, org_slug: 'personal' });
    assert.equal(response.status, 400, `name ${JSON.stringify(name)}`);
    assert.equal(response.body.status, 'invalid_argument');
    assert.match(response.body.error, /app_name/);
  }
  const badNetwork = await h.call('POST', '/v1/apps', {
    app_name: 'ok',
    org_slug: 'personal',
    network: '1net',
  });
  assert.equal(badNetwork.status, 400);
  assert.match(badNetwork.body.error, /^network:/);

  await createApp(h, 'taken');
  const again = await h.call('POST', '/v1/apps', {
    app_name: 'taken',
    org_slug: 'personal',
    network: 'fresh-net',
  });
  assert.equal(again.status, 422);
  assert.equal(again.body.status, 'name_taken');
  assert.match(again.body.error, /Name has already been taken/);

  const list = await h.call('GET', '/v1/apps?org_slug=personal');
  assert.deepEqual(
    list.body.apps.map((a: { name: string }) => a.name),
    ['taken'],
  );
  // The failed create named a new network: it must not exist half-made either.
  const other = await h.call('POST', '/v1/apps', {
    app_name: 'probe',
    org_slug: 'personal',
    network: 'fresh-net',
  });
  assert.equal(other.status, 201);

  const missingOrg = await h.call('POST', '/v1/apps', { app_name: 'x1' });
  assert.equal(missingOrg.status, 400);
  assert.match(missingOrg.body.error, /org_slug/);
  assert.equal((await h.call('GET', '/v1/apps')).status, 400, 'listing needs org_slug');
});

test('apps: delete refuses while machines run unless forced; it removes what the app owned', async (t) => {
  const { FakeRuntime } = await import('../helpers/fake-runtime.js');
  const runtime = new FakeRuntime();
  const h = await startTestHangard(t, { runtime });
  await createApp(h, 'busy');
  const machine = await h.call('POST', '/v1/apps/busy/machines', { config: { image: 'img:1' } });
  await h.call('GET', `/v1/apps/busy/machines/${machine.body.id}/wait?state=started&timeout=10`);
  await h.call('POST', '/v1/apps/busy/secrets', { values: { KEY: 'v' } });
  await h.call('POST', '/v1/apps/busy/volumes', { name: 'data', size_gb: 1 });

  const refused = await h.call('DELETE', '/v1/apps/busy');
  assert.equal(refused.status, 412);
  assert.match(refused.body.error, /running machine/);
  assert.equal((await h.call('GET', '/v1/apps/busy')).status, 200, 'a refused delete changes nothing');

  assert.equal((await h.call('DELETE', '/v1/apps/busy?force=true')).status, 202);
  assert.ok(runtime.calls.includes(`destroy ${machine.body.id}`));
  assert.equal((await h.call('GET', '/v1/apps/busy')).status, 404);
  // The name is free again and the new app starts empty.
  await createApp(h, 'busy');
  assert.deepEqual((await h.call('GET', '/v1/apps/busy/machines?include_deleted=true')).body, []);
  assert.deepEqual((await h.call('GET', '/v1/apps/busy/secrets')).body.secrets, []);
  assert.deepEqual((await h.call('GET', '/v1/apps/busy/volumes')).body, []);
});

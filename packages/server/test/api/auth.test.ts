import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';

async function token(h: TestHangard, body: Record<string, unknown>): Promise<string> {
  const response = await h.call('POST', '/v1/tokens', { org_slug: 'personal', ...body });
  assert.equal(response.status, 201, JSON.stringify(response.body));
  assert.match(response.body.token, /^hg1_/);
  return response.body.token;
}

test('auth: every request needs a valid token; a bad one reveals nothing about apps', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'exists');
  for (const path of ['/v1/apps/exists', '/v1/apps/missing', '/v1/apps?org_slug=personal']) {
    const none = await h.call('GET', path, undefined, { token: null });
    assert.equal(none.status, 401, path);
    assert.equal(none.body.status, 'unauthorized');
    assert.ok(none.headers.get('fly-request-id'), 'errors carry a request id too');
    const bad = await h.call('GET', path, undefined, {
      token: 'hg1_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',
    });
    assert.equal(bad.status, 401, path);
    // Same answer whether the app exists or not.
    assert.equal(
      bad.body.error,
      (await h.call('GET', '/v1/apps/missing', undefined, { token: 'junk' })).body.error,
    );
  }
  const wrongSecret = `${h.token.slice(0, -4)}AAAA`;
  assert.equal((await h.call('GET', '/v1/apps/exists', undefined, { token: wrongSecret })).status, 401);
});

test('auth: Bearer and FlyV1 schemes, and comma-separated token lists', async (t) => {
  const h = await startTestHangard(t);
  const ok = (header: string) =>
    h.call('GET', '/v1/apps?org_slug=personal', undefined, {
      token: null,
      headers: { authorization: header },
    });
  assert.equal((await ok(`Bearer ${h.token}`)).status, 200);
  assert.equal((await ok(`FlyV1 ${h.token}`)).status, 200);
  assert.equal(
    (await ok(`FlyV1 fm2_notours,${h.token}`)).status,
    200,
    'any valid token in the list suffices',
  );
  assert.equal((await ok(`Basic ${h.token}`)).status, 401);
});

test('auth: a deploy token reaches its own app only', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'app-a');
  await createApp(h, 'app-b');
  const deployA = await token(h, { type: 'deploy', app_name: 'app-a' });

  assert.equal((await h.call('GET', '/v1/apps/app-a', undefined, { token: deployA })).status, 200);
  const machine = await h.call(
    'POST',
    '/v1/apps/app-a/machines',
    { config: { image: 'x:1' } },
    { token: deployA },
  );
  assert.equal(machine.status, 200);

  for (const [method, path] of [
    ['GET', '/v1/apps/app-b'],
    ['GET', '/v1/apps/app-b/machines'],
    ['POST', '/v1/apps/app-b/secrets'],
    ['GET', '/v1/apps/no-such-app'],
  ] as const) {
    const response = await h.call(method, path, method === 'POST' ? { values: { A: '1' } } : undefined, {
      token: deployA,
    });
    assert.equal(response.status, 403, `${method} ${path}`);
    assert.equal(response.body.status, 'forbidden');
  }
  // It sees only its app in the list and can create neither apps nor tokens.
  const list = await h.call('GET', '/v1/apps?org_slug=personal', undefined, { token: deployA });
  assert.deepEqual(
    list.body.apps.map((a: { name: string }) => a.name),
    ['app-a'],
  );
  assert.equal(
    (await h.call('POST', '/v1/apps', { app_name: 'new', org_slug: 'personal' }, { token: deployA })).status,
    403,
  );
  assert.equal(
    (await h.call('POST', '/v1/tokens', { type: 'org', org_slug: 'personal' }, { token: deployA })).status,
    403,
  );
  assert.equal((await h.call('DELETE', '/v1/apps/app-a', undefined, { token: deployA })).status, 403);

  // Fly's own endpoint mints deploy tokens too.
  const viaFly = await h.call('POST', '/v1/apps/app-b/deploy_token', { expiry: '1h' });
  assert.equal(viaFly.status, 200);
  assert.equal((await h.call('GET', '/v1/apps/app-b', undefined, { token: viaFly.body.token })).status, 200);
  assert.equal((await h.call('GET', '/v1/apps/app-a', undefined, { token: viaFly.body.token })).status, 403);
});

test('auth: read-only tokens read but never write', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'ro');
  const readonly = await token(h, { type: 'readonly', name: 'dashboards' });
  assert.equal((await h.call('GET', '/v1/apps/ro/machines', undefined, { token: readonly })).status, 200);
  const write = await h.call(
    'POST',
    '/v1/apps/ro/machines',
    { config: { image: 'x:1' } },
    { token: readonly },
  );
  assert.equal(write.status, 403);
  assert.match(write.body.error, /read-only/);
  assert.deepEqual((await h.call('GET', '/v1/apps/ro/machines')).body, [], 'nothing was created');
});

test('auth: tokens are listed without secrets, revoked, and expire', async (t) => {
  let now = Date.parse('2026-01-01T00:00:00Z');
  const h = await startTestHangard(t, { now: () => now });
  await createApp(h, 'svc');
  const short = await token(h, { type: 'deploy', app_name: 'svc', expiry: '1h' });
  const other = await token(h, { type: 'org', name: 'ci' });

  const listed = await h.call('GET', '/v1/tokens?org_slug=personal');
  assert.equal(listed.status, 200);
  assert.equal(listed.body.tokens.length, 3);
  assert.ok(
    listed.body.tokens.every((t: Record<string, unknown>) => !('token' in t) && !('secret_hash' in t)),
  );
  const deployEntry = listed.body.tokens.find((t: { type: string }) => t.type === 'deploy');
  assert.equal(deployEntry.app_name, 'svc');

  const current = await h.call('GET', '/v1/tokens/current', undefined, { token: short });
  assert.deepEqual(current.body.tokens[0].apps, ['svc']);

  now += 2 * 3_600_000;
  assert.equal((await h.call('GET', '/v1/apps/svc', undefined, { token: short })).status, 401, 'expired');

  const otherId = listed.body.tokens.find((t: { name: string }) => t.name === 'ci').id;
  assert.equal((await h.call('DELETE', `/v1/tokens/${otherId}`)).status, 200);
  assert.equal((await h.call('GET', '/v1/apps/svc', undefined, { token: other })).status, 401, 'revoked');

  const badExpiry = await h.call('POST', '/v1/tokens', { type: 'org', org_slug: 'personal', expiry: 'soon' });
  assert.equal(badExpiry.status, 400);
  assert.match(badExpiry.body.error, /^expiry/);
  const deployWithoutApp = await h.call('POST', '/v1/tokens', { type: 'deploy', org_slug: 'personal' });
  assert.equal(deployWithoutApp.status, 400);
});

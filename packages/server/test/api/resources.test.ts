import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createApp, startTestHangard } from '../helpers/hangard.js';

test('volumes: create, get, list, update, extend, snapshots, restore, attach, delete', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'vols');
  const created = await h.call('POST', '/v1/apps/vols/volumes', { name: 'pg_data', size_gb: 2 });
  assert.equal(created.status, 200);
  const v = created.body;
  assert.match(v.id, /^vol_[a-z0-9]{16}$/);
  assert.equal(v.state, 'created');
  assert.equal(v.size_gb, 2);
  assert.equal(v.encrypted, false, 'volumes are not encrypted at rest yet, and say so');
  assert.equal(v.fstype, 'ext4');
  assert.equal(v.attached_machine_id, null);
  assert.equal(
    (await h.call('POST', '/v1/apps/vols/volumes', { name: 'x' })).body.size_gb,
    1,
    'flyctl default size',
  );

  for (const [body, pattern] of [
    [{ name: 'Bad-Name' }, /^name:/],
    [{ size_gb: 1 }, /^name:/],
    [{ name: 'big', size_gb: 501 }, /^size_gb:/],
    [{ name: 'r', snapshot_retention: 0 }, /^snapshot_retention:/],
    [{ name: 'f', fstype: 'xfs' }, /^fstype:/],
  ] as const) {
    const response = await h.call('POST', '/v1/apps/vols/volumes', body);
    assert.equal(response.status, 400, JSON.stringify(body));
    assert.match(response.body.error, pattern);
  }

  const base = `/v1/apps/vols/volumes/${v.id}`;
  assert.equal((await h.call('GET', base)).body.name, 'pg_data');
  assert.equal((await h.call('GET', '/v1/apps/vols/volumes')).body.length, 2);
  assert.equal((await h.call('PUT', base, { snapshot_retention: 10 })).body.snapshot_retention, 10);
  assert.equal(
    (await h.call('POST', base, { auto_backup_enabled: false })).body.auto_backup_enabled,
    false,
    'POST too',
  );

  const shrink = await h.call('PUT', `${base}/extend`, { size_gb: 1 });
  assert.equal(shrink.status, 400);
  assert.match(shrink.body.error, /only grow/);
  const grown = await h.call('PUT', `${base}/extend`, { size_gb: 5 });
  assert.deepEqual([grown.body.volume.size_gb, grown.body.needs_restart], [5, false]);

  assert.equal((await h.call('POST', `${base}/snapshots`)).status, 200);
  const snapshots = (await h.call('GET', `${base}/snapshots`)).body;
  assert.equal(snapshots.length, 1);
  assert.match(snapshots[0].id, /^vs_[A-Za-z0-9]{24}$/);
  assert.equal(snapshots[0].volume_size, 5);
  const restored = await h.call('POST', '/v1/apps/vols/volumes', {
    name: 'restored',
    snapshot_id: snapshots[0].id,
  });
  assert.equal(restored.body.size_gb, 5, 'a restore is at least the snapshot size');
  const tooSmall = await h.call('POST', '/v1/apps/vols/volumes', {
    name: 'tiny',
    snapshot_id: snapshots[0].id,
    size_gb: 1,
  });
  assert.equal(tooSmall.status, 400);

  // Attach through a machine's mounts: one machine at a time; destroy detaches and keeps the volume.
  const m1 = await h.call('POST', '/v1/apps/vols/machines', {
    config: { image: 'pg:16', mounts: [{ volume: v.id, path: '/data' }] },
    skip_launch: true,
  });
  assert.equal(m1.status, 200);
  assert.equal((await h.call('GET', base)).body.attached_machine_id, m1.body.id);
  const m2 = await h.call('POST', '/v1/apps/vols/machines', {
    config: { image: 'pg:16', mounts: [{ volume: v.id, path: '/data' }] },
    skip_launch: true,
  });
  assert.equal(m2.status, 412);
  assert.match(m2.body.error, /attached to machine/);
  const swap = await h.call('POST', `/v1/apps/vols/machines/${m1.body.id}`, {
    config: { image: 'pg:16', mounts: [{ volume: restored.body.id, path: '/data' }] },
  });
  assert.equal(swap.status, 400);
  assert.equal((await h.call('PUT', `${base}/extend`, { size_gb: 6 })).body.needs_restart, true);
  assert.equal((await h.call('DELETE', base)).status, 412, 'an attached volume cannot be deleted');
  await h.call('DELETE', `/v1/apps/vols/machines/${m1.body.id}`);
  assert.equal((await h.call('GET', base)).body.attached_machine_id, null);
  const deleted = await h.call('DELETE', base);
  assert.equal(deleted.status, 200);
  assert.equal(deleted.body.state, 'destroyed');
  assert.equal((await h.call('GET', base)).status, 404);
});

test('secrets: versioned, sealed, never returned in plaintext', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'sec');
  const first = await h.call('POST', '/v1/apps/sec/secrets', {
    values: { DATABASE_URL: 'postgres://x', API_KEY: 'k1' },
  });
  assert.equal(first.status, 200);
  assert.equal(first.body.version, 1);
  assert.equal(first.body.Version, 1, 'the deprecated capitalised copy');
  assert.deepEqual(first.body.secrets.map((s: { name: string }) => s.name).sort(), [
    'API_KEY',
    'DATABASE_URL',
  ]);
  assert.ok(
    first.body.secrets.every(
      (s: Record<string, unknown>) => !('value' in s) && /^[0-9a-f]{16}$/.test(String(s.digest)),
    ),
  );
  const digest = first.body.secrets.find((s: { name: string }) => s.name === 'API_KEY').digest;

  const second = await h.call('POST', '/v1/apps/sec/secrets', {
    values: { API_KEY: 'k2', DATABASE_URL: null },
  });
  assert.equal(second.body.version, 2, 'one change, one version');
  assert.deepEqual(
    second.body.secrets.map((s: { name: string }) => s.name),
    ['API_KEY'],
  );
  assert.notEqual(second.body.secrets[0].digest, digest, 'the digest tells a changed value');

  const one = await h.call('POST', '/v1/apps/sec/secrets/REDIS_URL', { value: 'redis://y' });
  assert.equal(one.status, 201);
  assert.equal(one.body.version, 3);
  assert.equal((await h.call('GET', '/v1/apps/sec/secrets/REDIS_URL')).body.name, 'REDIS_URL');
  assert.equal((await h.call('GET', '/v1/apps/sec/secrets?show_secrets=true')).status, 403);
  assert.equal((await h.call('GET', '/v1/apps/sec/secrets/REDIS_URL?show_secrets=1')).status, 403);
  assert.equal((await h.call('GET', '/v1/apps/sec/secrets?min_version=4')).status, 412);
  assert.equal((await h.call('GET', '/v1/apps/sec/secrets?version=3')).status, 200);

  assert.deepEqual((await h.call('DELETE', '/v1/apps/sec/secrets/REDIS_URL')).body, { version: 4 });
  assert.equal((await h.call('DELETE', '/v1/apps/sec/secrets/REDIS_URL')).status, 404);

  for (const values of [{}, { '1BAD': 'x' }, { FLY_REGION: 'x' }, { OK: 5 }]) {
    const response = await h.call('POST', '/v1/apps/sec/secrets', { values });
    assert.equal(response.status, 400, JSON.stringify(values));
  }
  assert.equal(
    (await h.call('POST', '/v1/apps/sec/secrets', { values: { BIG: 'x'.repeat(70_000) } })).status,
    400,
  );
  const list = await h.call('GET', '/v1/apps/sec/secrets');
  assert.deepEqual(
    list.body.secrets.map((s: { name: string }) => s.name),
    ['API_KEY'],
    'refused changes wrote nothing',
  );
});

test('ip assignments: v6, shared_v4 and Flycast with its network, each with its type', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'web', 'net-a');
  await createApp(h, 'other', 'net-b');
  const v6 = await h.call('POST', '/v1/apps/web/ip_assignments', { type: 'v6' });
  assert.equal(v6.status, 200);
  assert.equal(v6.body.type, 'v6');
  assert.match(v6.body.ip, /^fd68:616e:6761:7200::/);
  const v4 = await h.call('POST', '/v1/apps/web/ip_assignments', { type: 'shared_v4' });
  assert.deepEqual([v4.body.ip, v4.body.type, v4.body.shared], ['127.0.0.1', 'shared_v4', true]);
  assert.equal(
    (await h.call('POST', '/v1/apps/other/ip_assignments', { type: 'shared_v4' })).body.ip,
    '127.0.0.1',
    'shared',
  );
  assert.equal((await h.call('POST', '/v1/apps/web/ip_assignments', { type: 'shared_v4' })).status, 422);

  const own = await h.call('POST', '/v1/apps/web/ip_assignments', { type: 'private_v6' });
  assert.equal(own.body.type, 'private_v6');
  assert.equal(own.body.network.name, 'net-a');
  const exposed = await h.call('POST', '/v1/apps/web/ip_assignments', {
    type: 'private_v6',
    network: 'net-b',
  });
  assert.equal(exposed.body.network.name, 'net-b');
  // Flycast addresses sit in their network's /48 under 0:1; different networks differ in groups 2-3.
  const groups = (ip: string) => ip.split(':').slice(0, 3).join(':');
  assert.match(own.body.ip, /^fdaa:[0-9a-f]+:[0-9a-f]+:0:1::[0-9a-f]+$/);
  assert.notEqual(groups(own.body.ip), groups(exposed.body.ip));
  assert.equal(
    (await h.call('POST', '/v1/apps/web/ip_assignments', { type: 'private_v6', network: 'net-b' })).status,
    422,
  );
  assert.equal(
    (await h.call('POST', '/v1/apps/web/ip_assignments', { type: 'private_v6', network: 'nowhere' })).status,
    404,
  );
  assert.equal((await h.call('POST', '/v1/apps/web/ip_assignments', { type: 'v4' })).status, 400);
  assert.equal(
    (await h.call('POST', '/v1/apps/web/ip_assignments', { type: 'v6', network: 'net-b' })).status,
    400,
  );

  const list = await h.call('GET', '/v1/apps/web/ip_assignments');
  assert.deepEqual(list.body.ips.map((i: { type: string }) => i.type).sort(), [
    'private_v6',
    'private_v6',
    'shared_v4',
    'v6',
  ]);
  assert.equal(
    (await h.call('DELETE', `/v1/apps/web/ip_assignments/${encodeURIComponent(exposed.body.ip)}`)).status,
    200,
  );
  assert.equal((await h.call('DELETE', '/v1/apps/web/ip_assignments/127.0.0.1')).status, 200);
  assert.equal(
    (await h.call('GET', '/v1/apps/other/ip_assignments')).body.ips.length,
    1,
    "another app's shared v4 stays",
  );
  assert.equal((await h.call('DELETE', '/v1/apps/web/ip_assignments/::1')).status, 404);
  assert.equal((await h.call('GET', '/v1/apps/web/ip_assignments')).body.ips.length, 2);
});

test("Flycast placement: a deploy token only in its app's own network, an org token anywhere in the org", async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'web', 'net-a');
  await createApp(h, 'other', 'net-b');
  const created = await h.call('POST', '/v1/apps/web/deploy_token', { expiry: '1h' });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const deploy = created.body.token as string;
  const allocate = (body: object, token?: string) =>
    h.call('POST', '/v1/apps/web/ip_assignments', { type: 'private_v6', ...body }, token ? { token } : {});

  // Into another network, existing or not: 403 with the reason, and nothing written.
  for (const network of ['net-b', 'nowhere']) {
    const refused = await allocate({ network }, deploy);
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.status, 'forbidden');
    assert.match(
      refused.body.error,
      /only in its app's own network "net-a", not in "[a-z-]+"; use an org token/,
    );
  }
  assert.equal((await h.call('GET', '/v1/apps/web/ip_assignments')).body.ips.length, 0);
  // Controls: the same token in its own network, by default and by name; the org token into net-b.
  const own = await allocate({}, deploy);
  assert.equal(own.status, 200, JSON.stringify(own.body));
  assert.equal(own.body.network.name, 'net-a');
  assert.equal((await allocate({ network: 'net-a' }, deploy)).status, 422, 'by name: the same (taken) slot');
  const placed = await allocate({ network: 'net-b' });
  assert.equal(placed.status, 200, JSON.stringify(placed.body));
  assert.equal(placed.body.network.name, 'net-b');
});

test('requests: bad JSON, unknown routes, request ids, regions', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'req');
  const bad = await h.call('POST', '/v1/apps/req/machines', undefined, { rawBody: '{"config": ' });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error, /not valid JSON/);
  const notObject = await h.call('POST', '/v1/apps/req/machines', [1, 2]);
  assert.equal(notObject.status, 400);

  const missing = await h.call('GET', '/v2/whatever');
  assert.equal(missing.status, 404);
  assert.equal(missing.body.status, 'not_found');
  const ids = new Set<string>();
  for (let i = 0; i < 5; i++) ids.add((await h.call('GET', '/v1/apps/req')).headers.get('fly-request-id')!);
  assert.equal(ids.size, 5, 'a fresh request id every time');

  // An empty body with a JSON content type is fine for actions without a body.
  const start = await h.call('POST', '/v1/apps/req/machines', { config: { image: 'x' }, skip_launch: true });
  const stop = await h.call('POST', `/v1/apps/req/machines/${start.body.id}/stop`, undefined, {
    rawBody: '',
  });
  assert.equal(stop.status, 200);

  const regions = await h.call('GET', '/v1/platform/regions');
  assert.equal(regions.body.nearest, 'local');
  assert.equal(regions.body.Regions[0].code, 'local');

  const version = await h.call('GET', '/v1/platform/version');
  assert.equal(version.status, 200);
  assert.deepEqual(version.body, { name: 'hangard', version: '0.1.0' });
  // Only with a token: an anonymous caller does not learn which hangard answers.
  assert.equal((await h.call('GET', '/v1/platform/version', undefined, { token: null })).status, 401);
});

test('rate limits: 429 with Retry-After per machine action, and per org', async (t) => {
  const h = await startTestHangard(t, {
    config: {
      rateLimits: {
        enabled: true,
        org: { perSecond: 1000, burst: 1000 },
        machineAction: { perSecond: 1, burst: 3 },
        machineRead: { perSecond: 5, burst: 10 },
        appDelete: { perSecond: 1, burst: 100 },
      },
    },
  });
  await createApp(h, 'rl');
  const m = await h.call('POST', '/v1/apps/rl/machines', { config: { image: 'x' }, skip_launch: true });
  const other = await h.call('POST', '/v1/apps/rl/machines', { config: { image: 'x' }, skip_launch: true });
  const statuses: number[] = [];
  let limited: Awaited<ReturnType<typeof h.call>> | undefined;
  for (let i = 0; i < 5; i++) {
    const response = await h.call('POST', `/v1/apps/rl/machines/${m.body.id}/cordon`);
    statuses.push(response.status);
    if (response.status === 429) limited = response;
  }
  assert.deepEqual(statuses.slice(0, 3), [200, 200, 200], 'the burst is allowed');
  assert.ok(limited, `expected a 429 after the burst, got ${statuses}`);
  assert.equal(limited.body.status, 'rate_limited');
  assert.ok(Number(limited.headers.get('retry-after')) >= 1);
  // Buckets are per machine and per action.
  assert.equal((await h.call('POST', `/v1/apps/rl/machines/${other.body.id}/cordon`)).status, 200);
  assert.equal((await h.call('POST', `/v1/apps/rl/machines/${m.body.id}/uncordon`)).status, 200);
  assert.equal((await h.call('GET', `/v1/apps/rl/machines/${m.body.id}`)).status, 200);

  const org = await startTestHangard(t, {
    config: {
      rateLimits: {
        enabled: true,
        org: { perSecond: 1, burst: 4 },
        machineAction: { perSecond: 100, burst: 100 },
        machineRead: { perSecond: 100, burst: 100 },
        appDelete: { perSecond: 100, burst: 100 },
      },
    },
  });
  const orgStatuses: number[] = [];
  for (let i = 0; i < 6; i++) orgStatuses.push((await org.call('GET', '/v1/apps?org_slug=personal')).status);
  assert.deepEqual(orgStatuses.slice(0, 4), [200, 200, 200, 200]);
  assert.ok(orgStatuses.includes(429));
});

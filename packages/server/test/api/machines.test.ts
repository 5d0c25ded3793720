import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseIpv6 } from '../../src/sixpn/ipv6.js';
import { createApp, startTestHangard } from '../helpers/hangard.js';

const config = { image: 'registry.example/app:1', env: { MODE: 'test' }, metadata: { tier: 'free' } };

test('machines without a runtime: recorded, never simulated as running', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'norun');
  const created = await h.call('POST', '/v1/apps/norun/machines', { config, name: 'web-1' });
  assert.equal(created.status, 200);
  const m = created.body;
  assert.match(m.id, /^[0-9a-f]{14}$/);
  assert.equal(m.name, 'web-1');
  assert.equal(m.state, 'created');
  assert.equal(m.region, 'local');
  assert.match(m.instance_id, /^[0-9A-Z]{26}$/);
  assert.equal(m.config.guest.memory_mb, 256, 'defaults are filled in and echoed');
  const groups = parseIpv6(m.private_ip)!;
  assert.deepEqual(
    [...groups.slice(0, 3), ...groups.slice(5)],
    [0xfdaa, 0, 1, 0, 1, 2],
    `${m.private_ip}: the default network (1), this host's machine 1`,
  );
  assert.equal(m.config.restart.policy, 'on-failure');
  assert.deepEqual(m.image_ref, {
    registry: 'registry.example',
    repository: 'app',
    tag: '1',
    digest: '',
    labels: {},
  });
  assert.deepEqual(
    m.events.map((e: { type: string; status: string }) => `${e.type}:${e.status}`),
    ['start:failed', 'launch:created'],
    'newest first; the start failure says why',
  );
  assert.match(m.events[0].request.error, /no machine runtime/);

  const start = await h.call('POST', `/v1/apps/norun/machines/${m.id}/start`);
  assert.equal(start.status, 501);
  assert.equal(start.body.status, 'runtime_unavailable');
  // Waiting for a state that cannot come answers at once instead of hanging for the timeout.
  const wait = await h.call('GET', `/v1/apps/norun/machines/${m.id}/wait?state=started&timeout=30`);
  assert.equal(wait.status, 501);
  for (const verb of ['ps']) {
    assert.equal((await h.call('GET', `/v1/apps/norun/machines/${m.id}/${verb}`)).status, 501);
  }
  assert.equal(
    (await h.call('POST', `/v1/apps/norun/machines/${m.id}/exec`, { command: ['true'] })).status,
    501,
  );

  // A machine that never ran can be stopped (nothing to stop) and destroyed.
  assert.equal((await h.call('POST', `/v1/apps/norun/machines/${m.id}/stop`)).status, 200);
  assert.equal((await h.call('GET', `/v1/apps/norun/machines/${m.id}`)).body.state, 'stopped');
  assert.equal(
    (await h.call('GET', `/v1/apps/norun/machines/${m.id}/wait?state=stopped&timeout=1`)).status,
    200,
  );
  assert.equal((await h.call('DELETE', `/v1/apps/norun/machines/${m.id}`)).status, 200);
  const gone = await h.call('GET', `/v1/apps/norun/machines/${m.id}`);
  assert.equal(gone.body.state, 'destroyed');
  assert.deepEqual((await h.call('GET', '/v1/apps/norun/machines')).body, []);
  assert.equal((await h.call('GET', '/v1/apps/norun/machines?include_deleted=true')).body.length, 1);
});

test('machines: list filters, names, update with versions, events and versions endpoints', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'fleet');
  const a = (await h.call('POST', '/v1/apps/fleet/machines', { config, skip_launch: true })).body;
  const b = (
    await h.call('POST', '/v1/apps/fleet/machines', {
      config: { ...config, metadata: { tier: 'paid' } },
      skip_launch: true,
    })
  ).body;
  assert.match(a.name, /^[a-z]+-[a-z]+-\d{4}$/);
  assert.deepEqual(
    a.events.map((e: { type: string }) => e.type),
    ['launch'],
    'skip_launch boots nothing',
  );

  const taken = await h.call('POST', '/v1/apps/fleet/machines', { config, name: a.name });
  assert.equal(taken.status, 422);

  const byMeta = await h.call('GET', '/v1/apps/fleet/machines?metadata.tier=paid');
  assert.deepEqual(
    byMeta.body.map((m: { id: string }) => m.id),
    [b.id],
  );
  assert.equal((await h.call('GET', '/v1/apps/fleet/machines?state=created,stopped')).body.length, 2);
  assert.equal((await h.call('GET', '/v1/apps/fleet/machines?region=elsewhere')).body.length, 0);
  const summary = await h.call('GET', '/v1/apps/fleet/machines?summary=true');
  assert.ok(summary.body.every((m: Record<string, unknown>) => !('config' in m)));

  const updated = await h.call('POST', `/v1/apps/fleet/machines/${a.id}`, {
    config: { ...config, image: 'registry.example/app:2' },
    current_version: a.instance_id,
  });
  assert.equal(updated.status, 200);
  assert.notEqual(updated.body.instance_id, a.instance_id);
  assert.equal(updated.body.config.image, 'registry.example/app:2');
  assert.equal(updated.body.state, 'created', 'a machine that was not running stays as it was');

  const stale = await h.call('POST', `/v1/apps/fleet/machines/${a.id}`, {
    config,
    current_version: a.instance_id,
  });
  assert.equal(stale.status, 412);
  assert.match(stale.body.error, /stale/);
  const rename = await h.call('POST', `/v1/apps/fleet/machines/${a.id}`, { config, name: 'other' });
  assert.equal(rename.status, 400);

  const versions = await h.call('GET', `/v1/apps/fleet/machines/${a.id}/versions`);
  assert.deepEqual(
    versions.body.map((v: { version: string }) => v.version),
    [updated.body.instance_id, a.instance_id],
  );
  assert.equal(versions.body[1].user_config.image, 'registry.example/app:1');

  const events = await h.call('GET', `/v1/apps/fleet/machines/${a.id}/events?limit=1`);
  assert.equal(events.body.length, 1);
  assert.equal(events.body[0].type, 'update');
  assert.equal(typeof events.body[0].timestamp, 'number');
});

test('machines: bad configs are refused naming the field, and write nothing', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'strict');
  const cases: [unknown, RegExp][] = [
    [{}, /^config:/],
    [{ config: {} }, /^config\.image:/],
    [{ config: { image: 'Not A Reference' } }, /^config\.image: not a valid image reference/],
    [{ config: { image: 'x', guest: { memory_mb: 'lots' } } }, /^config\.guest\.memory_mb:/],
    [{ config: { image: 'x', env: { FLY_APP_NAME: 'no' } } }, /^config\.env\.FLY_APP_NAME:/],
    [
      { config: { image: 'x', services: [{ protocol: 'tcp', internal_port: 70000 }] } },
      /^config\.services\.0\.internal_port:/,
    ],
    [
      { config: { image: 'x', services: [{ protocol: 'tcp', internal_port: 80, autostop: 'sometimes' }] } },
      /autostop/,
    ],
    [
      { config: { image: 'x', mounts: [{ volume: 'vol_x', path: 'relative' }] } },
      /^config\.mounts\.0\.path:/,
    ],
    [{ config: { image: 'x', size: 'huge' } }, /^config\.size:/],
    [{ config: { image: 'x', stop_config: { timeout: 'forever' } } }, /^config\.stop_config\.timeout:/],
    [{ config: { image: 'x', stop_config: { signal: 'SIGSTOPPLEASE' } } }, /^config\.stop_config\.signal:/],
    [{ config: { image: 'x', files: [{ guest_path: '/a' }] } }, /^config\.files\.0:/],
    [{ config: { image: 'x' }, lease_ttl: 0 }, /^lease_ttl:/],
    [{ config: { image: 'x' }, region: 'iad' }, /region "iad"/],
    [{ config: { image: 'x' }, name: 'bad name!' }, /^name:/],
    [{ config: { image: 'x', mounts: [{ volume: 'vol_missing', path: '/data' }] } }, /^mounts\[0\]\.volume:/],
  ];
  for (const [body, pattern] of cases) {
    const response = await h.call('POST', '/v1/apps/strict/machines', body);
    assert.ok([400, 412].includes(response.status), `${JSON.stringify(body)} → ${response.status}`);
    assert.match(response.body.error, pattern, JSON.stringify(body));
  }
  assert.deepEqual(
    (await h.call('GET', '/v1/apps/strict/machines?include_deleted=true')).body,
    [],
    'no partial record',
  );

  // Legacy autostop booleans are accepted and echoed in the encoding old clients decode.
  const legacy = await h.call('POST', '/v1/apps/strict/machines', {
    config: {
      image: 'x',
      services: [
        { protocol: 'tcp', internal_port: 8080, autostop: false },
        { protocol: 'tcp', internal_port: 8081, autostop: 'stop' },
        { protocol: 'tcp', internal_port: 8082, autostop: 'suspend' },
        { protocol: 'tcp', internal_port: 8083, autostop: false, autostart: false },
      ],
    },
    skip_launch: true,
  });
  assert.equal(legacy.status, 200);
  assert.deepEqual(
    legacy.body.config.services.map((s: { autostop: unknown; autostart: unknown }) => [
      s.autostop,
      s.autostart,
    ]),
    [
      [false, true],
      [true, true],
      ['suspend', true],
      [false, false],
    ],
  );
  // Autostop without autostart would stop machines nothing starts again: refused, naming the field.
  const downStaysDown = await h.call('POST', '/v1/apps/strict/machines', {
    config: {
      image: 'x',
      services: [{ protocol: 'tcp', internal_port: 8080, autostop: 'stop', autostart: false }],
    },
    skip_launch: true,
  });
  assert.equal(downStaysDown.status, 400);
  assert.match(downStaysDown.body.error, /autostop without autostart/);
  assert.equal((await h.call('GET', '/v1/apps/strict/machines/00000000000000')).status, 404);
  assert.equal((await h.call('GET', '/v1/apps/nope/machines')).status, 404);
});

test('leases: exclusive, refreshable with the nonce, idempotent release', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'leased');
  const created = await h.call('POST', '/v1/apps/leased/machines', {
    config,
    skip_launch: true,
    lease_ttl: 60,
  });
  const id = created.body.id;
  const nonce = created.body.nonce;
  assert.match(nonce, /^[0-9a-f]{12}$/, 'create with lease_ttl returns the nonce');

  const lease = await h.call('GET', `/v1/apps/leased/machines/${id}/lease`);
  assert.equal(lease.status, 200);
  assert.equal(lease.body.status, 'success');
  assert.equal(lease.body.data.nonce, nonce);
  assert.equal(lease.body.data.version, created.body.instance_id);

  const conflict = await h.call('POST', `/v1/apps/leased/machines/${id}/lease`, { ttl: 30 });
  assert.equal(conflict.status, 409);
  assert.equal(conflict.body.status, 'lease_conflict');
  const blocked = await h.call('POST', `/v1/apps/leased/machines/${id}/stop`);
  assert.equal(blocked.status, 409, 'mutations without the nonce are refused');
  assert.match(blocked.body.error, /fly-machine-lease-nonce/);
  const withNonce = await h.call('POST', `/v1/apps/leased/machines/${id}/stop`, undefined, {
    headers: { 'fly-machine-lease-nonce': nonce },
  });
  assert.equal(withNonce.status, 200);

  const refreshed = await h.call('POST', `/v1/apps/leased/machines/${id}/lease?ttl=120`, undefined, {
    headers: { 'fly-machine-lease-nonce': nonce },
  });
  assert.equal(refreshed.status, 201);
  assert.equal(refreshed.body.data.nonce, nonce);
  assert.ok(refreshed.body.data.expires_at > lease.body.data.expires_at);

  assert.equal(
    (await h.call('DELETE', `/v1/apps/leased/machines/${id}/lease`)).status,
    400,
    'nonce header required',
  );
  const wrong = await h.call('DELETE', `/v1/apps/leased/machines/${id}/lease`, undefined, {
    headers: { 'fly-machine-lease-nonce': 'ffffffffffff' },
  });
  assert.equal(wrong.status, 409);
  const headers = { 'fly-machine-lease-nonce': nonce };
  assert.equal(
    (await h.call('DELETE', `/v1/apps/leased/machines/${id}/lease`, undefined, { headers })).status,
    200,
  );
  assert.equal(
    (await h.call('DELETE', `/v1/apps/leased/machines/${id}/lease`, undefined, { headers })).status,
    200,
  );
  assert.equal((await h.call('GET', `/v1/apps/leased/machines/${id}/lease`)).status, 404);
});

test('leases expire by themselves', async (t) => {
  let now = Date.parse('2026-01-01T00:00:00Z');
  const h = await startTestHangard(t, { now: () => now });
  await createApp(h, 'expiry');
  const created = await h.call('POST', '/v1/apps/expiry/machines', {
    config,
    skip_launch: true,
    lease_ttl: 5,
  });
  assert.equal((await h.call('POST', `/v1/apps/expiry/machines/${created.body.id}/cordon`)).status, 409);
  now += 6000;
  assert.equal((await h.call('POST', `/v1/apps/expiry/machines/${created.body.id}/cordon`)).status, 200);
  assert.equal((await h.call('GET', `/v1/apps/expiry/machines/${created.body.id}`)).body.cordoned, true);
});

test('metadata: set, delete and patch without minting a version', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'meta');
  const m = (await h.call('POST', '/v1/apps/meta/machines', { config, skip_launch: true })).body;
  const base = `/v1/apps/meta/machines/${m.id}/metadata`;
  assert.equal((await h.call('POST', `${base}/customer`, { value: 'c-42' })).status, 204);
  assert.deepEqual((await h.call('GET', base)).body, { tier: 'free', customer: 'c-42' });
  assert.equal((await h.call('DELETE', `${base}/tier`)).status, 204);
  assert.deepEqual((await h.call('GET', base)).body, { customer: 'c-42' });

  const patched = await h.call('PATCH', base, {
    metadata: { plan: 'pro', customer: null },
    machine_version: m.instance_id,
  });
  assert.equal(patched.status, 200);
  assert.deepEqual(patched.body, { plan: 'pro' });
  assert.deepEqual(
    (await h.call('PATCH', base, { zone: 'b' })).body,
    { plan: 'pro', zone: 'b' },
    'flat form',
  );
  assert.equal((await h.call('PATCH', base, { metadata: { a: '1' }, machine_version: 'OLD' })).status, 412);
  assert.equal((await h.call('POST', `${base}/bad%20key`, { value: 'x' })).status, 400);
  assert.equal((await h.call('POST', `${base}/k`, { value: 1 })).status, 400);

  const after = (await h.call('GET', `/v1/apps/meta/machines/${m.id}`)).body;
  assert.equal(after.instance_id, m.instance_id, 'metadata does not mint versions');
  assert.deepEqual(
    (await h.call('GET', '/v1/apps/meta/machines?metadata.plan=pro')).body.map((x: { id: string }) => x.id),
    [m.id],
  );
});

test('wait: validates its arguments and times out with 408', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'waiter');
  const m = (await h.call('POST', '/v1/apps/waiter/machines', { config, skip_launch: true })).body;
  const base = `/v1/apps/waiter/machines/${m.id}/wait`;
  assert.equal((await h.call('GET', `${base}?timeout=61`)).status, 400);
  assert.equal((await h.call('GET', `${base}?timeout=0`)).status, 400);
  assert.equal((await h.call('GET', `${base}?state=dancing`)).status, 400);
  const timedOut = await h.call('GET', `${base}?state=stopped&timeout=1`);
  assert.equal(timedOut.status, 408);
  assert.match(timedOut.body.error, /failed to reach desired state, stopped, currently created/);
  // Repeated `state` and an `instance_id` (old clients) or `version` (new clients).
  assert.equal(
    (await h.call('GET', `${base}?state=stopped&state=created&instance_id=${m.instance_id}&timeout=1`))
      .status,
    200,
  );
  assert.equal((await h.call('GET', `${base}?state=created&version=${m.instance_id}&timeout=1`)).status, 200);

  // A waiter is woken by the change, not by polling.
  const pending = h.call('GET', `${base}?state=destroyed&timeout=30`);
  await h.call('DELETE', `/v1/apps/waiter/machines/${m.id}`);
  assert.equal((await pending).status, 200);
  const never = await h.call('GET', `${base}?state=stopped&timeout=30`);
  assert.equal(never.status, 412, 'a destroyed machine will never be stopped: say so at once');
});

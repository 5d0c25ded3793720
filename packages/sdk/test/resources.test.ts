// Wire shapes: for each resource, the method, path, query, headers and body the SDK sends; then the
// wait endpoint and waitForState's loop.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isMachinesApiError, MachinesClient, type MachinesClientOptions } from '../src/index.js';
import { type Handler, type RecordedRequest, sequence, startFakeServer } from './fake-server.js';

async function setup(t: import('node:test').TestContext, handler: Handler = () => ({ body: { ok: true } })) {
  const server = await startFakeServer(t, handler);
  const client = new MachinesClient({ baseUrl: server.url, token: 'tok', rateLimit: false, retries: false });
  const last = (): RecordedRequest => {
    const req = server.requests.at(-1);
    assert.ok(req, 'no request was sent');
    return req;
  };
  return { server, client, last };
}

const LEASE = { nonce: 'abc123def456', expires_at: 1_900_000_000, owner: 'me', version: 'v1' };

test('mutating machine calls send the lease nonce header', async (t) => {
  const { client, last } = await setup(t);
  const nonce = { nonce: 'abc123def456' };

  await client.machines.stop('app', 'm1', { signal: 'SIGTERM', timeout: 10 }, nonce);
  assert.equal(last().path, '/v1/apps/app/machines/m1/stop');
  assert.equal(last().headers['fly-machine-lease-nonce'], 'abc123def456');
  assert.deepEqual(last().body, { signal: 'SIGTERM', timeout: '10s' });

  for (const call of [
    () => client.machines.start('app', 'm1', nonce),
    () => client.machines.suspend('app', 'm1', nonce),
    () => client.machines.cordon('app', 'm1', nonce),
    () => client.machines.uncordon('app', 'm1', nonce),
    () => client.machines.destroy('app', 'm1', { force: true }, nonce),
    () => client.machines.update('app', 'm1', { config: { image: 'nginx:2' }, current_version: 'v1' }, nonce),
  ]) {
    await call();
    assert.equal(
      last().headers['fly-machine-lease-nonce'],
      'abc123def456',
      `${last().method} ${last().path}`,
    );
  }
  assert.equal(last().method, 'POST');
  assert.deepEqual(last().body, { config: { image: 'nginx:2' }, current_version: 'v1' });

  await client.machines.start('app', 'm1');
  assert.equal(last().headers['fly-machine-lease-nonce'], undefined, 'no header without a nonce');
});

test('leases: acquire, refresh, get, release; the envelope is unwrapped', async (t) => {
  const { client, last } = await setup(t, (req) =>
    req.method === 'DELETE'
      ? { body: { ok: true } }
      : { status: 201, body: { status: 'success', data: LEASE } },
  );
  assert.deepEqual(
    await client.machines.acquireLease('app', 'm1', { ttl: 13, description: 'deploy' }),
    LEASE,
  );
  assert.equal(last().method, 'POST');
  assert.equal(last().path, '/v1/apps/app/machines/m1/lease');
  assert.deepEqual(last().body, { ttl: 13, description: 'deploy' });
  assert.equal(last().headers['fly-machine-lease-nonce'], undefined);

  await client.machines.acquireLease('app', 'm1', { ttl: 13, nonce: LEASE.nonce });
  assert.equal(last().headers['fly-machine-lease-nonce'], LEASE.nonce, 'refresh sends the held nonce');

  assert.deepEqual(await client.machines.getLease('app', 'm1'), LEASE);
  await client.machines.releaseLease('app', 'm1', LEASE.nonce);
  assert.equal(last().method, 'DELETE');
  assert.equal(last().headers['fly-machine-lease-nonce'], LEASE.nonce);
});

test('machines: list filters, restart query, signal, exec, metadata, events', async (t) => {
  const { client, last } = await setup(t, () => ({ body: [] }));
  await client.machines.list('app', {
    includeDeleted: true,
    region: 'local',
    state: ['started', 'stopped'],
    summary: true,
    metadata: { fly_process_group: 'web', role: 'primary db' },
  });
  const q = last().url.searchParams;
  assert.equal(q.get('include_deleted'), 'true');
  assert.equal(q.get('region'), 'local');
  assert.equal(q.get('state'), 'started,stopped');
  assert.equal(q.get('summary'), 'true');
  assert.equal(q.get('metadata.fly_process_group'), 'web');
  assert.equal(q.get('metadata.role'), 'primary db');

  await client.machines.list('app');
  assert.equal(last().url.search, '', 'no empty filters are sent');

  await client.machines.restart('app', 'm1', { signal: 'SIGHUP', timeout: '30s', forceStop: true });
  assert.equal(last().url.search, '?signal=SIGHUP&timeout=30s&force_stop=true');

  await client.machines.signal('app', 'm1', 'SIGUSR1');
  assert.deepEqual(last().body, { signal: 'SIGUSR1' });
  await client.machines.kill('app', 'm1');
  assert.deepEqual(last().body, { signal: 9 });

  await client.machines.exec('app', 'm1', { command: ['sh', '-c', 'echo hi'], timeout: 5 });
  assert.deepEqual(last().body, { command: ['sh', '-c', 'echo hi'], timeout: 5 });

  await client.machines.setMetadata('app', 'm1', 'role', 'db');
  assert.equal(last().path, '/v1/apps/app/machines/m1/metadata/role');
  assert.deepEqual(last().body, { value: 'db' });
  await client.machines.deleteMetadata('app', 'm1', 'role');
  assert.equal(last().method, 'DELETE');
  await client.machines.patchMetadata('app', 'm1', { a: '1', b: null }, { machineVersion: 'v3' });
  assert.equal(last().method, 'PATCH');
  assert.deepEqual(last().body, { metadata: { a: '1', b: null }, machine_version: 'v3' });

  await client.machines.events('app', 'm1', { limit: 5 });
  assert.equal(last().url.search, '?limit=5');
  await client.machines.destroy('app', 'm1', { kill: true });
  assert.equal(last().url.search, '?kill=true');
});

test('apps: create sends app_name and name, and reads the app back after an empty 201', async (t) => {
  const app = { id: 'a1', name: 'acme', organization: { slug: 'personal' }, network: 'acme-net' };
  const { server, client } = await setup(t, (req) =>
    req.method === 'POST' ? { status: 201 } : { body: app },
  );
  const created = await client.apps.create({ app_name: 'acme', org_slug: 'personal', network: 'acme-net' });
  assert.deepEqual(created, app);
  assert.deepEqual(server.requests[0]?.body, {
    app_name: 'acme',
    org_slug: 'personal',
    network: 'acme-net',
    name: 'acme',
  });
  assert.equal(server.requests[1]?.path, '/v1/apps/acme');

  await client.apps.delete('acme', { force: true });
  assert.equal(server.requests.at(-1)?.url.search, '?force=true');
});

test('path parameters are percent-encoded and must not be empty', async (t) => {
  const { client, last } = await setup(t);
  await client.ipAssignments.release('app', 'fdaa:0:1::3');
  assert.equal(last().path, '/v1/apps/app/ip_assignments/fdaa%3A0%3A1%3A%3A3');
  assert.throws(() => client.machines.get('app', ''), /empty path parameter/);
});

test('volumes, secrets, IPs and tokens hit the documented endpoints', async (t) => {
  const { client, last } = await setup(t);
  await client.volumes.create('app', { name: 'data', size_gb: 3, region: 'local' });
  assert.deepEqual([last().method, last().path], ['POST', '/v1/apps/app/volumes']);
  await client.volumes.extend('app', 'vol_1', 10);
  assert.deepEqual(
    [last().method, last().path, last().body],
    ['PUT', '/v1/apps/app/volumes/vol_1/extend', { size_gb: 10 }],
  );
  await client.volumes.update('app', 'vol_1', { snapshot_retention: 7 });
  assert.deepEqual([last().method, last().path], ['PUT', '/v1/apps/app/volumes/vol_1']);
  await client.volumes.createSnapshot('app', 'vol_1');
  assert.deepEqual([last().method, last().path], ['POST', '/v1/apps/app/volumes/vol_1/snapshots']);

  await client.secrets.set('app', { A: '1', OLD: null });
  assert.deepEqual([last().path, last().body], ['/v1/apps/app/secrets', { values: { A: '1', OLD: null } }]);
  await client.secrets.list('app', { showSecrets: true, minVersion: 4 });
  assert.equal(last().url.search, '?show_secrets=true&min_version=4');
  await client.secrets.setOne('app', 'B', '2');
  assert.deepEqual([last().path, last().body], ['/v1/apps/app/secrets/B', { value: '2' }]);
  await client.secrets.unset('app', 'B');
  assert.deepEqual([last().method, last().path], ['DELETE', '/v1/apps/app/secrets/B']);

  await client.ipAssignments.allocate('app', { type: 'private_v6', network: 'acme-net' });
  assert.deepEqual(last().body, { type: 'private_v6', network: 'acme-net' });

  await client.tokens.create({ type: 'deploy', org_slug: 'personal', app_name: 'app', expiry: '720h' });
  assert.deepEqual([last().method, last().path], ['POST', '/v1/tokens']);
  await client.tokens.list('acme');
  assert.equal(last().url.search, '?org_slug=acme');
  await client.tokens.revoke('tok_1');
  assert.deepEqual([last().method, last().path], ['DELETE', '/v1/tokens/tok_1']);
  await client.tokens.current();
  assert.equal(last().path, '/v1/tokens/current');
  await client.apps.createDeployToken('app', { expiry: '24h' });
  assert.deepEqual([last().path, last().body], ['/v1/apps/app/deploy_token', { expiry: '24h' }]);
});

// wait and waitForState

const FAST: MachinesClientOptions = { rateLimit: false, retries: { minDelayMs: 5, maxDelayMs: 20 } };
const TIMED_OUT = {
  status: 408,
  body: { error: 'machine failed to reach desired state, started, currently stopped' },
};

test('wait sends repeated state params and the other filters', async (t) => {
  const server = await startFakeServer(t, () => ({ body: { ok: true } }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const res = await client.machines.wait('my-app', 'm1', {
    state: ['started', 'stopped'],
    timeout: 30,
    instanceId: '01HV',
    version: '01HW',
  });
  assert.deepEqual(res, { ok: true });
  const req = server.requests[0];
  assert.equal(req?.method, 'GET');
  assert.equal(req?.path, '/v1/apps/my-app/machines/m1/wait');
  assert.deepEqual(req?.url.searchParams.getAll('state'), ['started', 'stopped']);
  assert.equal(req?.url.search, '?state=started&state=stopped&timeout=30&instance_id=01HV&version=01HW');
});

test('wait rejects with status 408 when the server times out', async (t) => {
  const server = await startFakeServer(t, () => TIMED_OUT);
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  await assert.rejects(client.machines.wait('app', 'm1', { state: 'started', timeout: 1 }), { status: 408 });
  assert.equal(server.requests.length, 1, '408 is not retried by the transport');
});

test('waitForState loops over 408s until the machine gets there', async (t) => {
  const server = await startFakeServer(t, sequence(TIMED_OUT, TIMED_OUT, { body: { ok: true } }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const res = await client.waitForState('app', 'm1', 'started', { timeoutMs: 5_000, version: 'v2' });
  assert.deepEqual(res, { ok: true });
  assert.equal(server.requests.length, 3);
  for (const req of server.requests) {
    const timeout = Number(req.url.searchParams.get('timeout'));
    assert.ok(timeout >= 1 && timeout <= 60, `per-call timeout ${timeout} s must stay within 1..60`);
    assert.equal(req.url.searchParams.get('state'), 'started');
    assert.equal(req.url.searchParams.get('version'), 'v2');
  }
});

test('waitForState gives up at the deadline with code timeout', async (t) => {
  const server = await startFakeServer(t, () => TIMED_OUT);
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const started = Date.now();
  const err = await client
    .waitForState('app', 'm1', ['started', 'suspended'], { timeoutMs: 300 })
    .catch((e) => e);
  const elapsed = Date.now() - started;
  assert.ok(isMachinesApiError(err, 'timeout'), String(err));
  assert.equal(err.status, 408);
  assert.match(err.message, /m1 did not reach started or suspended within 300 ms/);
  assert.match(err.message, /currently stopped/, 'keeps the server’s last explanation');
  assert.ok(server.requests.length >= 2, 'it called wait more than once');
  assert.ok(elapsed >= 290 && elapsed < 1_500, `gave up after ${elapsed} ms`);
});

test('waitForState does not overrun its deadline while the server holds a call open', async (t) => {
  const server = await startFakeServer(t, () => ({ ...TIMED_OUT, delayMs: 5_000 }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const started = Date.now();
  await assert.rejects(client.waitForState('app', 'm1', 'started', { timeoutMs: 200 }), { code: 'timeout' });
  assert.ok(Date.now() - started < 1_000);
  assert.equal(server.requests[0]?.url.searchParams.get('timeout'), '1');
});

test('waitForState passes other errors straight through', async (t) => {
  const server = await startFakeServer(t, () => ({
    status: 404,
    body: { error: 'no machine', status: 'not_found' },
  }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  await assert.rejects(client.waitForState('app', 'm1', 'started', { timeoutMs: 2_000 }), {
    code: 'not_found',
  });
});

test('waitForState honours the caller’s abort signal', async (t) => {
  const server = await startFakeServer(t, () => ({ ...TIMED_OUT, delayMs: 5_000 }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error('cancelled by user')), 50);
  await assert.rejects(
    client.waitForState('app', 'm1', 'started', { timeoutMs: 10_000 }, { signal: controller.signal }),
    /cancelled by user/,
  );
});

test('platform: regions, version, health; readiness returns the 503 body instead of throwing', async (t) => {
  const { client, last } = await setup(t, (req) => {
    if (req.path === '/v1/platform/version') return { body: { name: 'hangard', version: '0.1.0' } };
    if (req.path === '/healthz') return { body: { status: 'ok' } };
    if (req.path === '/readyz') {
      return { status: 503, body: { status: 'not_ready', checks: { store: true, proxy_listeners: false } } };
    }
    return { body: { regions: [{ code: 'local' }], nearest: 'local' } };
  });
  assert.deepEqual(await client.platform.version(), { name: 'hangard', version: '0.1.0' });
  assert.equal(last().headers.authorization, 'Bearer tok');
  assert.deepEqual(await client.platform.health(), { status: 'ok' });
  assert.deepEqual(await client.platform.readiness(), {
    status: 'not_ready',
    checks: { store: true, proxy_listeners: false },
    ready: false,
  });
  assert.equal((await client.platform.regions()).nearest, 'local');
  assert.equal(last().path, '/v1/platform/regions');
});

test('volumes.fork creates a volume from the source, named like it unless a name is given', async (t) => {
  const { server, client, last } = await setup(t, (req) =>
    req.method === 'GET'
      ? { body: { id: 'vol_src', name: 'data', state: 'created', size_gb: 1, region: 'local' } }
      : { body: { id: 'vol_new', name: 'data', state: 'created', size_gb: 1, region: 'local' } },
  );
  assert.equal((await client.volumes.fork('app', 'vol_src')).id, 'vol_new');
  assert.deepEqual(last().body, { name: 'data', source_volume_id: 'vol_src' });
  assert.equal(server.requests[0]?.path, '/v1/apps/app/volumes/vol_src');
  await client.volumes.fork('app', 'vol_src', { name: 'copy', region: 'local' });
  assert.deepEqual(last().body, { name: 'copy', region: 'local', source_volume_id: 'vol_src' });
  assert.equal(server.requests.length, 3, 'no GET when the name is given');
});

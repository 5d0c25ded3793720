// machine update, clone and leases: the calls they make (lease, nonce, current_version, wait) and the
// config changes their flags make, as pure functions.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, expectCode, type RecordedRequest, startFakeServer } from './helpers.js';

const { applyUpdateFlags, diffConfig } = await import('../src/machine-config.js');

const LEASE = {
  status: 'success',
  data: { nonce: 'n0nce', expires_at: 1_900_000_000, owner: 'ci', version: 'v1' },
};

function machine(overrides: Record<string, unknown> = {}) {
  return {
    id: 'm1',
    name: 'web-1',
    state: 'started',
    region: 'local',
    instance_id: 'v1',
    config: {
      image: 'reg/acme/web:1',
      env: { A: '1' },
      guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 256 },
      services: [
        { protocol: 'tcp', internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }], autostop: false },
      ],
    },
    ...overrides,
  };
}

const calls = (requests: RecordedRequest[]) => requests.map((r) => `${r.method} ${r.path}`);

test('update flags change only what they name', () => {
  const before = machine().config;
  const after = applyUpdateFlags(before, {
    image: 'reg/acme/web:2',
    env: ['B=2'],
    vmMemory: '512',
    autostop: 'suspend',
    autostart: false,
  });
  assert.equal(after.image, 'reg/acme/web:2');
  assert.deepEqual(after.env, { A: '1', B: '2' });
  assert.deepEqual(after.guest, { cpu_kind: 'shared', cpus: 1, memory_mb: 512 });
  assert.equal(after.services?.[0]?.autostop, 'suspend');
  assert.equal(after.services?.[0]?.autostart, false);
  assert.deepEqual(after.services?.[0]?.ports, [{ port: 80, handlers: ['http'] }]);
  assert.equal(before.image, 'reg/acme/web:1', 'the input is not modified');

  // --port replaces the service of its internal port and keeps the others.
  const ports = applyUpdateFlags(
    { ...before, services: [...before.services, { protocol: 'tcp', internal_port: 9000 }] },
    { port: ['443:8080/tcp:tls:http'] },
  );
  assert.deepEqual(
    ports.services?.map((s) => [s.internal_port, s.ports]),
    [
      [8080, [{ port: 443, handlers: ['tls', 'http'] }]],
      [9000, undefined],
    ],
  );
  assert.equal(ports.services?.[0]?.autostop, false, 'what --port does not say is kept');

  assert.deepEqual(applyUpdateFlags(before, { vmSize: 'performance-2x' }).guest, {
    cpu_kind: 'performance',
    cpus: 2,
    memory_mb: 4096,
  });
  assert.throws(() => applyUpdateFlags(before, { vmSize: 'huge' }), /unknown VM size "huge"/);
  assert.throws(() => applyUpdateFlags({ image: 'x' }, { autostop: 'stop' }), /this machine has none/);
  assert.throws(() => applyUpdateFlags(before, { vmMemory: 'lots' }), /--vm-memory must be a whole number/);
});

test('diffConfig lists changed, added and removed leaves; autostop compares by meaning', () => {
  const before = machine().config;
  const after = applyUpdateFlags(before, { image: 'reg/acme/web:2', env: ['B=2'], autostop: 'off' });
  assert.deepEqual(diffConfig(before, after), [
    '~ image: "reg/acme/web:1" -> "reg/acme/web:2"',
    '+ env.B: "2"',
  ]);
  assert.deepEqual(diffConfig(before, { ...before, env: {} }), ['- env.A']);
  assert.deepEqual(diffConfig(before, structuredClone(before)), []);
});

test('machine update leases, updates with nonce and current_version, waits for the new version', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path.endsWith('/lease'))
      return req.method === 'POST' ? { status: 201, body: LEASE } : { body: { ok: true } };
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    if (req.method === 'POST') return { body: machine({ instance_id: 'v2' }) };
    return {
      body: machine(
        server.requests.some((r) => r.method === 'POST' && r.path === '/v1/apps/acme/machines/m1')
          ? { instance_id: 'v2', config: { image: 'reg/acme/web:2' } }
          : {},
      ),
    };
  });
  const result = await cli(
    ['machine', 'update', 'm1', '-a', 'acme', '--image', 'reg/acme/web:2', '-e', 'B=2'],
    {
      apiUrl: server.url,
    },
  );
  expectCode(result, 0);
  assert.deepEqual(calls(server.requests), [
    'POST /v1/apps/acme/machines/m1/lease',
    'GET /v1/apps/acme/machines/m1',
    'POST /v1/apps/acme/machines/m1',
    'GET /v1/apps/acme/machines/m1/wait',
    'GET /v1/apps/acme/machines/m1',
    'DELETE /v1/apps/acme/machines/m1/lease',
  ]);
  const update = server.requests[2];
  assert.equal(update?.headers['fly-machine-lease-nonce'], 'n0nce');
  const body = update?.body as {
    config: { image: string; env: object };
    current_version: string;
    skip_launch?: boolean;
  };
  assert.equal(body.current_version, 'v1');
  assert.equal(body.config.image, 'reg/acme/web:2');
  assert.deepEqual(body.config.env, { A: '1', B: '2' });
  assert.equal(body.skip_launch, undefined, 'a started machine boots the new version');
  assert.equal(server.requests[3]?.url.searchParams.get('version'), 'v2');
  assert.equal(server.requests[5]?.headers['fly-machine-lease-nonce'], 'n0nce');
  assert.match(
    result.stdout,
    /^Updated machine m1:\n {2}~ image: "reg\/acme\/web:1" -> "reg\/acme\/web:2"\n {2}\+ env\.B: "2"\n/,
  );
});

test('machine update of a stopped machine skips the launch; no change makes no update', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path.endsWith('/lease'))
      return req.method === 'POST' ? { status: 201, body: LEASE } : { body: { ok: true } };
    return { body: machine({ state: 'stopped' }) };
  });
  expectCode(
    await cli(['machine', 'update', 'm1', '-a', 'acme', '--vm-memory', '512'], { apiUrl: server.url }),
    0,
  );
  const update = server.requests.find((r) => r.method === 'POST' && r.path === '/v1/apps/acme/machines/m1');
  assert.equal((update?.body as { skip_launch?: boolean } | undefined)?.skip_launch, true);
  assert.ok(!calls(server.requests).some((c) => c.endsWith('/wait')), 'nothing to wait for');

  server.requests.length = 0;
  const same = await cli(['machine', 'update', 'm1', '-a', 'acme', '--image', 'reg/acme/web:1'], {
    apiUrl: server.url,
  });
  expectCode(same, 0);
  assert.equal(same.stdout, 'No changes to apply to machine m1\n');
  assert.deepEqual(calls(server.requests), [
    'POST /v1/apps/acme/machines/m1/lease',
    'GET /v1/apps/acme/machines/m1',
    'DELETE /v1/apps/acme/machines/m1/lease',
  ]);
});

test('machine clone copies the config and gives the mount a new volume like the source’s', async (t) => {
  const source = machine({ config: { ...machine().config, mounts: [{ volume: 'vol_src', path: '/data' }] } });
  const server = await startFakeServer(t, (req) => {
    if (req.path === '/v1/apps/acme/machines/m1') return { body: source };
    if (req.path === '/v1/apps/acme/volumes/vol_src')
      return { body: { id: 'vol_src', name: 'data', size_gb: 3, region: 'local', state: 'created' } };
    if (req.path === '/v1/apps/acme/volumes')
      return { body: { id: 'vol_new', name: 'data', size_gb: 3, region: 'local', state: 'created' } };
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    return { body: machine({ id: 'm2', name: 'web-2', instance_id: 'v9' }) };
  });
  const result = await cli(['machine', 'clone', 'm1', '-a', 'acme', '--name', 'web-2'], {
    apiUrl: server.url,
  });
  expectCode(result, 0);
  const volume = server.requests.find((r) => r.method === 'POST' && r.path === '/v1/apps/acme/volumes');
  assert.deepEqual(volume?.body, { name: 'data', region: 'local', size_gb: 3 });
  const launch = server.requests.find((r) => r.method === 'POST' && r.path === '/v1/apps/acme/machines');
  const body = launch?.body as { name: string; region: string; config: { image: string; mounts: unknown } };
  assert.equal(body.name, 'web-2');
  assert.equal(body.region, 'local');
  assert.equal(body.config.image, 'reg/acme/web:1');
  assert.deepEqual(body.config.mounts, [{ volume: 'vol_new', path: '/data' }]);
  assert.equal(result.stdout, 'Machine m2 (web-2) cloned from m1: started\n');
});

test('machine leases view shows the holder; clear releases with the nonce; no lease is said so', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path.includes('/m2/'))
      return { status: 404, body: { error: 'machine m2 has no active lease', status: 'not_found' } };
    return req.method === 'GET' ? { body: LEASE } : { body: { ok: true } };
  });
  const view = await cli(['machine', 'leases', 'view', 'm1', 'm2', '-a', 'acme'], { apiUrl: server.url });
  expectCode(view, 0);
  assert.match(
    view.stdout,
    /^MACHINE\s+NONCE\s+OWNER\s+DESCRIPTION\s+EXPIRES\s+VERSION\nm1\s+n0nce\s+ci\s+2030-03-17T17:46:40Z\s+v1\nm2\s+\(no lease\)\n$/,
  );
  const json = await cli(['machine', 'leases', 'view', 'm2', '-a', 'acme', '--json'], { apiUrl: server.url });
  assert.deepEqual(JSON.parse(json.stdout), [{ machine_id: 'm2', lease: null }]);

  server.requests.length = 0;
  const clear = await cli(['machine', 'leases', 'clear', 'm1', 'm2', '-a', 'acme'], { apiUrl: server.url });
  expectCode(clear, 0);
  assert.equal(clear.stdout, 'Cleared the lease on m1 (held by ci)\nNo lease on m2\n');
  const release = server.requests.find((r) => r.method === 'DELETE');
  assert.equal(release?.path, '/v1/apps/acme/machines/m1/lease');
  assert.equal(release?.headers['fly-machine-lease-nonce'], 'n0nce');

  const bad = await cli(['machine', 'leases', 'drop', 'm1', '-a', 'acme'], { apiUrl: server.url });
  expectCode(bad, 1);
  assert.match(bad.stderr, /^Error: unknown leases action "drop"\nHint: use `leases view ID`/);
});

test('machine restart --force-stop asks the server to kill', async (t) => {
  const server = await startFakeServer(t, () => ({ body: { ok: true } }));
  expectCode(
    await cli(['machine', 'restart', 'm1', '-a', 'acme', '--force-stop'], { apiUrl: server.url }),
    0,
  );
  assert.equal(server.requests[0]?.path, '/v1/apps/acme/machines/m1/restart');
  assert.equal(server.requests[0]?.url.searchParams.get('force_stop'), 'true');
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { type ApiResponse, startTestHangard } from '../helpers/hangard.js';
import { assertArrayOfSchema, assertMatchesSchema, SPEC_EXCEPTIONS } from '../helpers/openapi.js';

/**
 * Every endpoint whose 200/201 has a component schema in Fly's published spec, driven over real HTTP,
 * with each body validated against that schema (plus the error bodies of the common failures). The few
 * deliberate departures from the spec are listed in SPEC_EXCEPTIONS and printed here.
 */

function expectStatus(response: ApiResponse, status: number, what: string): void {
  assert.equal(
    response.status,
    status,
    `${what}: expected ${status}, got ${response.status} ${JSON.stringify(response.body)}`,
  );
}

function expectError(response: ApiResponse, status: number, code: string, what: string): void {
  expectStatus(response, status, what);
  assertMatchesSchema('ErrorResponse', response.body, what);
  assert.equal(response.body.status, code, `${what}: error code`);
  assert.equal(typeof response.body.error, 'string', `${what}: error text`);
}

test('responses conform to the Machines OpenAPI spec', async (t) => {
  for (const exception of SPEC_EXCEPTIONS) {
    t.diagnostic(`spec exception ${exception.name} (${exception.target}): ${exception.reason}`);
  }
  const h = await startTestHangard(t, { runtime: new FakeRuntime() });
  const app = 'conformance';
  const base = `/v1/apps/${app}`;
  let volumeId = '';
  let machineId = '';
  let version = '';
  let nonce = '';

  await t.test('ErrorResponse: 401 without a token', async () => {
    expectError(
      await h.call('GET', '/v1/apps?org_slug=personal', undefined, { token: null }),
      401,
      'unauthorized',
      '401',
    );
  });

  await t.test('App, ListAppsResponse and a 422 for a taken name', async () => {
    const created = await h.call('POST', '/v1/apps', { app_name: app, org_slug: 'personal' });
    expectStatus(created, 201, 'create app');
    // The spec's 201 has no body; Hangar returns the App object as flyctl expects.
    assertMatchesSchema('App', created.body, 'create app');

    expectError(
      await h.call('POST', '/v1/apps', { app_name: app, org_slug: 'personal' }),
      422,
      'name_taken',
      'name taken',
    );

    const got = await h.call('GET', base);
    expectStatus(got, 200, 'get app');
    assertMatchesSchema('App', got.body, 'get app');
    assert.equal(got.body.name, app);
    assert.equal(got.body.organization.slug, 'personal');

    const list = await h.call('GET', '/v1/apps?org_slug=personal');
    expectStatus(list, 200, 'list apps');
    assertMatchesSchema('ListAppsResponse', list.body, 'list apps');
    assert.equal(list.body.total_apps, 1);
    assert.equal(list.body.apps[0].network, 'default');
  });

  await t.test('ErrorResponse: 404 and 400', async () => {
    expectError(await h.call('GET', '/v1/apps/no-such-app'), 404, 'not_found', 'unknown app');
    expectError(await h.call('GET', `${base}/machines/0123456789abcd`), 404, 'not_found', 'unknown machine');
    expectError(
      await h.call('POST', `${base}/machines`, { config: { env: { A: 'b' } } }),
      400,
      'invalid_argument',
      'no image',
    );
    expectError(
      await h.call('POST', `${base}/machines`, undefined, { rawBody: '{"config": ' }),
      400,
      'invalid_argument',
      'malformed JSON',
    );
  });

  await t.test('Volume: create, get, list, update (PUT and POST), extend, snapshots', async () => {
    const created = await h.call('POST', `${base}/volumes`, {
      name: 'data',
      size_gb: 1,
      snapshot_retention: 5,
    });
    expectStatus(created, 200, 'create volume');
    assertMatchesSchema('Volume', created.body, 'create volume');
    volumeId = created.body.id;
    assert.equal(created.body.attached_machine_id, null);

    const got = await h.call('GET', `${base}/volumes/${volumeId}`);
    expectStatus(got, 200, 'get volume');
    assertMatchesSchema('Volume', got.body, 'get volume');

    const list = await h.call('GET', `${base}/volumes`);
    expectStatus(list, 200, 'list volumes');
    assertArrayOfSchema('Volume', list.body, 'list volumes');
    assert.equal(list.body.length, 1);

    const put = await h.call('PUT', `${base}/volumes/${volumeId}`, { snapshot_retention: 7 });
    expectStatus(put, 200, 'update volume (PUT)');
    assertMatchesSchema('Volume', put.body, 'update volume (PUT)');
    assert.equal(put.body.snapshot_retention, 7);

    const post = await h.call('POST', `${base}/volumes/${volumeId}`, { snapshot_retention: 8 });
    expectStatus(post, 200, 'update volume (POST, as the spec says)');
    assertMatchesSchema('Volume', post.body, 'update volume (POST)');
    assert.equal(post.body.snapshot_retention, 8);

    const extended = await h.call('PUT', `${base}/volumes/${volumeId}/extend`, { size_gb: 2 });
    expectStatus(extended, 200, 'extend volume');
    assertMatchesSchema('ExtendVolumeResponse', extended.body, 'extend volume');
    assert.equal(extended.body.volume.size_gb, 2);
    assert.equal(extended.body.needs_restart, false);

    expectStatus(await h.call('POST', `${base}/volumes/${volumeId}/snapshots`), 200, 'create snapshot');
    const snapshots = await h.call('GET', `${base}/volumes/${volumeId}/snapshots`);
    expectStatus(snapshots, 200, 'list snapshots');
    assertArrayOfSchema('VolumeSnapshot', snapshots.body, 'list snapshots');
    assert.equal(snapshots.body.length, 1);

    const scratch = await h.call('POST', `${base}/volumes`, { name: 'scratch' });
    expectStatus(scratch, 200, 'create second volume');
    const deleted = await h.call('DELETE', `${base}/volumes/${scratch.body.id}`);
    expectStatus(deleted, 200, 'delete volume');
    assertMatchesSchema('Volume', deleted.body, 'delete volume');
    assert.equal(deleted.body.state, 'destroyed');
  });

  const config = () => ({
    image: 'registry.example/conformance:1',
    env: { GREETING: 'hello', PORT: '8080' },
    guest: { cpu_kind: 'shared', cpus: 2, memory_mb: 512 },
    init: { cmd: ['serve', '--port', '8080'] },
    services: [
      {
        protocol: 'tcp',
        internal_port: 8080,
        autostop: 'suspend',
        autostart: true,
        min_machines_running: 0,
        ports: [
          { port: 80, handlers: ['http'], force_https: true },
          { port: 443, handlers: ['tls', 'http'] },
        ],
        concurrency: { type: 'requests', soft_limit: 20, hard_limit: 25 },
        checks: [
          {
            type: 'http',
            port: 8080,
            interval: '15s',
            timeout: '2s',
            grace_period: '5s',
            method: 'GET',
            path: '/healthz',
            protocol: 'http',
            headers: [{ name: 'X-Check', values: ['1'] }],
          },
        ],
      },
    ],
    checks: { alive: { type: 'tcp', port: 8080, interval: '10s', timeout: '1s' } },
    mounts: [{ volume: volumeId, path: '/data' }],
    metadata: { team: 'conformance' },
    restart: { policy: 'on-failure', max_retries: 3 },
    stop_config: { signal: 'SIGTERM', timeout: '10s' },
  });

  /** Every field sent comes back unchanged; Hangar only adds defaults (here: `dns`). */
  function assertRoundTrip(
    sent: Record<string, unknown>,
    returned: Record<string, unknown>,
    what: string,
  ): void {
    for (const [key, value] of Object.entries(sent))
      assert.deepEqual(returned[key], value, `${what}: config.${key}`);
    assert.deepEqual(returned.dns, {}, `${what}: config.dns default`);
    const service = (returned.services as { autostop: unknown }[])[0]!;
    assert.equal(service.autostop, 'suspend', `${what}: autostop`);
  }

  await t.test('Machine: create with services, mounts, env, guest; get; list', async () => {
    const sent = config();
    const created = await h.call('POST', `${base}/machines`, {
      name: 'web-1',
      region: 'local',
      config: sent,
    });
    expectStatus(created, 200, 'create machine');
    assertMatchesSchema('Machine', created.body, 'create machine');
    assertRoundTrip(sent, created.body.config, 'create');
    machineId = created.body.id;
    version = created.body.instance_id;

    expectStatus(
      await h.call('GET', `${base}/machines/${machineId}/wait?state=started&timeout=30`),
      200,
      'wait started',
    );

    const got = await h.call('GET', `${base}/machines/${machineId}`);
    expectStatus(got, 200, 'get machine');
    assertMatchesSchema('Machine', got.body, 'get machine');
    assert.equal(got.body.state, 'started');
    assertRoundTrip(sent, got.body.config, 'get');

    for (const query of [
      '',
      '?summary=true',
      '?include_deleted=true&state=started',
      '?metadata.team=conformance',
    ]) {
      const list = await h.call('GET', `${base}/machines${query}`);
      expectStatus(list, 200, `list machines${query}`);
      assertArrayOfSchema('Machine', list.body, `list machines${query}`);
      assert.equal(list.body.length, 1, `list machines${query}`);
    }

    const volume = await h.call('GET', `${base}/volumes/${volumeId}`);
    assertMatchesSchema('Volume', volume.body, 'attached volume');
    assert.equal(volume.body.attached_machine_id, machineId);
  });

  await t.test('ProcessStat (ps) and exec on a started machine', async () => {
    const ps = await h.call('GET', `${base}/machines/${machineId}/ps`);
    expectStatus(ps, 200, 'ps');
    assertArrayOfSchema('ProcessStat', ps.body, 'ps');
    assert.ok(ps.body.length > 0);
    // exec's 200 is typed as a bare string in the spec (raw output); Hangar returns fly-go's JSON object.
    const exec = await h.call('POST', `${base}/machines/${machineId}/exec`, { command: ['true'] });
    expectStatus(exec, 200, 'exec');
    assert.equal(exec.body.exit_code, 0);
  });

  await t.test('Lease (data of the envelope) and a 409 for a held lease', async () => {
    const acquired = await h.call('POST', `${base}/machines/${machineId}/lease`, {
      ttl: 60,
      description: 'conformance',
    });
    expectStatus(acquired, 201, 'acquire lease');
    assert.equal(acquired.body.status, 'success');
    assertMatchesSchema('Lease', acquired.body.data, 'acquire lease');
    nonce = acquired.body.data.nonce;
    assert.equal(acquired.body.data.version, version);

    const got = await h.call('GET', `${base}/machines/${machineId}/lease`);
    expectStatus(got, 200, 'get lease');
    assertMatchesSchema('Lease', got.body.data, 'get lease');
    assert.equal(got.body.data.nonce, nonce);

    expectError(
      await h.call('POST', `${base}/machines/${machineId}/lease`, { ttl: 60 }),
      409,
      'lease_conflict',
      'held lease',
    );
  });

  await t.test('Machine update; a 412 for a stale current_version', async () => {
    const sent = { ...config(), env: { GREETING: 'hi again', PORT: '8080' } };
    const headers = { 'fly-machine-lease-nonce': nonce };
    expectError(
      await h.call(
        'POST',
        `${base}/machines/${machineId}`,
        { config: sent, current_version: '01ARZ3NDEKTSV4RRFFQ69G5FAV' },
        { headers },
      ),
      412,
      'failed_precondition',
      'stale current_version',
    );
    const updated = await h.call(
      'POST',
      `${base}/machines/${machineId}`,
      { config: sent, current_version: version },
      { headers },
    );
    expectStatus(updated, 200, 'update machine');
    assertMatchesSchema('Machine', updated.body, 'update machine');
    assertRoundTrip(sent, updated.body.config, 'update');
    assert.notEqual(updated.body.instance_id, version);
    version = updated.body.instance_id;
    expectStatus(
      await h.call('DELETE', `${base}/machines/${machineId}/lease`, undefined, { headers }),
      200,
      'release lease',
    );
  });

  await t.test('MachineEvent (events) and MachineVersion (versions)', async () => {
    const events = await h.call('GET', `${base}/machines/${machineId}/events?limit=50`);
    expectStatus(events, 200, 'events');
    assertArrayOfSchema('MachineEvent', events.body, 'events');
    const types = new Set(events.body.map((e: { type: string }) => e.type));
    for (const type of ['launch', 'start', 'update', 'exit'])
      assert.ok(types.has(type), `an event of type ${type}`);

    const versions = await h.call('GET', `${base}/machines/${machineId}/versions`);
    expectStatus(versions, 200, 'versions');
    assertArrayOfSchema('MachineVersion', versions.body, 'versions');
    assert.equal(versions.body.length, 2);
    assert.equal(versions.body[0].version, version);
    assert.equal(versions.body[0].user_config.env.GREETING, 'hi again');
    assert.equal(versions.body[0].user_config.services[0].autostop, 'suspend');
  });

  await t.test('Machine after suspend and stop; a 412 deleting an attached volume', async () => {
    expectStatus(
      await h.call('GET', `${base}/machines/${machineId}/wait?state=started&timeout=30`),
      200,
      'wait started',
    );
    expectStatus(await h.call('POST', `${base}/machines/${machineId}/suspend`), 200, 'suspend');
    const suspended = await h.call('GET', `${base}/machines/${machineId}`);
    assertMatchesSchema('Machine', suspended.body, 'suspended machine');
    assert.equal(suspended.body.state, 'suspended');

    expectStatus(
      await h.call('POST', `${base}/machines/${machineId}/stop`, { signal: 'SIGTERM', timeout: '5s' }),
      200,
      'stop',
    );
    const stopped = await h.call('GET', `${base}/machines/${machineId}`);
    assertMatchesSchema('Machine', stopped.body, 'stopped machine');
    assert.equal(stopped.body.state, 'stopped');
    expectError(
      await h.call('GET', `${base}/machines/${machineId}/ps`),
      412,
      'failed_precondition',
      'ps of a stopped machine',
    );

    expectError(
      await h.call('DELETE', `${base}/volumes/${volumeId}`),
      412,
      'failed_precondition',
      'attached volume',
    );
  });

  await t.test('the validator is not vacuous: off-spec bodies are refused', async () => {
    const machine = (await h.call('GET', `${base}/machines/${machineId}`)).body;
    assert.throws(
      () => assertMatchesSchema('Machine', { ...machine, instance_id: 42 }),
      /instance_id must be string/,
    );
    const services = [{ ...machine.config.services[0], autostop: 'stop' }];
    assert.throws(
      () => assertMatchesSchema('Machine', { ...machine, config: { ...machine.config, services } }),
      /autostop/,
    );
    assert.throws(
      () => assertMatchesSchema('ErrorResponse', { error: 'x', status: 'no_such_code' }),
      /allowed values/,
    );
    assert.throws(
      () => assertMatchesSchema('ListAppsResponse', { total_apps: 1, apps: [{ network: {} }] }),
      /network/,
    );
    assert.throws(() => assertArrayOfSchema('Volume', { id: 'vol_x' }), /expected an array/);
  });
});

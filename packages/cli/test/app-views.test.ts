// status, logs and releases: what they read and how they print it; how releases are made of versions.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, expectCode, startFakeServer } from './helpers.js';

const { ulidTime, buildReleases, planRollback } = await import('../src/releases.js');

/** A ULID whose time is `ms` (the random part is fixed). */
function ulid(ms: number): string {
  const alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
  let time = '';
  for (let n = ms, i = 0; i < 10; i++, n = Math.floor(n / 32)) time = alphabet[n % 32] + time;
  return `${time}0000000000000000`;
}

const T0 = Date.parse('2026-12-01T00:00:00Z');

function machine(id: string, current: string, state = 'started', group?: string) {
  return {
    id,
    name: id,
    state,
    region: 'local',
    instance_id: current,
    config: { image: 'img:2', ...(group ? { metadata: { fly_process_group: group } } : {}) },
  };
}

test('ulidTime reads the time a ULID carries', () => {
  assert.equal(ulidTime(ulid(T0)), T0);
  assert.equal(ulidTime('01ARZ3NDEKTSV4RRFFQ69G5FAV'), 1_469_922_850_259);
  assert.equal(ulidTime('not-a-ulid'), undefined);
});

test('releases: a new image starts a release; same-image updates and clones join it; going back is new', () => {
  const v = (minute: number) => ulid(T0 + minute * 60_000);
  const cfg = (image: string, memory = 256) => ({ image, guest: { memory_mb: memory } });
  const releases = buildReleases([
    {
      machine: machine('m1', v(30)),
      versions: [
        { version: v(30), user_config: cfg('img:1') },
        { version: v(20), user_config: cfg('img:2', 512) },
        { version: v(10), user_config: cfg('img:2') },
        { version: v(0), user_config: cfg('img:1') },
      ],
    },
    { machine: machine('m2', v(11)), versions: [{ version: v(11), user_config: cfg('img:2') }] },
    { machine: machine('m3', v(1), 'destroyed'), versions: [{ version: v(1), user_config: cfg('img:1') }] },
  ]);
  assert.deepEqual(
    releases.map((r) => [r.version, r.image, r.machines, r.running, r.created_at]),
    [
      [1, 'img:1', ['m1', 'm3'], [], '2026-12-01T00:00:00.000Z'],
      [2, 'img:2', ['m1', 'm2'], ['m2'], '2026-12-01T00:10:00.000Z'],
      [3, 'img:1', ['m1'], ['m1'], '2026-12-01T00:30:00.000Z'],
    ],
  );
  // An update that keeps a machine's image stays in that machine's release, even after a newer release.
  const kept = buildReleases([
    {
      machine: machine('m1', v(5)),
      versions: [
        { version: v(5), user_config: cfg('img:2') },
        { version: v(0), user_config: cfg('img:1') },
      ],
    },
    {
      machine: machine('m2', v(9)),
      versions: [
        { version: v(9), user_config: cfg('img:1', 512) },
        { version: v(1), user_config: cfg('img:1') },
      ],
    },
  ]);
  assert.deepEqual(
    kept.map((r) => [r.version, r.image, r.running]),
    [
      [1, 'img:1', ['m2']],
      [2, 'img:2', ['m1']],
    ],
  );
  // A deploy's release id groups versions even when the image is the same.
  const byId = buildReleases([
    {
      machine: machine('m1', v(5)),
      versions: [
        { version: v(5), user_config: { image: 'a', metadata: { fly_release_id: 'r2' } } },
        { version: v(0), user_config: { image: 'a', metadata: { fly_release_id: 'r1' } } },
      ],
    },
  ]);
  assert.deepEqual(
    byId.map((r) => r.release_id),
    ['r1', 'r2'],
  );
});

test('status shows the app and its machines with group, version, state and checks', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path === '/v1/apps/acme') {
      return {
        body: {
          id: 'a1',
          name: 'acme',
          status: 'deployed',
          network: 'acme-net',
          organization: { slug: 'personal' },
        },
      };
    }
    return {
      body: [
        { ...machine('m2', 'V2', 'stopped', 'worker'), updated_at: '2026-12-01T00:00:00Z' },
        {
          ...machine('m1', 'V1'),
          checks: [
            { name: 'http', status: 'passing' },
            { name: 'tcp', status: 'critical' },
          ],
        },
        machine('m3', 'V3', 'destroyed'),
        machine('rel', 'V4', 'stopped', 'fly_app_release_command'),
      ],
    };
  });
  const result = await cli(['status', '-a', 'acme'], { apiUrl: server.url });
  expectCode(result, 0);
  assert.match(
    result.stdout,
    /^App\s+acme\nOwner\s+personal\nNetwork\s+acme-net\nStatus\s+deployed\n\nMachines\n/,
  );
  const rows = result.stdout.split('Machines\n')[1]?.trimEnd().split('\n') ?? [];
  assert.match(rows[0] ?? '', /^PROCESS\s+ID\s+VERSION\s+REGION\s+STATE\s+CHECKS\s+IMAGE\s+LAST UPDATED$/);
  assert.match(rows[1] ?? '', /^app\s+m1\s+V1\s+local\s+started\s+2 total, 1 passing, 1 critical\s+img:2$/);
  assert.match(rows[2] ?? '', /^worker\s+m2\s+V2\s+local\s+stopped\s+img:2\s+2026-12-01T00:00:00Z$/);
  assert.equal(rows.length, 3, 'destroyed and release-command machines are left out');
  const json = JSON.parse((await cli(['status', '-a', 'acme', '--json'], { apiUrl: server.url })).stdout);
  assert.equal(json.app.name, 'acme');
  assert.deepEqual(
    json.machines.map((m: { id: string }) => m.id),
    ['m1', 'm2'],
  );
});

test('logs --no-tail merges every machine’s lines with a group[id] region prefix', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path === '/v1/apps/acme/machines')
      return { body: [machine('m1', 'V1'), machine('m2', 'V2', 'stopped', 'worker')] };
    if (req.path === '/v1/apps/acme/machines/m2') return { body: machine('m2', 'V2', 'stopped', 'worker') };
    const id = req.path.split('/')[5];
    return {
      headers: { 'content-type': 'application/x-ndjson' },
      body: `{"instance":"${id}","message":"hello from ${id}"}\n{"instance":"${id}","message":"bye"}\n`,
    };
  });
  const result = await cli(['logs', '-a', 'acme', '--no-tail', '-n', '5'], { apiUrl: server.url });
  expectCode(result, 0);
  const lines = result.stdout.trimEnd().split('\n').sort();
  assert.deepEqual(lines, [
    'app[m1] local bye',
    'app[m1] local hello from m1',
    'worker[m2] local bye',
    'worker[m2] local hello from m2',
  ]);
  for (const req of server.requests.filter((r) => r.path.endsWith('/logs'))) {
    assert.equal(req.url.searchParams.get('tail'), '5');
    assert.equal(req.url.searchParams.get('follow'), null);
  }
  const one = await cli(['logs', '-a', 'acme', '--no-tail', '-i', 'm2', '--json'], { apiUrl: server.url });
  expectCode(one, 0);
  assert.deepEqual(JSON.parse(one.stdout.split('\n')[0] ?? ''), {
    instance: 'm2',
    region: 'local',
    process_group: 'worker',
    message: 'hello from m2',
  });
});

test('releases prints newest first with what runs where', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path === '/v1/apps/acme/machines') return { body: [machine('m1', ulid(T0 + 60_000))] };
    return {
      body: [
        { version: ulid(T0 + 60_000), user_config: { image: 'img:2' } },
        { version: ulid(T0), user_config: { image: 'img:1' } },
      ],
    };
  });
  const result = await cli(['releases', '-a', 'acme'], { apiUrl: server.url });
  expectCode(result, 0);
  assert.equal(
    result.stdout,
    [
      'VERSION  STATUS        IMAGE  MACHINES  CREATED',
      'v2       running on 1  img:2  1         2026-12-01T00:01:00Z',
      'v1       superseded    img:1  1         2026-12-01T00:00:00Z',
      '',
    ].join('\n'),
  );
  assert.equal(server.requests[0]?.url.searchParams.get('include_deleted'), 'true');
});

test('rollback plan: machines of the release get their own config back; later machines only the image', () => {
  const v = (minute: number) => ulid(T0 + minute * 60_000);
  const m1 = { ...machine('m1', v(10)), config: { image: 'img:2', env: { A: '2' } } };
  const m2 = { ...machine('m2', v(11)), config: { image: 'img:2', env: { B: '1' } } };
  const history = [
    {
      machine: m1,
      versions: [
        { version: v(10), user_config: { image: 'img:2', env: { A: '2' } } },
        { version: v(1), user_config: { image: 'img:1', env: { A: '1' } } },
        { version: v(0), user_config: { image: 'img:1' } },
      ],
    },
    { machine: m2, versions: [{ version: v(11), user_config: { image: 'img:2', env: { B: '1' } } }] },
  ];
  const [first] = buildReleases(history);
  assert.ok(first);
  assert.deepEqual(
    planRollback(history, first, [m1, m2]).map((s) => [s.machine.id, s.how, s.config]),
    [
      ['m1', 'own', { image: 'img:1', env: { A: '1' } }],
      ['m2', 'image', { image: 'img:1', env: { B: '1' } }],
    ],
  );
});

test('releases rollback asks first, then updates each machine back; unknown versions are refused', async (t) => {
  const versions: Record<string, unknown[]> = {
    m1: [
      { version: ulid(T0 + 60_000), user_config: { image: 'img:2' } },
      { version: ulid(T0), user_config: { image: 'img:1' } },
    ],
  };
  const server = await startFakeServer(t, (req) => {
    if (req.path === '/v1/apps/acme/machines')
      return { body: [{ ...machine('m1', ulid(T0 + 60_000)), config: { image: 'img:2' } }] };
    if (req.path.endsWith('/versions')) return { body: versions.m1 };
    if (req.path.endsWith('/lease'))
      return { status: 201, body: { status: 'success', data: { nonce: 'n', expires_at: 1 } } };
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    return { body: { ...machine('m1', 'V3'), config: { image: 'img:2' } } };
  });
  const refused = await cli(['releases', 'rollback', '-a', 'acme'], { apiUrl: server.url });
  expectCode(refused, 1);
  assert.match(
    refused.stderr,
    /m1: back to its config of v1\n.*\nError: refusing to roll back acme to v1 \(img:1\), updating 1 machine without confirmation\n/s,
  );
  const done = await cli(['releases', 'rollback', 'v1', '-a', 'acme', '--yes'], { apiUrl: server.url });
  expectCode(done, 0);
  const update = server.requests.find((r) => r.method === 'POST' && r.path === '/v1/apps/acme/machines/m1');
  assert.deepEqual((update?.body as { config?: unknown } | undefined)?.config, { image: 'img:1' });
  assert.equal(done.stdout, 'Rolled back acme to v1 (img:1): 1 machine updated\n');
  const missing = await cli(['releases', 'rollback', '7', '-a', 'acme', '--yes'], { apiUrl: server.url });
  expectCode(missing, 1);
  assert.match(
    missing.stderr,
    /^Error: app acme has no release v7\nHint: list them with `hangar releases -a acme`\n$/,
  );
  const bad = await cli(['releases', 'forward', '-a', 'acme'], { apiUrl: server.url });
  expectCode(bad, 1);
  assert.match(bad.stderr, /unknown releases action "forward"/);
});

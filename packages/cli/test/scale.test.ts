// scale count's plan (which machines are cloned, which go), and what scale count/memory/show send and print.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, expectCode, startFakeServer } from './helpers.js';

const { planScale } = await import('../src/scale-plan.js');

function m(id: string, state: string, created: string, group?: string, region = 'local') {
  return {
    id,
    name: id,
    state,
    region,
    instance_id: `v-${id}`,
    created_at: created,
    config: {
      image: 'img',
      guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 256 },
      ...(group ? { metadata: { fly_process_group: group } } : {}),
    },
  };
}

test('planScale: per group, stopped machines go first then the newest; clones copy a started one', () => {
  const machines = [
    m('a1', 'started', '2026-01-01T00:00:00Z'),
    m('a2', 'started', '2026-01-03T00:00:00Z'),
    m('a3', 'stopped', '2026-01-02T00:00:00Z'),
    m('a4', 'started', '2026-01-04T00:00:00Z'),
    m('w1', 'stopped', '2026-01-05T00:00:00Z', 'worker'),
    m('gone', 'destroyed', '2026-01-06T00:00:00Z'),
    m('rel', 'stopped', '2026-01-07T00:00:00Z', 'fly_app_release_command'),
  ];
  const down = planScale(machines, 2);
  assert.deepEqual(
    down.map((p) => [p.group, p.before, p.destroy.map((x) => x.id), p.create]),
    [
      ['app', 4, ['a3', 'a4'], 0],
      ['worker', 1, [], 1],
    ],
  );
  assert.equal(down[1]?.source?.id, 'w1');

  const up = planScale(machines, 5, { group: 'app' });
  assert.equal(up.length, 1);
  assert.equal(up[0]?.create, 1);
  assert.equal(up[0]?.source?.id, 'a4', 'the newest started machine');

  const region = planScale([...machines, m('a5', 'started', '2026-01-08T00:00:00Z', undefined, 'far')], 1, {
    group: 'app',
    region: 'far',
  });
  assert.deepEqual([region[0]?.before, region[0]?.create, region[0]?.destroy.length], [1, 0, 0]);
  const elsewhere = planScale(machines, 2, { group: 'app', region: 'far' });
  assert.equal(elsewhere[0]?.create, 2);
  assert.equal(elsewhere[0]?.source?.id, 'a4', 'a region without machines clones from the group');

  assert.throws(
    () => planScale(machines, 1, { group: 'web' }),
    /no machine in process group web to clone from/,
  );
  assert.throws(() => planScale([], 1), /the app has no machines to scale/);
});

test('scale count clones and destroys (leased, after confirmation)', async (t) => {
  let machines = [m('a1', 'started', '2026-01-01T00:00:00Z'), m('a2', 'stopped', '2026-01-02T00:00:00Z')];
  const server = await startFakeServer(t, (req) => {
    if (req.path.endsWith('/lease'))
      return { status: 201, body: { status: 'success', data: { nonce: 'nn', expires_at: 1 } } };
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    if (req.path === '/v1/apps/acme/machines' && req.method === 'GET') return { body: machines };
    if (req.path === '/v1/apps/acme/machines') return { body: m('new', 'created', '2026-02-01T00:00:00Z') };
    if (req.method === 'GET') return { body: m('new', 'started', '2026-02-01T00:00:00Z') };
    return { body: { ok: true } };
  });
  const refused = await cli(['scale', 'count', '1', '-a', 'acme'], { apiUrl: server.url });
  expectCode(refused, 1);
  assert.match(
    refused.stderr,
    /^app: 2 -> 1 machines \(-1\)\nError: refusing to destroy 1 machine of acme \(a2\) without confirmation\n/,
  );
  assert.ok(!server.requests.some((r) => r.method === 'DELETE'));

  const down = await cli(['scale', 'count', '1', '-a', 'acme', '--yes'], { apiUrl: server.url });
  expectCode(down, 0);
  const destroy = server.requests.find((r) => r.method === 'DELETE');
  assert.equal(destroy?.path, '/v1/apps/acme/machines/a2');
  assert.equal(destroy?.url.searchParams.get('force'), 'true');
  assert.equal(destroy?.headers['fly-machine-lease-nonce'], 'nn');
  assert.equal(down.stdout, 'app: 1 machine\n');

  machines = [m('a1', 'started', '2026-01-01T00:00:00Z')];
  server.requests.length = 0;
  const up = await cli(['scale', 'count', '2', '-a', 'acme', '--json'], { apiUrl: server.url });
  expectCode(up, 0);
  const launch = server.requests.find((r) => r.method === 'POST' && r.path === '/v1/apps/acme/machines');
  assert.deepEqual(launch?.body, { config: machines[0]?.config, region: 'local' });
  assert.deepEqual(JSON.parse(up.stdout), [
    { process_group: 'app', region: null, before: 1, after: 2, created: ['new'], destroyed: [] },
  ]);
});

test('scale memory updates each machine’s guest; scale show sums up groups', async (t) => {
  const machines = [
    m('a1', 'started', '2026-01-01T00:00:00Z'),
    m('w1', 'stopped', '2026-01-02T00:00:00Z', 'worker'),
  ];
  const server = await startFakeServer(t, (req) => {
    if (req.path.endsWith('/lease'))
      return { status: 201, body: { status: 'success', data: { nonce: 'nn', expires_at: 1 } } };
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    if (req.path === '/v1/apps/acme/machines') return { body: machines };
    const id = req.path.split('/')[5];
    return { body: machines.find((x) => x.id === id) };
  });
  const mem = await cli(['scale', 'memory', '1024', '-a', 'acme', '--process-group', 'worker'], {
    apiUrl: server.url,
  });
  expectCode(mem, 0);
  const updates = server.requests.filter((r) => r.method === 'POST' && /\/machines\/\w+$/.test(r.path));
  assert.deepEqual(
    updates.map((r) => [r.path, (r.body as { config: { guest: unknown } }).config.guest]),
    [['/v1/apps/acme/machines/w1', { cpu_kind: 'shared', cpus: 1, memory_mb: 1024 }]],
  );

  const show = await cli(['scale', 'show', '-a', 'acme'], { apiUrl: server.url });
  expectCode(show, 0);
  assert.equal(
    show.stdout,
    [
      'PROCESS GROUP  COUNT  KIND    CPUS  MEMORY  REGIONS',
      'app            1      shared  1     256 MB  local',
      'worker         1      shared  1     256 MB  local',
      '',
    ].join('\n'),
  );
  const bad = await cli(['scale', 'vm', 'giant', '-a', 'acme'], { apiUrl: server.url });
  expectCode(bad, 1);
  assert.match(bad.stderr, /^Error: unknown VM size "giant"\nHint: use one of shared-cpu-1x, /);
});

// secrets import/deploy, ips allocate and private, volumes snapshots and fork.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, expectCode, startFakeServer } from './helpers.js';

const { parseSecretLines } = await import('../src/secrets-file.js');

const MACHINE = {
  id: 'm1',
  name: 'web',
  state: 'started',
  region: 'local',
  instance_id: 'v1',
  config: { image: 'x' },
};
const LEASE = { status: 'success', data: { nonce: 'n1', expires_at: 1_900_000_000 } };

test('secret lines: comments, quotes, multi-line values; bad lines name the line, not the value', () => {
  const text = [
    '# database',
    'DATABASE_URL=postgres://db/acme?x=1',
    '',
    'QUOTED="two words"',
    "SINGLE='x'",
    'EMPTY=',
    'CERT="""',
    '-----BEGIN-----',
    'abc',
    '-----END-----',
    '"""',
  ].join('\n');
  assert.deepEqual(parseSecretLines(text), {
    DATABASE_URL: 'postgres://db/acme?x=1',
    QUOTED: 'two words',
    SINGLE: 'x',
    EMPTY: '',
    CERT: '-----BEGIN-----\nabc\n-----END-----',
  });
  assert.throws(
    () => parseSecretLines('A=1\nhunter2\n'),
    (err: Error) => {
      assert.equal(err.message, 'line 2 is not NAME=VALUE');
      return true;
    },
  );
  assert.throws(() => parseSecretLines('K="""\nsecret'), /the value of K \(line 1\) has no closing """/);
});

test('secrets import sets every line in one version and never prints a value', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path === '/v1/apps/acme/secrets') return { body: { secrets: [], version: 4 } };
    if (req.path.endsWith('/lease')) return { body: LEASE };
    if (req.path === '/v1/apps/acme/machines') return { body: [MACHINE] };
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    return { body: MACHINE };
  });
  const staged = await cli(['secrets', 'import', '-a', 'acme', '--stage'], {
    apiUrl: server.url,
    stdin: 'API_KEY=s3cr3t-value\nOTHER="also secret"\n',
  });
  expectCode(staged, 0);
  assert.deepEqual(server.requests[0]?.body, { values: { API_KEY: 's3cr3t-value', OTHER: 'also secret' } });
  assert.equal(server.requests.length, 1);
  const printed = `${staged.stdout}${staged.stderr}`;
  assert.ok(!printed.includes('s3cr3t') && !printed.includes('also secret'), printed);
  assert.match(staged.stdout, /^Set API_KEY, OTHER \(secrets version 4\)\n/);

  server.requests.length = 0;
  const deployed = await cli(['secrets', 'import', '-a', 'acme'], {
    apiUrl: server.url,
    stdin: 'API_KEY=v2\n',
  });
  expectCode(deployed, 0);
  const update = server.requests.find((r) => r.method === 'POST' && r.path === '/v1/apps/acme/machines/m1');
  assert.equal((update?.body as { min_secrets_version?: number } | undefined)?.min_secrets_version, 4);

  const tty = await cli(['secrets', 'import', '-a', 'acme'], { apiUrl: server.url });
  expectCode(tty, 1);
  assert.match(tty.stderr, /nothing is piped in\nHint: run `hangar secrets import -a APP < file.env`/);
});

test('secrets deploy updates every machine with its own config, leased, without a secrets version', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path.endsWith('/lease')) return { body: LEASE };
    if (req.path === '/v1/apps/acme/machines')
      return { body: [MACHINE, { ...MACHINE, id: 'm2', state: 'stopped' }] };
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    if (req.method === 'POST') return { body: { ...MACHINE, instance_id: 'v2' } };
    return { body: req.path.endsWith('/m2') ? { ...MACHINE, id: 'm2', state: 'stopped' } : MACHINE };
  });
  const result = await cli(['secrets', 'deploy', '-a', 'acme'], { apiUrl: server.url });
  expectCode(result, 0);
  const updates = server.requests.filter((r) => r.method === 'POST' && /\/machines\/m\d$/.test(r.path));
  assert.deepEqual(
    updates.map((r) => r.body),
    [
      { config: { image: 'x' }, current_version: 'v1' },
      { config: { image: 'x' }, current_version: 'v1', skip_launch: true },
    ],
  );
  assert.equal(result.stdout, 'Updated 2 machines of acme\n');
});

test('ips: allocate-v4 without --shared explains; allocate-v6 --private --org; private lists 6PN addresses', async (t) => {
  const server = await startFakeServer(t, (req) => {
    const body = req.body as { type?: string } | undefined;
    if (req.method === 'POST' && body?.type === 'v4') {
      return {
        status: 400,
        body: {
          error: 'type: dedicated v4 addresses are not offered; use shared_v4',
          status: 'invalid_argument',
        },
      };
    }
    if (req.method === 'POST') return { body: { ip: 'fdaa:0:1::3', type: 'private_v6' } };
    return {
      body: [
        {
          ...MACHINE,
          private_ip: 'fdaa:0:1:a7b:1::2',
          config: { image: 'x', metadata: { fly_process_group: 'worker' } },
        },
      ],
    };
  });
  const v4 = await cli(['ips', 'allocate-v4', '-a', 'acme'], { apiUrl: server.url });
  expectCode(v4, 1);
  assert.equal(
    v4.stderr,
    'Error: type: dedicated v4 addresses are not offered; use shared_v4\nHint: add --shared: this hangard offers the host’s shared IPv4\n',
  );
  expectCode(
    await cli(['ips', 'allocate-v6', '-a', 'acme', '--private', '--org', 'personal'], { apiUrl: server.url }),
    0,
  );
  assert.deepEqual(server.requests.at(-1)?.body, { type: 'private_v6', org_slug: 'personal' });
  const misuse = await cli(['ips', 'allocate-v6', '-a', 'acme', '--org', 'personal'], { apiUrl: server.url });
  expectCode(misuse, 1);
  assert.match(misuse.stderr, /only apply to private \(Flycast\) addresses\nHint: add --private/);

  const priv = await cli(['ips', 'private', '-a', 'acme'], { apiUrl: server.url });
  expectCode(priv, 0);
  assert.match(
    priv.stdout,
    /^ID\s+REGION\s+PROCESS GROUP\s+STATE\s+PRIVATE IP\nm1\s+local\s+worker\s+started\s+fdaa:0:1:a7b:1::2\n$/,
  );
});

test('volumes snapshots list/create and volumes fork', async (t) => {
  const SNAP = {
    id: 'vs_1',
    size: 2_097_152,
    volume_size: 1,
    status: 'created',
    created_at: '2026-12-01T00:00:00Z',
    retention_days: 5,
  };
  const server = await startFakeServer(t, (req) => {
    if (req.path.endsWith('/snapshots')) return { body: req.method === 'GET' ? [SNAP] : SNAP };
    if (req.method === 'GET')
      return { body: { id: 'vol_1', name: 'data', state: 'created', size_gb: 1, region: 'local' } };
    return { body: { id: 'vol_2', name: 'data', state: 'created', size_gb: 1, region: 'local' } };
  });
  const list = await cli(['volumes', 'snapshots', 'list', 'vol_1', '-a', 'acme'], { apiUrl: server.url });
  expectCode(list, 0);
  assert.match(
    list.stdout,
    /^ID\s+STATUS\s+SIZE\s+VOLUME SIZE\s+CREATED\s+RETENTION\nvs_1\s+created\s+2\.0 MiB\s+1GB\s+2026-12-01T00:00:00Z\s+5 days\n$/,
  );
  const created = await cli(['volumes', 'snapshots', 'create', 'vol_1', '-a', 'acme'], {
    apiUrl: server.url,
  });
  expectCode(created, 0);
  assert.equal(created.stdout, 'Created snapshot vs_1 of vol_1 (created, 2.0 MiB)\n');
  assert.equal(server.requests.at(-1)?.method, 'POST');

  const fork = await cli(['volumes', 'fork', 'vol_1', '-a', 'acme', '--json'], { apiUrl: server.url });
  expectCode(fork, 0);
  assert.equal(JSON.parse(fork.stdout).id, 'vol_2');
  assert.deepEqual(server.requests.at(-1)?.body, { name: 'data', source_volume_id: 'vol_1' });
});

// What commands send to the API and print, then how settings and flag values are parsed.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CliIO } from '../src/io.js';
import { cli, expectCode, startFakeServer } from './helpers.js';

// Loaded after helpers.js, which maps @hangar/sdk to its source (see there).
const { resolveConfig, DEFAULT_TOKEN_FILE } = await import('../src/context.js');
const { parsePorts, buildMachineConfig } = await import('../src/machine-config.js');

const APPS = {
  total_apps: 2,
  apps: [
    { id: 'z4k69dxd8r31p5mx', name: 'acme', machine_count: 2, volume_count: 1, network: 'acme-net' },
    { id: 'q7w2e9r4t6y8u1i3', name: 'billing-api', machine_count: 0, volume_count: 0, network: 'default' },
  ],
};

const MACHINE = {
  id: '1857156b526dd8',
  name: 'aged-thunder-7371',
  state: 'started',
  region: 'local',
  instance_id: '01HEPA330HZ37A78TK080NAK1M',
  private_ip: 'fdaa:0:18:a7b:7d:f066:b83b:2',
  created_at: '2026-11-23T10:00:00.123Z',
  updated_at: '2026-11-23T10:05:00Z',
  config: { image: 'nginx:1.27', guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 256 } },
  image_ref: { registry: 'docker.io', repository: 'library/nginx', tag: '1.27' },
  events: [{ type: 'start', status: 'started', source: 'flyd', timestamp: 1_795_000_000_000 }],
};

test('apps list prints a table', async (t) => {
  const server = await startFakeServer(t, () => ({ body: APPS }));
  const result = await cli(['apps', 'list'], { apiUrl: server.url });
  expectCode(result, 0);
  assert.equal(
    result.stdout,
    [
      'NAME         ID                NETWORK   MACHINES  VOLUMES',
      'acme         z4k69dxd8r31p5mx  acme-net  2         1',
      'billing-api  q7w2e9r4t6y8u1i3  default   0         0',
      '',
    ].join('\n'),
  );
  assert.equal(result.stderr, '');
  const req = server.requests[0];
  assert.equal(req?.path, '/v1/apps');
  assert.equal(req?.url.searchParams.get('org_slug'), 'personal');
  assert.equal(req?.headers.authorization, 'Bearer test-token');
  assert.match(String(req?.headers['user-agent']), /^hangar-cli\//);
});

test('apps list --json prints the API objects and nothing else', async (t) => {
  const server = await startFakeServer(t, () => ({ body: APPS }));
  const result = await cli(['apps', 'list', '--org', 'acme-corp', '--json'], { apiUrl: server.url });
  expectCode(result, 0);
  assert.deepEqual(JSON.parse(result.stdout), APPS.apps);
  assert.equal(server.requests[0]?.url.searchParams.get('org_slug'), 'acme-corp');
});

test('an empty list says so in table form and is [] in JSON', async (t) => {
  const server = await startFakeServer(t, () => ({ body: [] }));
  const table = await cli(['machine', 'list', '-a', 'acme'], { apiUrl: server.url });
  assert.equal(table.stdout, 'No machines in app acme\n');
  const json = await cli(['machine', 'list', '-a', 'acme', '--json'], { apiUrl: server.url });
  assert.deepEqual(JSON.parse(json.stdout), []);
});

test('machine list: table, --json, and the FLY_APP fallback', async (t) => {
  const server = await startFakeServer(t, () => ({ body: [MACHINE] }));
  const table = await cli(['machine', 'list'], { apiUrl: server.url, env: { FLY_APP: 'acme' } });
  expectCode(table, 0);
  assert.equal(server.requests[0]?.path, '/v1/apps/acme/machines');
  const [header, row] = table.stdout.split('\n');
  assert.match(
    header ?? '',
    /^ID\s+NAME\s+STATE\s+REGION\s+IMAGE\s+IP ADDRESS\s+VOLUME\s+CREATED\s+UPDATED$/,
  );
  assert.match(
    row ?? '',
    /^1857156b526dd8\s+aged-thunder-7371\s+started\s+local\s+library\/nginx:1\.27\s+fdaa:/,
  );
  assert.match(row ?? '', /2026-11-23T10:00:00Z/);

  const json = await cli(['m', 'ls', '-a', 'acme', '-j'], { apiUrl: server.url });
  assert.deepEqual(JSON.parse(json.stdout), [MACHINE]);
});

test('machine status shows fields and events; --json shows the machine', async (t) => {
  const server = await startFakeServer(t, () => ({ body: MACHINE }));
  const result = await cli(['machine', 'status', MACHINE.id, '-a', 'acme'], { apiUrl: server.url });
  expectCode(result, 0);
  assert.match(result.stdout, /^ID\s+1857156b526dd8$/m);
  assert.match(result.stdout, /^State\s+started$/m);
  assert.match(result.stdout, /^Memory\s+256 MB$/m);
  assert.match(result.stdout, /^STATE\s+EVENT\s+SOURCE\s+TIMESTAMP/m);
  const json = await cli(['machine', 'status', MACHINE.id, '-a', 'acme', '--json'], { apiUrl: server.url });
  assert.deepEqual(JSON.parse(json.stdout), MACHINE);
});

test('machine run builds the config from flags and waits for started', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    return { body: MACHINE };
  });
  const result = await cli(
    [
      'machine',
      'run',
      'nginx:1.27',
      '-a',
      'acme',
      '--port',
      '80:8080/tcp:http',
      '--port',
      '443:8080/tcp:tls:http',
      '--autostop',
      'suspend',
      '-e',
      'MODE=prod',
      '-e',
      'URL=a=b',
      '--memory',
      '512',
      '--region',
      'local',
      '--',
      'nginx',
      '-g',
      'daemon off;',
    ],
    { apiUrl: server.url },
  );
  expectCode(result, 0);
  const create = server.requests[0];
  assert.equal(create?.method, 'POST');
  assert.equal(create?.path, '/v1/apps/acme/machines');
  assert.deepEqual(create?.body, {
    region: 'local',
    config: {
      image: 'nginx:1.27',
      env: { MODE: 'prod', URL: 'a=b' },
      init: { cmd: ['nginx', '-g', 'daemon off;'] },
      guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 512 },
      restart: { policy: 'always' },
      services: [
        {
          protocol: 'tcp',
          internal_port: 8080,
          ports: [
            { port: 80, handlers: ['http'] },
            { port: 443, handlers: ['tls', 'http'] },
          ],
          autostart: true,
          autostop: 'suspend',
        },
      ],
    },
  });
  const wait = server.requests[1];
  assert.equal(wait?.path, `/v1/apps/acme/machines/${MACHINE.id}/wait`);
  assert.equal(wait?.url.searchParams.get('state'), 'started');
  // One line each, in order, all on stdout (the waiting line once ran into `State: started`).
  assert.equal(
    result.stdout,
    'Machine 1857156b526dd8 (aged-thunder-7371) created in region local\n' +
      'Waiting for 1857156b526dd8 to start...\n' +
      'State: started\n',
  );
  assert.equal(result.stderr, '');
});

test('machine stop passes signal and timeout; several ids are handled in order', async (t) => {
  const server = await startFakeServer(t, () => ({ body: { ok: true } }));
  const result = await cli(
    ['machine', 'stop', 'm1', 'm2', '-a', 'acme', '--signal', 'SIGTERM', '--timeout', '30'],
    {
      apiUrl: server.url,
    },
  );
  expectCode(result, 0);
  assert.deepEqual(
    server.requests.map((r) => [r.path, r.body]),
    [
      ['/v1/apps/acme/machines/m1/stop', { signal: 'SIGTERM', timeout: '30s' }],
      ['/v1/apps/acme/machines/m2/stop', { signal: 'SIGTERM', timeout: '30s' }],
    ],
  );
  assert.equal(result.stdout, 'Machine m1 was stopped\nMachine m2 was stopped\n');
});

test('secrets set --stage only stores; without it machines are updated with min_secrets_version', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path === '/v1/apps/acme/secrets') return { body: { secrets: [], version: 7 } };
    if (req.path === '/v1/apps/acme/machines' && req.method === 'GET') return { body: [MACHINE] };
    if (req.path.endsWith('/wait')) return { body: { ok: true } };
    if (req.path.endsWith('/lease')) {
      return { body: { status: 'success', data: { nonce: 'n1', expires_at: 1_900_000_000 } } };
    }
    if (req.method === 'GET') return { body: MACHINE };
    return { body: { ...MACHINE, instance_id: '01NEWVERSION' } };
  });
  const staged = await cli(['secrets', 'set', 'A=1', 'B=x=y', '-a', 'acme', '--stage'], {
    apiUrl: server.url,
  });
  expectCode(staged, 0);
  assert.deepEqual(server.requests[0]?.body, { values: { A: '1', B: 'x=y' } });
  assert.equal(server.requests.length, 1);
  assert.match(staged.stdout, /version 7/);

  server.requests.length = 0;
  const deployed = await cli(['secrets', 'unset', 'A', '-a', 'acme'], { apiUrl: server.url });
  expectCode(deployed, 0);
  assert.deepEqual(server.requests[0]?.body, { values: { A: null } });
  const update = server.requests.find(
    (r) => r.method === 'POST' && r.path === `/v1/apps/acme/machines/${MACHINE.id}`,
  );
  assert.deepEqual(update?.body, {
    config: MACHINE.config,
    current_version: MACHINE.instance_id,
    min_secrets_version: 7,
  });
  assert.equal(update?.headers['fly-machine-lease-nonce'], 'n1', 'each machine is leased while updated');
  const wait = server.requests.find((r) => r.path.endsWith('/wait'));
  assert.equal(wait?.url.searchParams.get('version'), '01NEWVERSION');
  assert.equal(server.requests.at(-1)?.method, 'DELETE', 'the lease is released');
});

test('tokens create prints only the token; deploy tokens ask for the app’s org', async (t) => {
  const server = await startFakeServer(t, (req) => {
    if (req.path === '/v1/apps/acme')
      return { body: { id: 'a1', name: 'acme', organization: { slug: 'acme-corp' } } };
    return {
      status: 201,
      body: {
        id: 'tok_1',
        token: 'hgr_secret',
        type: 'deploy',
        name: 'ci',
        org_slug: 'acme-corp',
        app_name: 'acme',
        created_at: '2026-11-23T10:00:00Z',
        expires_at: null,
      },
    };
  });
  const result = await cli(['tokens', 'create', 'deploy', '-a', 'acme', '--name', 'ci', '--expiry', '720h'], {
    apiUrl: server.url,
  });
  expectCode(result, 0);
  assert.equal(result.stdout, 'hgr_secret\n');
  assert.deepEqual(server.requests.at(-1)?.body, {
    type: 'deploy',
    org_slug: 'acme-corp',
    app_name: 'acme',
    name: 'ci',
    expiry: '720h',
  });
});

test('ips list infers the type when the server does not send one', async (t) => {
  const server = await startFakeServer(t, () => ({
    body: {
      ips: [
        { ip: 'fdaa:0:18:0:1::3', region: 'global', created_at: '2026-11-23T10:00:00Z', network: 'acme-net' },
        { ip: '203.0.113.7', shared: true, region: 'global' },
      ],
    },
  }));
  const result = await cli(['ips', 'list', '-a', 'acme'], { apiUrl: server.url });
  expectCode(result, 0);
  assert.match(result.stdout, /^v6\s+fdaa:0:18:0:1::3\s+private \(Flycast\)\s+acme-net/m);
  assert.match(result.stdout, /^v4\s+203\.0\.113\.7\s+public \(shared\)/m);
});

const CERT = {
  hostname: 'www.example.com',
  status: 'active',
  source: 'custom',
  created_at: '2026-11-23T10:00:00Z',
  certificates: [
    {
      source: 'custom',
      issuer: 'CN=Example CA',
      subject: 'CN=www.example.com',
      expires_at: '2027-11-23T10:00:00.000Z',
      fingerprint_sha256: 'AB:CD',
    },
  ],
};

test('certs import reads the PEM files and sends them; the key is not printed', async (t) => {
  const server = await startFakeServer(t, () => ({ status: 201, body: CERT }));
  const files = { '/tmp/chain.pem': 'CHAIN-PEM', '/tmp/key.pem': 'KEY-PEM' };
  const result = await cli(
    [
      'certs',
      'import',
      'www.example.com',
      '--fullchain',
      '/tmp/chain.pem',
      '--private-key',
      '/tmp/key.pem',
      '-a',
      'acme',
    ],
    { apiUrl: server.url, files },
  );
  expectCode(result, 0);
  assert.equal(server.requests[0]?.method, 'POST');
  assert.equal(server.requests[0]?.path, '/v1/apps/acme/certificates/custom');
  assert.deepEqual(server.requests[0]?.body, {
    hostname: 'www.example.com',
    fullchain: 'CHAIN-PEM',
    private_key: 'KEY-PEM',
  });
  assert.match(result.stdout, /^Hostname\s+www\.example\.com$/m);
  assert.match(result.stdout, /^Issuer\s+CN=Example CA$/m);
  assert.doesNotMatch(result.stdout + result.stderr, /KEY-PEM/);

  const unreadable = await cli(
    [
      'certs',
      'import',
      'www.example.com',
      '--fullchain',
      '/tmp/none.pem',
      '--private-key',
      '/tmp/key.pem',
      '-a',
      'acme',
    ],
    { apiUrl: server.url, files },
  );
  expectCode(unreadable, 1);
  assert.match(
    unreadable.stderr,
    /^Error: cannot read \/tmp\/none\.pem\nHint: check the path given to --fullchain/,
  );
  assert.equal(server.requests.length, 1);
});

test('certs list, and a hostname another app holds gets its own hint', async (t) => {
  const server = await startFakeServer(t, (req) =>
    req.method === 'GET'
      ? { body: { certificates: [CERT], total_count: 1 } }
      : {
          status: 422,
          body: { error: 'hostname www.example.com is already held by another app', status: 'name_taken' },
        },
  );
  const listed = await cli(['certs', 'list', '-a', 'acme'], { apiUrl: server.url });
  expectCode(listed, 0);
  assert.match(listed.stdout, /^HOSTNAME\s+STATUS\s+SOURCE\s+EXPIRES$/m);
  assert.match(listed.stdout, /^www\.example\.com\s+active\s+custom\s+2027-11-23/m);
  const taken = await cli(
    ['certs', 'import', 'www.example.com', '--fullchain', '/c', '--private-key', '/k', '-a', 'acme'],
    { apiUrl: server.url, files: { '/c': 'C', '/k': 'K' } },
  );
  expectCode(taken, 1);
  assert.match(taken.stderr, /Hint: another app holds this hostname/);
  const refused = await cli(['certs', 'remove', 'www.example.com', '-a', 'acme'], { apiUrl: server.url });
  expectCode(refused, 1);
  assert.match(
    refused.stderr,
    /refusing to remove hostname www\.example\.com from app acme without confirmation/,
  );
});

test('apps destroy asks first: refuses without a terminal, proceeds with --yes', async (t) => {
  const server = await startFakeServer(t, () => ({ status: 202 }));
  const refused = await cli(['apps', 'destroy', 'acme'], { apiUrl: server.url });
  expectCode(refused, 1);
  assert.match(
    refused.stderr,
    /^Error: refusing to destroy app acme and everything in it without confirmation\nHint: pass --yes/,
  );
  assert.equal(server.requests.length, 0);

  const declined = await cli(['apps', 'destroy', 'acme'], {
    apiUrl: server.url,
    interactive: true,
    answers: ['n'],
  });
  expectCode(declined, 1);
  assert.equal(server.requests.length, 0);

  const done = await cli(['apps', 'destroy', 'acme', '--yes'], { apiUrl: server.url });
  expectCode(done, 0);
  assert.equal(server.requests[0]?.method, 'DELETE');
  assert.equal(server.requests[0]?.url.search, '?force=true');
  assert.equal(done.stdout, 'Destroyed app acme\n');
});

// Settings and flag parsing

function io(env: Record<string, string>, files: Record<string, string> = {}): CliIO {
  return {
    stdout: { write: () => true },
    stderr: { write: () => true },
    env,
    interactive: false,
    prompt: async () => '',
    promptSecret: async () => '',
    readFile: (path) => files[path],
    writePrivateFile: () => assert.fail('nothing is written here'),
    removeFile: () => false,
    stdinIsTTY: true,
    readStdin: async () => '',
  };
}

test('API URL: --api-url, then HANGAR_API_URL, then FLY_API_HOSTNAME, then the local default', () => {
  const env = { HANGAR_API_URL: 'http://hangar:1', FLY_API_HOSTNAME: 'api.machines.dev' };
  assert.equal(resolveConfig({ apiUrl: 'http://flag:2' }, io(env)).apiUrl, 'http://flag:2');
  assert.equal(resolveConfig({}, io(env)).apiUrl, 'http://hangar:1');
  assert.equal(resolveConfig({}, io({ FLY_API_HOSTNAME: 'api.machines.dev' })).apiUrl, 'api.machines.dev');
  assert.equal(resolveConfig({}, io({})).apiUrl, 'http://127.0.0.1:4280');
});

test('token: flag, HANGAR_API_TOKEN, FLY_API_TOKEN, FLY_ACCESS_TOKEN, HANGAR_TOKEN_FILE, default file', () => {
  const all = {
    HANGAR_API_TOKEN: 'hangar',
    FLY_API_TOKEN: 'fly-api',
    FLY_ACCESS_TOKEN: 'fly-access',
    HANGAR_TOKEN_FILE: '/etc/tok',
  };
  const files = { '/etc/tok': 'from-file\n', [DEFAULT_TOKEN_FILE]: 'personal\n' };
  const resolve = (flags: { accessToken?: string }, env: Record<string, string>) =>
    resolveConfig(flags, io(env, files));

  assert.deepEqual(
    [resolve({ accessToken: 'flag' }, all).token, resolve({ accessToken: 'flag' }, all).tokenSource],
    ['flag', '--access-token'],
  );
  assert.equal(resolve({}, all).token, 'hangar');
  assert.equal(resolve({}, { ...all, HANGAR_API_TOKEN: '' }).token, 'fly-api');
  assert.equal(
    resolve({}, { FLY_ACCESS_TOKEN: 'fly-access', HANGAR_TOKEN_FILE: '/etc/tok' }).token,
    'fly-access',
  );
  assert.equal(
    resolve({}, { HANGAR_TOKEN_FILE: '/etc/tok' }).token,
    'from-file',
    'file contents are trimmed',
  );
  assert.deepEqual(resolve({}, {}), {
    apiUrl: 'http://127.0.0.1:4280',
    token: 'personal',
    tokenSource: DEFAULT_TOKEN_FILE,
  });
  assert.equal(
    resolveConfig({}, io({})).token,
    undefined,
    'no token anywhere is allowed (the server decides)',
  );
});

test('--port follows flyctl’s grammar and merges ports of one internal port', () => {
  assert.deepEqual(parsePorts(['80:8080/tcp:http', '443:8080/tcp:tls:http', '5432', '1000-1010:7000/udp']), [
    {
      protocol: 'tcp',
      internal_port: 8080,
      ports: [
        { port: 80, handlers: ['http'] },
        { port: 443, handlers: ['tls', 'http'] },
      ],
    },
    { protocol: 'tcp', internal_port: 5432, ports: [{ port: 5432 }] },
    { protocol: 'udp', internal_port: 7000, ports: [{ start_port: 1000, end_port: 1010 }] },
  ]);
  assert.throws(() => parsePorts(['80:8080/tcp:gopher']), /unknown handler "gopher"/);
  assert.throws(() => parsePorts(['http']), /invalid --port/);
});

test('machine config: --rm, volumes, and flag validation', () => {
  assert.deepEqual(
    buildMachineConfig('busybox', ['true'], { rm: true, autostart: true, volume: 'vol_1:/data' }),
    {
      image: 'busybox',
      init: { cmd: ['true'] },
      auto_destroy: true,
      restart: { policy: 'no' },
      mounts: [{ volume: 'vol_1', path: '/data' }],
    },
  );
  assert.throws(
    () => buildMachineConfig('x', [], { autostart: true, memory: 'lots' }),
    /--memory must be a whole number/,
  );
  assert.throws(() => buildMachineConfig('x', [], { autostart: true, autostop: 'stop' }), /--autostop needs/);
  assert.throws(() => buildMachineConfig('x', [], { autostart: true, volume: 'vol_1' }), /invalid --volume/);
  assert.throws(
    () => buildMachineConfig('x', [], { autostart: true, env: ['NOVALUE'] }),
    /invalid environment variable "NOVALUE"/,
  );
});

test('machine exec prints the output and exits with the command’s exit code', async (t) => {
  const server = await startFakeServer(t, () => ({
    body: { exit_code: 3, exit_signal: null, stdout: 'out\n', stderr: 'err\n' },
  }));
  const result = await cli(
    ['machine', 'exec', 'm1', '-a', 'acme', '--timeout', '1m', '--', 'sh', '-c', 'exit 3'],
    {
      apiUrl: server.url,
    },
  );
  assert.equal(result.code, 3);
  assert.equal(result.stdout, 'out\n');
  assert.equal(result.stderr, 'err\n');
  assert.deepEqual(server.requests[0]?.body, { command: ['sh', '-c', 'exit 3'], timeout: 60 });
  expectCode(
    await cli(['machine', 'exec', 'm1', '-a', 'acme', '--timeout', 'soon', '--', 'true'], {
      apiUrl: server.url,
    }),
    1,
  );
});

test('machine logs prints the lines of the NDJSON stream; -n and --follow go to the query', async (t) => {
  const server = await startFakeServer(t, () => ({
    body: '{"instance":"m1","message":"first"}\n{"instance":"m1","message":"second"}\n',
  }));
  const result = await cli(['machine', 'logs', 'm1', '-a', 'acme', '-n', '2'], { apiUrl: server.url });
  expectCode(result, 0);
  assert.equal(result.stdout, 'first\nsecond\n');
  assert.equal(server.requests[0]?.url.search, '?tail=2');
  const json = await cli(['machine', 'logs', 'm1', '-a', 'acme', '--follow', '--json'], {
    apiUrl: server.url,
  });
  assert.equal(json.stdout.split('\n')[0], '{"instance":"m1","message":"first"}');
  assert.equal(server.requests[1]?.url.search, '?tail=100&follow=true');
});

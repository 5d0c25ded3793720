import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';

/**
 * The API fuzz test: a seeded, deterministic generator sends mutated paths, queries and bodies to every
 * route and checks that nothing answers 5xx, that every 4xx carries Fly's error body, that no connection
 * is dropped (except after an early 413 for a body over the limit), and that the store holds no partial
 * record afterwards. HANGAR_FUZZ_COUNT and HANGAR_FUZZ_SEED run more or other cases locally.
 */
const COUNT = Number(process.env.HANGAR_FUZZ_COUNT ?? 2000);
const SEED = Number(process.env.HANGAR_FUZZ_SEED ?? 20261204);
const BODY_LIMIT = 1024 * 1024;

/** mulberry32: a small PRNG, enough to make every run of one seed send the same requests. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Fixture {
  app: string;
  machine: string;
  volume: string;
  secret: string;
  ip: string;
  token: string;
}

type Template = (f: Fixture) => unknown;
const machineConfig = {
  image: 'registry.example/app:1',
  env: { A: 'b' },
  guest: { cpus: 1, memory_mb: 256 },
  services: [{ protocol: 'tcp', internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }] }],
  checks: { web: { type: 'http', port: 8080, interval: '10s', timeout: '2s', path: '/' } },
  restart: { policy: 'on-failure', max_retries: 3 },
  stop_config: { signal: 'SIGTERM', timeout: '10s' },
  metadata: { role: 'web' },
  files: [{ guest_path: '/etc/x', raw_value: 'aGk=' }],
};

/** Every route of the API with a valid body to mutate; the table is checked against the server below. */
const ROUTES: { method: string; url: string; body?: Template; mutatePath?: true }[] = [
  { method: 'POST', url: '/v1/apps', body: () => ({ app_name: 'fuzzed', org_slug: 'personal' }) },
  { method: 'GET', url: '/v1/apps?org_slug=personal' },
  { method: 'GET', url: '/v1/apps/:app_name' },
  { method: 'DELETE', url: '/v1/apps/:app_name' },
  { method: 'GET', url: '/v1/apps/:app_name/ip_assignments' },
  { method: 'POST', url: '/v1/apps/:app_name/ip_assignments', body: () => ({ type: 'private_v6' }) },
  { method: 'DELETE', url: '/v1/apps/:app_name/ip_assignments/:ip' },
  { method: 'GET', url: '/v1/apps/:app_name/machines' },
  {
    method: 'POST',
    url: '/v1/apps/:app_name/machines',
    body: () => ({ config: machineConfig, skip_launch: true, lease_ttl: 10 }),
  },
  { method: 'GET', url: '/v1/apps/:app_name/machines/:machine_id' },
  {
    method: 'POST',
    url: '/v1/apps/:app_name/machines/:machine_id',
    body: () => ({ config: machineConfig, skip_launch: true }),
  },
  { method: 'DELETE', url: '/v1/apps/:app_name/machines/:machine_id' },
  { method: 'POST', url: '/v1/apps/:app_name/machines/:machine_id/start' },
  {
    method: 'POST',
    url: '/v1/apps/:app_name/machines/:machine_id/stop',
    body: () => ({ signal: 'SIGTERM', timeout: '1s' }),
  },
  { method: 'POST', url: '/v1/apps/:app_name/machines/:machine_id/suspend' },
  { method: 'POST', url: '/v1/apps/:app_name/machines/:machine_id/restart?timeout=1' },
  {
    method: 'POST',
    url: '/v1/apps/:app_name/machines/:machine_id/signal',
    body: () => ({ signal: 'SIGHUP' }),
  },
  {
    method: 'GET',
    url: '/v1/apps/:app_name/machines/:machine_id/wait?state=started,stopped,suspended,created,failed,destroyed&timeout=1',
  },
  { method: 'POST', url: '/v1/apps/:app_name/machines/:machine_id/cordon' },
  { method: 'POST', url: '/v1/apps/:app_name/machines/:machine_id/uncordon' },
  {
    method: 'POST',
    url: '/v1/apps/:app_name/machines/:machine_id/lease',
    body: () => ({ ttl: 5, description: 'fuzz' }),
  },
  { method: 'GET', url: '/v1/apps/:app_name/machines/:machine_id/lease' },
  { method: 'DELETE', url: '/v1/apps/:app_name/machines/:machine_id/lease' },
  { method: 'GET', url: '/v1/apps/:app_name/machines/:machine_id/metadata' },
  {
    method: 'POST',
    url: '/v1/apps/:app_name/machines/:machine_id/metadata/:key',
    body: () => ({ value: 'v' }),
  },
  { method: 'DELETE', url: '/v1/apps/:app_name/machines/:machine_id/metadata/:key' },
  {
    method: 'PATCH',
    url: '/v1/apps/:app_name/machines/:machine_id/metadata',
    body: () => ({ metadata: { tier: 'x', gone: null } }),
  },
  { method: 'GET', url: '/v1/apps/:app_name/machines/:machine_id/events?limit=5' },
  { method: 'GET', url: '/v1/apps/:app_name/machines/:machine_id/versions?limit=5' },
  { method: 'GET', url: '/v1/apps/:app_name/machines/:machine_id/ps' },
  { method: 'GET', url: '/v1/apps/:app_name/machines/:machine_id/logs?tail=5' },
  {
    method: 'POST',
    url: '/v1/apps/:app_name/machines/:machine_id/exec',
    body: () => ({ command: ['true'], timeout: 1 }),
  },
  { method: 'GET', url: '/v1/apps/:app_name/volumes' },
  { method: 'POST', url: '/v1/apps/:app_name/volumes', body: () => ({ name: 'fuzz_data', size_gb: 1 }) },
  { method: 'GET', url: '/v1/apps/:app_name/volumes/:volume_id' },
  { method: 'PUT', url: '/v1/apps/:app_name/volumes/:volume_id', body: () => ({ snapshot_retention: 5 }) },
  { method: 'POST', url: '/v1/apps/:app_name/volumes/:volume_id', body: () => ({ snapshot_retention: 5 }) },
  { method: 'PUT', url: '/v1/apps/:app_name/volumes/:volume_id/extend', body: () => ({ size_gb: 2 }) },
  { method: 'DELETE', url: '/v1/apps/:app_name/volumes/:volume_id' },
  { method: 'GET', url: '/v1/apps/:app_name/volumes/:volume_id/snapshots' },
  // Each valid snapshot copies the volume (seconds): the fuzz sends this one only with a mutated path.
  { method: 'POST', url: '/v1/apps/:app_name/volumes/:volume_id/snapshots', mutatePath: true },
  { method: 'GET', url: '/v1/apps/:app_name/secrets' },
  { method: 'POST', url: '/v1/apps/:app_name/secrets', body: () => ({ values: { K: 'v', OLD: null } }) },
  { method: 'GET', url: '/v1/apps/:app_name/secrets/:secret_name' },
  { method: 'POST', url: '/v1/apps/:app_name/secrets/:secret_name', body: () => ({ value: 'v' }) },
  { method: 'DELETE', url: '/v1/apps/:app_name/secrets/:secret_name' },
  {
    method: 'POST',
    url: '/v1/tokens',
    body: () => ({ type: 'readonly', org_slug: 'personal', name: 'fuzz', expiry: '1h' }),
  },
  { method: 'GET', url: '/v1/tokens?org_slug=personal' },
  { method: 'GET', url: '/v1/tokens/current' },
  { method: 'DELETE', url: '/v1/tokens/:token_id' },
  { method: 'POST', url: '/v1/apps/:app_name/deploy_token', body: () => ({ expiry: '1h' }) },
  { method: 'GET', url: '/v1/platform/regions' },
  { method: 'GET', url: '/v1/platform/version' },
];

const PATH_MUTATIONS = [
  '%25',
  '%2F',
  '%2f..%2f',
  '..',
  '%2e%2e',
  '.',
  '%00',
  '%E0%A4%A',
  '%C0%AF',
  'x'.repeat(3000),
  encodeURIComponent('ü🚀名前'),
  '%20',
  '-1',
  'null',
  '%3Cscript%3E',
  "'%20OR%201=1--",
];
const VALUE_MUTATIONS: unknown[] = [
  null,
  true,
  -1,
  0,
  1.5,
  1e308,
  -1e308,
  Number.MAX_SAFE_INTEGER + 2,
  'NaN',
  'Infinity',
  '-1',
  '',
  '99999999999h',
  '999999999h',
  '1e309',
  'x'.repeat(70_000),
  'ü🚀\u0000\u202e',
  [],
  [1, 'a', null],
  {},
  { nested: { deeper: [1, 2, { x: null }] } },
  Array.from({ length: 5000 }, (_, i) => i),
];
const QUERY_KEYS = [
  'limit',
  'timeout',
  'state',
  'force',
  'kill',
  'tail',
  'summary',
  'org_slug',
  'include_deleted',
  'region',
  'signal',
  'ttl',
  'version',
  'instance_id',
  'metadata.role',
  'min_secrets_version',
];
const QUERY_VALUES = [
  '-1',
  '0',
  '1e309',
  'NaN',
  '',
  'true',
  'maybe',
  '99999999999h',
  '%25',
  '%ZZ',
  'x'.repeat(2000),
  encodeURIComponent('ü🚀'),
  '1.5',
  '100000000',
];

/** Deeply nested JSON, written as text (JSON.stringify would overflow its own stack). */
const deep = (depth: number) => `${'{"a":['.repeat(depth)}1${']}'.repeat(depth)}`;

class Generator {
  readonly #random: () => number;
  constructor(seed: number) {
    this.#random = prng(seed);
  }
  int(n: number): number {
    return Math.floor(this.#random() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.#random() < p;
  }

  /** A mutated value, copied so that later mutations never change the table. */
  value(): unknown {
    return structuredClone(this.pick(VALUE_MUTATIONS));
  }

  /** Replaces, removes or adds one field somewhere in the body (or replaces the whole body). */
  mutateBody(body: unknown): unknown {
    const roll = this.int(10);
    if (roll === 0) return this.value();
    const copy = structuredClone(body ?? {}) as Record<string, unknown>;
    const times = 1 + this.int(3);
    for (let i = 0; i < times; i++) this.#mutateSomewhere(copy);
    return copy;
  }

  #mutateSomewhere(root: Record<string, unknown>): void {
    let node: unknown = root;
    // Walk down a random path of objects and arrays.
    for (let depth = 0; depth < 4; depth++) {
      if (typeof node !== 'object' || node === null) break;
      const keys = Object.keys(node);
      if (keys.length === 0 || this.chance(0.35)) break;
      const next = (node as Record<string, unknown>)[this.pick(keys)];
      if (typeof next !== 'object' || next === null) break;
      node = next;
    }
    if (typeof node !== 'object' || node === null) return;
    const target = node as Record<string, unknown>;
    const keys = Object.keys(target);
    const roll = this.int(4);
    if (roll === 0 || keys.length === 0) target[`extra_${this.int(100)}`] = this.value();
    else if (roll === 1) delete target[this.pick(keys)];
    else target[this.pick(keys)] = this.value();
  }
}

interface Sent {
  status: number;
  text: string;
  dropped: boolean;
}

/** One request with a raw path (no URL normalization of `..` or escapes) over a fresh connection. */
function send(base: URL, method: string, path: string, token: string, body?: string): Promise<Sent> {
  return new Promise((resolve) => {
    const headers: Record<string, string | number> = { authorization: `Bearer ${token}` };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(body);
    }
    const req = httpRequest(
      { host: base.hostname, port: base.port, method, path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString(), dropped: false }),
        );
        res.on('error', () => resolve({ status: res.statusCode ?? 0, text: '', dropped: true }));
      },
    );
    req.setTimeout(15_000, () => req.destroy(new Error('timed out')));
    req.on('error', () => resolve({ status: 0, text: '', dropped: true }));
    req.end(body);
  });
}

async function fixture(h: TestHangard): Promise<Fixture> {
  const app = await createApp(h, 'fz');
  const machine = await h.call('POST', `/v1/apps/${app}/machines`, {
    config: machineConfig,
    skip_launch: true,
  });
  assert.equal(machine.status, 200, JSON.stringify(machine.body));
  const volume = await h.call('POST', `/v1/apps/${app}/volumes`, { name: 'fz_data' });
  assert.equal(volume.status, 200, JSON.stringify(volume.body));
  assert.equal((await h.call('POST', `/v1/apps/${app}/secrets/S1`, { value: 'x' })).status < 300, true);
  const ip = await h.call('POST', `/v1/apps/${app}/ip_assignments`, { type: 'private_v6' });
  assert.equal(ip.status, 200, JSON.stringify(ip.body));
  const token = await h.call('POST', '/v1/tokens', { type: 'readonly', org_slug: 'personal' });
  assert.equal(token.status, 201, JSON.stringify(token.body));
  return {
    app,
    machine: machine.body.id,
    volume: volume.body.id,
    secret: 'S1',
    ip: ip.body.ip,
    token: token.body.token_id ?? token.body.id,
  };
}

function fillPath(url: string, f: Fixture, g: Generator, mutate: boolean): string {
  const [path, query] = url.split('?') as [string, string | undefined];
  const names = [...path.matchAll(/:([a-z_]+)/g)].map((m) => m[1]!);
  const valid: Record<string, string> = {
    app_name: f.app,
    machine_id: f.machine,
    volume_id: f.volume,
    secret_name: f.secret,
    ip: encodeURIComponent(f.ip),
    token_id: f.token,
    key: 'role',
  };
  // Deleting a fixture with a valid path would leave later cases nothing to mutate: those always mutate.
  const mutated = new Set<string>();
  if (names.length > 0 && mutate) mutated.add(g.pick(names));
  let filled = path;
  for (const name of names) {
    filled = filled.replace(`:${name}`, mutated.has(name) ? g.pick(PATH_MUTATIONS) : valid[name]!);
  }
  let search = query ?? '';
  if (g.chance(0.5)) {
    const extra = Array.from(
      { length: 1 + g.int(3) },
      () => `${g.pick(QUERY_KEYS)}=${g.pick(QUERY_VALUES)}`,
    ).join('&');
    search = search ? `${search}&${extra}` : extra;
  }
  // Never a long-poll or a followed stream: the fuzz sends one request at a time.
  search = search.replace(/(^|&)(timeout|follow)=[^&]*/g, '$1$2=1').replace('follow=1', 'follow=false');
  if (path.endsWith('/wait') && !search.includes('timeout=')) search += '&timeout=1';
  return search ? `${filled}?${search}` : filled;
}

test('API fuzz: mutated paths, queries and bodies to every route get 4xx (never 5xx), Fly-shaped, and leave no partial record', async (t) => {
  // A fake runtime, so that start, exec, ps and logs reach their handlers instead of the 501 of a host
  // without one.
  const h = await startTestHangard(t, { runtime: new FakeRuntime() });
  const f = await fixture(h);
  const slow: [number, string][] = [];
  const base = new URL(h.url);
  const g = new Generator(SEED);
  const failures: string[] = [];
  const statuses = new Map<number, number>();
  let sent = 0;
  for (let i = 0; i < COUNT; i++) {
    const route = ROUTES[i % ROUTES.length]!;
    const mutatePath = route.method === 'DELETE' || route.mutatePath === true || g.chance(0.4);
    const path = fillPath(route.url, f, g, mutatePath);
    let body: string | undefined;
    if (route.method !== 'GET') {
      const roll = g.int(20);
      if (roll === 0) body = `{"padding":"${'x'.repeat(3 * 1024 * 1024)}"}`;
      else if (roll === 1) body = '{"config": {"image": ';
      else if (roll === 2) body = undefined;
      else if (roll === 3) body = deep(g.pick([100, 5000, 50_000]));
      else body = JSON.stringify(g.mutateBody(route.body?.(f)));
    }
    const started = performance.now();
    const answer = await send(base, route.method, path, h.token, body);
    slow.push([performance.now() - started, `${route.method} ${path.slice(0, 80)} ${body?.slice(0, 60)}`]);
    sent++;
    statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
    const what = `${route.method} ${path.slice(0, 200)} ${body?.slice(0, 200) ?? ''}`;
    const oversized = body !== undefined && Buffer.byteLength(body) > BODY_LIMIT;
    if (answer.dropped) {
      if (!(oversized && (answer.status === 413 || answer.status === 0))) failures.push(`dropped: ${what}`);
      continue;
    }
    if (answer.status >= 500 || answer.status === 0)
      failures.push(`${answer.status}: ${what}: ${answer.text}`);
    if (answer.status >= 400) {
      let parsed: { error?: unknown; status?: unknown } | undefined;
      try {
        parsed = JSON.parse(answer.text);
      } catch {
        parsed = undefined;
      }
      if (typeof parsed?.error !== 'string' || typeof parsed.status !== 'string') {
        failures.push(`not Fly-shaped ${answer.status}: ${what}: ${answer.text.slice(0, 200)}`);
      }
    }
  }
  const summary = [...statuses.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`);
  slow.sort(([a], [b]) => b - a);
  if (process.env.HANGAR_FUZZ_SLOW)
    for (const [ms, what] of slow.slice(0, 15)) t.diagnostic(`${ms.toFixed(0)} ms ${what}`);
  t.diagnostic(`fuzz: ${sent} requests (seed ${SEED}): ${summary.join(' ')}`);
  assert.deepEqual(failures.slice(0, 20), [], `${failures.length} failure(s)`);

  // No partial record: every record's references resolve.
  await h.close();
  const store = new SqliteStore({ path: join(h.dataDir, 'hangar.db') });
  t.after(() => store.close());
  const problems = await store.read((tx) => {
    const found: string[] = [];
    const networks = new Set(tx.networks.list().map((n) => n.id));
    for (const app of tx.apps.list()) {
      if (!tx.orgs.get(app.orgId)) found.push(`app ${app.name} has no org`);
      if (!networks.has(app.networkId)) found.push(`app ${app.name} has no network`);
    }
    for (const machine of tx.machines.list()) {
      if (!tx.apps.get(machine.appId)) found.push(`machine ${machine.id} has no app`);
      const versions = tx.machineVersions.list({ machineId: machine.id });
      if (!versions.some((v) => v.version === machine.instanceId)) {
        found.push(`machine ${machine.id} has no record of its version ${machine.instanceId}`);
      }
    }
    for (const volume of tx.volumes.list()) {
      if (!tx.apps.get(volume.appId)) found.push(`volume ${volume.id} has no app`);
      if (volume.attachedMachineId && !tx.machines.get(volume.attachedMachineId)) {
        found.push(`volume ${volume.id} is attached to a missing machine`);
      }
    }
    for (const secret of tx.secrets.list()) {
      if (!tx.apps.get(secret.appId)) found.push(`secret ${secret.name} has no app`);
    }
    for (const ip of tx.ipAssignments.list()) {
      if (!tx.apps.get(ip.appId)) found.push(`ip ${ip.ip} has no app`);
    }
    for (const lease of tx.leases.list()) {
      if (!tx.machines.get(lease.machineId)) found.push(`lease of ${lease.machineId} has no machine`);
    }
    for (const token of tx.tokens.list()) {
      if (!tx.orgs.get(token.orgId)) found.push(`token ${token.id} has no org`);
      if (token.appId && !tx.apps.get(token.appId)) found.push(`token ${token.id} has no app`);
    }
    return found;
  });
  assert.deepEqual(problems, []);
});

test('regressions: a huge token expiry and a twice-decoded path parameter are 400 and 404, not 500', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'reg');
  const expiry = await h.call('POST', '/v1/apps/reg/deploy_token', { expiry: '99999999999h' });
  assert.equal(expiry.status, 400);
  assert.match(expiry.body.error, /^expiry: at most 175200h/);
  const created = await h.call('POST', '/v1/tokens', {
    type: 'org',
    org_slug: 'personal',
    expiry: '175201h',
  });
  assert.equal(created.status, 400);
  const ip = await send(new URL(h.url), 'DELETE', '/v1/apps/reg/ip_assignments/%25', h.token);
  assert.equal(ip.status, 404, ip.text);
  assert.equal(JSON.parse(ip.text).status, 'not_found');
});

test('bounds: durations, counts and sizes past their bound are 400s that name the field and the bound', async (t) => {
  const h = await startTestHangard(t);
  await createApp(h, 'bnd');
  const config = { image: 'registry.example/app:1' };
  const refused = async (body: unknown, pattern: RegExp) => {
    const response = await h.call('POST', '/v1/apps/bnd/machines', { config: body, skip_launch: true });
    assert.equal(response.status, 400, JSON.stringify(response.body));
    assert.match(response.body.error, pattern);
  };
  await refused(
    { ...config, stop_config: { timeout: '999999999h' } },
    /^config\.stop_config\.timeout: at most 5m/,
  );
  await refused({ ...config, stop_config: { timeout: 301e9 } }, /stop_config\.timeout: at most 5m/);
  await refused({ ...config, restart: { max_retries: 1e6 } }, /restart\.max_retries/);
  await refused({ ...config, checks: { c: { interval: '2h' } } }, /checks\.c\.interval: at most 1h/);
  const env = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`V${i}`, 'x']));
  await refused({ ...config, env }, /^config\.env: at most 256 entries/);
  const files = Array.from({ length: 65 }, (_, i) => ({ guest_path: `/f${i}`, raw_value: 'aGk=' }));
  await refused({ ...config, files }, /^config\.files: at most 64 items/);
  await refused({ ...config, metadata: { k: 'v'.repeat(70_000) } }, /^config\.metadata\.k: at most 65536/);

  const ok = await h.call('POST', '/v1/apps/bnd/machines', {
    config: { ...config, stop_config: { timeout: '5m' } },
    skip_launch: true,
  });
  assert.equal(ok.status, 200, 'the bound itself is accepted');
  const id = ok.body.id;
  const restart = await h.call('POST', `/v1/apps/bnd/machines/${id}/restart?timeout=999999999h`);
  assert.equal(restart.status, 400);
  assert.match(restart.body.error, /^timeout: at most 300s/);
  const stop = await h.call('POST', `/v1/apps/bnd/machines/${id}/stop`, { timeout: '999999999h' });
  assert.equal(stop.status, 400);
  assert.equal((await h.call('GET', `/v1/apps/bnd/machines/${id}/versions?limit=5000`)).status, 400);
  for (let i = 0; i < 3; i++) {
    const update = await h.call('POST', `/v1/apps/bnd/machines/${id}`, {
      config: { ...config, env: { N: String(i) } },
      skip_launch: true,
    });
    assert.equal(update.status, 200, JSON.stringify(update.body));
  }
  const page = await h.call('GET', `/v1/apps/bnd/machines/${id}/versions?limit=2`);
  assert.equal(page.status, 200);
  assert.equal(page.body.length, 2, 'versions come in pages of `limit`');
  assert.equal((await h.call('GET', `/v1/apps/bnd/machines/${id}/versions`)).body.length, 4);
  const lease = await h.call('POST', `/v1/apps/bnd/machines/${id}/lease`, { ttl: 10 ** 9 });
  assert.equal(lease.status, 400);
  assert.match(lease.body.error, /^ttl: /);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  authorizationHeader,
  isMachinesApiError,
  MachinesApiError,
  MachinesClient,
  type MachinesClientOptions,
  parseRetryAfter,
  resolveBaseUrl,
  TokenBucket,
} from '../src/index.js';
import { closedPort, sequence, startFakeServer } from './fake-server.js';

/** No client-side rate limit and tiny backoff, so retry tests stay fast. */
const FAST: MachinesClientOptions = { rateLimit: false, retries: { minDelayMs: 5, maxDelayMs: 20 } };

function withEnv(t: import('node:test').TestContext, vars: Record<string, string | undefined>): void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  t.after(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

test('auth header: FlyV1 for Fly macaroons, Bearer for anything else', async (t) => {
  assert.equal(authorizationHeader('fm2_abc'), 'FlyV1 fm2_abc');
  assert.equal(authorizationHeader('fm1r_abc'), 'FlyV1 fm1r_abc');
  assert.equal(authorizationHeader('fm1a_abc'), 'FlyV1 fm1a_abc');
  assert.equal(authorizationHeader('fm2_a,fm2_b'), 'FlyV1 fm2_a,fm2_b');
  assert.equal(authorizationHeader('hgr_abc'), 'Bearer hgr_abc');
  assert.equal(authorizationHeader('fo1_user'), 'Bearer fo1_user');
  // flyctl prints tokens with their scheme; one that already has it is sent unchanged.
  assert.equal(authorizationHeader('FlyV1 fm2_abc'), 'FlyV1 fm2_abc');

  const server = await startFakeServer(t, () => ({ body: { total_apps: 0, apps: [] } }));
  await new MachinesClient({ ...FAST, baseUrl: server.url, token: 'fm2_secret' }).apps.list();
  await new MachinesClient({ ...FAST, baseUrl: server.url, token: 'plain-token' }).apps.list();
  assert.equal(server.requests[0]?.headers.authorization, 'FlyV1 fm2_secret');
  assert.equal(server.requests[1]?.headers.authorization, 'Bearer plain-token');
});

test('token and base URL fall back to FLY_API_TOKEN and FLY_API_HOSTNAME', async (t) => {
  const server = await startFakeServer(t, () => ({ body: { total_apps: 0, apps: [] } }));
  withEnv(t, { FLY_API_TOKEN: 'from-env', FLY_API_HOSTNAME: server.url });
  const client = new MachinesClient(FAST);
  assert.equal(client.baseUrl, server.url);
  await client.apps.list('acme');
  const req = server.requests[0];
  assert.equal(req?.headers.authorization, 'Bearer from-env');
  assert.equal(req?.url.searchParams.get('org_slug'), 'acme');
  assert.match(String(req?.headers['user-agent']), /^hangar-sdk\//);
});

test('no Authorization header without a token', async (t) => {
  withEnv(t, { FLY_API_TOKEN: undefined });
  const server = await startFakeServer(t, () => ({ body: { total_apps: 0, apps: [] } }));
  await new MachinesClient({ ...FAST, baseUrl: server.url }).apps.list();
  assert.equal(server.requests[0]?.headers.authorization, undefined);
});

test('resolveBaseUrl: option, env without scheme, default', (t) => {
  withEnv(t, { FLY_API_HOSTNAME: undefined });
  assert.equal(resolveBaseUrl(), 'http://127.0.0.1:4280');
  assert.equal(resolveBaseUrl('http://localhost:9999/'), 'http://localhost:9999');
  withEnv(t, { FLY_API_HOSTNAME: 'api.machines.dev' });
  assert.equal(resolveBaseUrl(), 'https://api.machines.dev');
});

test('errors carry status, code, request id and a readable message', async (t) => {
  const server = await startFakeServer(t, () => ({
    status: 404,
    body: { error: 'app not found', status: 'not_found' },
  }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url, token: 't' });
  const err = await client.apps.get('nope').then(
    () => assert.fail('expected an error'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof MachinesApiError);
  assert.ok(isMachinesApiError(err, 'not_found'));
  assert.equal(isMachinesApiError(err, 'name_taken'), false);
  assert.equal(err.status, 404);
  assert.equal(err.code, 'not_found');
  assert.equal(err.requestId, 'req-0');
  assert.equal(err.detail, 'app not found');
  assert.deepEqual(err.body, { error: 'app not found', status: 'not_found' });
  assert.equal(err.message, 'GET /v1/apps/nope failed (HTTP 404): app not found');
  assert.equal(server.requests.length, 1, '4xx is never retried');
});

test('error parsing: message preferred over error, unknown code, non-JSON bodies', async (t) => {
  const server = await startFakeServer(
    t,
    sequence(
      { status: 409, body: { error: 'short', message: 'lease held by someone else' } },
      { status: 400, body: 'plain text problem' },
    ),
  );
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const first = await client.machines.get('app', 'm1').catch((e: unknown) => e);
  assert.ok(isMachinesApiError(first));
  assert.equal(first.code, 'unknown');
  assert.equal(first.detail, 'lease held by someone else');
  const second = await client.machines.get('app', 'm1').catch((e: unknown) => e);
  assert.ok(isMachinesApiError(second));
  assert.equal(second.status, 400);
  assert.match(second.message, /plain text problem/);
});

test('the brand works across copies of the class', () => {
  const foreign = Object.assign(new Error('x'), { code: 'not_found' });
  assert.equal(isMachinesApiError(foreign), false);
  const err = new MachinesApiError({ method: 'GET', path: '/v1/x', status: 500 });
  // A structured clone loses the prototype, as a second copy of the SDK would; the symbol survives.
  const lookalike = Object.create(Error.prototype, Object.getOwnPropertyDescriptors(err));
  assert.equal(isMachinesApiError(lookalike), true);
  assert.equal(err.code, 'unknown');
});

test('429 is retried after Retry-After, for POST too', async (t) => {
  const server = await startFakeServer(
    t,
    sequence(
      {
        status: 429,
        headers: { 'retry-after': '0.2' },
        body: { error: 'slow down', status: 'rate_limited' },
      },
      { status: 200, body: { id: 'm1', name: 'a', state: 'created', region: 'local', instance_id: 'v1' } },
    ),
  );
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const started = Date.now();
  const machine = await client.machines.launch('app', { config: { image: 'nginx' } });
  const elapsed = Date.now() - started;
  assert.equal(machine.id, 'm1');
  assert.equal(server.requests.length, 2);
  assert.ok(elapsed >= 180, `waited ${elapsed} ms, Retry-After asked for 200`);
});

test('a Retry-After longer than maxRetryAfterMs fails at once with retryAfterMs', async (t) => {
  const server = await startFakeServer(t, () => ({
    status: 429,
    headers: { 'retry-after': '120' },
    body: { error: 'slow down', status: 'rate_limited' },
  }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const err = await client.apps.list().catch((e: unknown) => e);
  assert.ok(isMachinesApiError(err, 'rate_limited'));
  assert.equal(err.retryAfterMs, 120_000);
  assert.equal(server.requests.length, 1);
});

test('parseRetryAfter reads seconds and HTTP dates', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('3', now), 3000);
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now), 5000);
  assert.equal(parseRetryAfter('Wed, 31 Dec 2025 00:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter('soon', now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
});

test('GET is retried on 5xx with backoff until it succeeds', async (t) => {
  const server = await startFakeServer(
    t,
    sequence({ status: 503 }, { status: 500, body: { error: 'boom' } }, { status: 200, body: [] }),
  );
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  assert.deepEqual(await client.machines.list('app'), []);
  assert.equal(server.requests.length, 3);
});

test('GET gives up after maxAttempts and reports the last error', async (t) => {
  const server = await startFakeServer(t, () => ({ status: 500, body: { error: 'still broken' } }));
  const client = new MachinesClient({
    ...FAST,
    baseUrl: server.url,
    retries: { maxAttempts: 3, minDelayMs: 1 },
  });
  const err = await client.machines.list('app').catch((e: unknown) => e);
  assert.ok(isMachinesApiError(err));
  assert.equal(err.status, 500);
  assert.equal(err.detail, 'still broken');
  assert.equal(server.requests.length, 3);
});

test('501 is not retried', async (t) => {
  const server = await startFakeServer(t, () => ({ status: 501, body: { error: 'not implemented' } }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  await assert.rejects(client.machines.list('app'), { status: 501 });
  assert.equal(server.requests.length, 1);
});

test('POST is not retried on 500 (the action may have happened)', async (t) => {
  const server = await startFakeServer(t, () => ({ status: 500, body: { error: 'half done' } }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  await assert.rejects(client.machines.start('app', 'm1'), { status: 500 });
  assert.equal(server.requests.length, 1);
});

test('POST is retried on 502/503/504', async (t) => {
  const server = await startFakeServer(
    t,
    sequence({ status: 502 }, { status: 504 }, { status: 200, body: { previous_state: 'stopped' } }),
  );
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  assert.deepEqual(await client.machines.start('app', 'm1'), { previous_state: 'stopped' });
  assert.equal(server.requests.length, 3);
});

test('network errors: code network_error; GET retried, POST not', async () => {
  const port = await closedPort();
  let calls = 0;
  const countingFetch: typeof fetch = (input, init) => {
    calls++;
    return fetch(input, init);
  };
  const client = new MachinesClient({ ...FAST, baseUrl: `http://127.0.0.1:${port}`, fetch: countingFetch });

  const getErr = await client.apps.list().catch((e: unknown) => e);
  assert.ok(isMachinesApiError(getErr, 'network_error'));
  assert.equal(getErr.status, 0);
  assert.match(getErr.message, /ECONNREFUSED/);
  assert.equal(calls, 4, 'GET tried maxAttempts (4) times');

  calls = 0;
  await assert.rejects(client.machines.start('app', 'm1'), { code: 'network_error' });
  assert.equal(calls, 1, 'POST tried once');
});

test('an aborted call rejects with the caller’s reason and is not retried', async (t) => {
  const server = await startFakeServer(t, () => ({ status: 200, body: [], delayMs: 2_000 }));
  const client = new MachinesClient({ ...FAST, baseUrl: server.url });
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error('user gave up')), 50);
  await assert.rejects(client.machines.list('app', {}, { signal: controller.signal }), /user gave up/);
  assert.equal(server.requests.length, 1);
});

test('retries: false sends each call once', async (t) => {
  const server = await startFakeServer(t, () => ({ status: 503 }));
  const client = new MachinesClient({ baseUrl: server.url, rateLimit: false, retries: false });
  await assert.rejects(client.machines.list('app'), { status: 503 });
  assert.equal(server.requests.length, 1);
});

// Client-side rate limiting

test('token bucket: burst is free, then one token per 1/rate seconds', () => {
  let now = 0;
  const bucket = new TokenBucket({ requestsPerSecond: 10, burst: 3 }, () => now);
  assert.equal(bucket.reserve(), 0);
  assert.equal(bucket.reserve(), 0);
  assert.equal(bucket.reserve(), 0);
  // Reservations queue up: the 4th waits 100 ms, the 5th 200 ms.
  assert.equal(Math.round(bucket.reserve()), 100);
  assert.equal(Math.round(bucket.reserve()), 200);
  now += 1_000; // refills, but never above the burst
  assert.equal(bucket.reserve(), 0);
  assert.equal(bucket.reserve(), 0);
  assert.equal(bucket.reserve(), 0);
  assert.ok(bucket.reserve() > 0);
});

test('token bucket rejects nonsense settings', () => {
  assert.throws(() => new TokenBucket({ requestsPerSecond: 0 }), RangeError);
  assert.throws(() => new TokenBucket({ burst: 0 }), RangeError);
});

test('an aborted wait gives its token back', async () => {
  let now = 0;
  const bucket = new TokenBucket({ requestsPerSecond: 1, burst: 1 }, () => now);
  await bucket.take();
  const controller = new AbortController();
  const pending = bucket.take(controller.signal);
  controller.abort(new Error('stop'));
  await assert.rejects(pending, /stop/);
  now += 1_000;
  assert.equal(bucket.reserve(), 0, 'the refunded token plus the refill cover the next caller');
});

test('the client delays requests beyond the burst instead of failing them', async (t) => {
  const server = await startFakeServer(t, () => ({ body: [] }));
  const client = new MachinesClient({ baseUrl: server.url, rateLimit: { requestsPerSecond: 20, burst: 2 } });
  const started = Date.now();
  await Promise.all(Array.from({ length: 5 }, () => client.machines.list('app')));
  const elapsed = Date.now() - started;
  assert.equal(server.requests.length, 5);
  // 2 go at once, the other 3 at 50 ms intervals.
  assert.ok(elapsed >= 140, `5 requests at 20/s with burst 2 took only ${elapsed} ms`);
});

test('rateLimit: false sends at once', async (t) => {
  const server = await startFakeServer(t, () => ({ body: [] }));
  const client = new MachinesClient({ baseUrl: server.url, rateLimit: false });
  const started = Date.now();
  await Promise.all(Array.from({ length: 20 }, () => client.machines.list('app')));
  assert.ok(Date.now() - started < 1_000);
  assert.equal(server.requests.length, 20);
});

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { createApp, startTestHangard } from '../helpers/hangard.js';

/**
 * One org holds every tenant's apps, so rate limits must keep tenants apart: a token that floods the
 * API (with its own requests, with requests refused with 403, or with bad tokens) leaves another tenant's
 * calls within that tenant's own limits. Small token and org buckets keep the figures independent of
 * how fast the machine running the test is.
 */
const TOKEN = { perSecond: 5, burst: 10 };
const ORG = { perSecond: 10, burst: 40 };
test('one token floods the API: another tenant keeps working within its own limits', async (t) => {
  const h = await startTestHangard(t, { config: { rateLimits: { enabled: true, token: TOKEN, org: ORG } } });
  await createApp(h, 'tenant-a');
  await createApp(h, 'tenant-b');
  const deployToken = async (app: string) => {
    const response = await h.call('POST', `/v1/apps/${app}/deploy_token`, {});
    assert.equal(response.status, 200, JSON.stringify(response.body));
    return response.body.token as string;
  };
  const a = await deployToken('tenant-a');
  const b = await deployToken('tenant-b');
  const readonly = await h.call('POST', '/v1/tokens', { type: 'readonly', org_slug: 'personal' });
  assert.equal(readonly.status, 201);

  const flood = async (count: number, send: () => ReturnType<typeof h.call>) => {
    const statuses = new Map<number, number>();
    let refusal = '';
    for (let sent = 0; sent < count; sent += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, count - sent) }, send));
      for (const { status, body } of batch) {
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status === 429) refusal = body.error;
      }
    }
    return Object.assign(statuses, { refusal });
  };

  // Refused requests aimed at tenant B's create bucket: 403 (or 429 once the token's refusals run out).
  const create = (token: string) => () =>
    h.call('POST', '/v1/apps/tenant-b/machines', { config: { image: 'x' }, skip_launch: true }, { token });
  const byReadonly = await flood(100, create(readonly.body.token));
  const byOtherTenant = await flood(100, create(a));
  for (const statuses of [byReadonly, byOtherTenant]) {
    assert.deepEqual([...statuses.keys()].sort(), [403, 429], `only refusals: ${[...statuses]}`);
  }
  // Bad tokens from the same address: 401, then 429 for that source's refusals only.
  const bad = await flood(100, () => h.call('GET', '/v1/apps/tenant-b', undefined, { token: 'hg1_nope' }));
  assert.deepEqual([...bad.keys()].sort(), [401, 429]);

  // Tenant A floods its own reads: its token bucket runs dry, the org's does not.
  const started = performance.now();
  const own = await flood(200, () => h.call('GET', '/v1/tokens/current', undefined, { token: a }));
  const elapsedSec = (performance.now() - started) / 1000;
  assert.ok((own.get(429) ?? 0) > 0, `tenant A is limited: ${[...own]}`);
  assert.ok(
    (own.get(200) ?? 0) <= TOKEN.burst + Math.ceil(TOKEN.perSecond * elapsedSec) + 1,
    `tenant A got at most its token's allowance: ${[...own]} in ${elapsedSec}s`,
  );
  assert.match(own.refusal, /requests of this token/);

  // Tenant B: its create bucket (burst 3) is whole, and the org has room for its reads.
  for (let i = 0; i < 3; i++) {
    const created = await create(b)();
    assert.equal(created.status, 200, `create ${i}: ${JSON.stringify(created.body)}`);
  }
  const reads = await flood(5, () => h.call('GET', '/v1/tokens/current', undefined, { token: b }));
  assert.deepEqual([...reads], [[200, 5]], 'tenant B is not starved by tenant A');
  assert.equal((await h.call('GET', '/v1/apps/tenant-b/machines', undefined, { token: b })).status, 200);
});

test('slow clients: a header block or a body that never finishes is cut off at its deadline', async (t) => {
  const h = await startTestHangard(t, {
    config: { api: { headersTimeoutMs: 1000, requestTimeoutMs: 2000 } },
  });
  const url = new URL(h.url);
  const dribble = (text: string) =>
    new Promise<{ ms: number; answer: string }>((resolve) => {
      const started = performance.now();
      const socket = connect({ host: url.hostname, port: Number(url.port) });
      let answer = '';
      socket.on('data', (chunk) => {
        answer += chunk.toString();
      });
      socket.on('close', () => resolve({ ms: performance.now() - started, answer }));
      socket.on('error', () => undefined);
      socket.write(text);
      // A byte every 200 ms keeps the connection from going idle, never finishing the request.
      const timer = setInterval(() => socket.write(' '), 200);
      socket.on('close', () => clearInterval(timer));
    });
  const headers = await dribble('GET /v1/apps HTTP/1.1\r\nHost: x\r\nX-Slow: ');
  assert.ok(headers.ms < 4000, `headers cut off after ${headers.ms} ms`);
  assert.match(headers.answer, /^HTTP\/1\.1 408/);
  const body = await dribble(
    `POST /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${h.token}\r\nContent-Length: 100000\r\n\r\n{`,
  );
  assert.ok(body.ms < 5000, `body cut off after ${body.ms} ms`);
});

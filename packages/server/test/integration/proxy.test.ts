import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { test } from 'node:test';
import { canConnect } from '../../src/proxy/upstream.js';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT, ok, pollUntil, sleep } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * The proxy with real machines: one hangard with crun, private networks and the proxy on a loopback
 * port; busybox httpd machines whose CGI scripts echo the request's headers, answer slowly, or name the
 * machine. Every request is a real HTTP request through the proxy.
 */

const skip = NEEDS_ROOT;
const DOMAIN = 'hangar.localhost';
/** A request the proxy never answers fails the test instead of hanging it. */
const REQUEST_TIMEOUT_MS = 30_000;

const CGI = (body: string) => ({
  content: `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n${body}\n`,
  mode: 0o755,
});

/**
 * The seed pattern's script. In a router (ROLE=router) it answers with `fly-replay: app=<query>`, or,
 * on a fallback delivery, says so; in a customer app it names the app and machine, the replay source
 * and the body's length.
 */
const ROUTE_CGI = `#!/bin/sh
if [ "$ROLE" = router ] && [ -z "$HTTP_FLY_REPLAY_FAILED" ]; then
  head -c "\${CONTENT_LENGTH:-0}" > /dev/null
  printf 'fly-replay: app=%s;state=seed;fallback=prefer_self\\r\\nContent-Type: text/plain\\r\\n\\r\\nreplaying\\n' "$QUERY_STRING"
  exit 0
fi
printf 'Content-Type: text/plain\\r\\n\\r\\n'
if [ -n "$HTTP_FLY_REPLAY_FAILED" ]; then echo "fallback $HTTP_FLY_REPLAY_FAILED"; exit 0; fi
echo "$FLY_APP_NAME $FLY_MACHINE_ID"
echo "src $HTTP_FLY_REPLAY_SRC"
echo "body $(head -c "\${CONTENT_LENGTH:-0}" | wc -c)"
`;

/** The machines' HTTP server ignores SIGINT (the default stop signal), so a stop takes its kill_timeout. */
const STUBBORN_CMD = ['/bin/sh', '-c', 'trap "" INT; exec httpd -f -p 8080 -h /www'];

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request through the proxy's public listener with the Host of `app`. */
function get(
  proxyUrl: string,
  app: string,
  path = '/',
  headers: Record<string, string> = {},
): Promise<Reply> {
  const url = new URL(path, proxyUrl);
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: url.hostname,
        port: url.port,
        path,
        headers: { host: `${app}.${DOMAIN}`, ...headers },
        agent: false,
        timeout: REQUEST_TIMEOUT_MS,
      },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          body += chunk;
        });
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
        );
      },
    );
    request.on('timeout', () =>
      request.destroy(new Error(`no answer to ${path} within ${REQUEST_TIMEOUT_MS} ms`)),
    );
    request.on('error', reject);
    request.end();
  });
}

function httpService(extra: Json = {}): Json {
  return {
    protocol: 'tcp',
    internal_port: 8080,
    ports: [{ port: 80, handlers: ['http'] }],
    ...extra,
  };
}

/** An app's machine, from the test image in that app's own space of Hangar's registry. */
async function machine(
  h: TestHangard,
  app: string,
  image: (app: string) => Promise<string>,
  config: Json = {},
): Promise<string> {
  const created = await ok(h, 'POST', `/v1/apps/${app}/machines`, {
    config: { image: await image(app), ...config },
  });
  await ok(h, 'GET', `/v1/apps/${app}/machines/${created.id}/wait?state=started&timeout=60`);
  // Started is not yet listening: a request sent before the app binds its port would be refused and
  // retried on another machine, which would skew what the test measures.
  const { private_ip: address } = await ok(h, 'GET', `/v1/apps/${app}/machines/${created.id}`);
  await pollUntil(`machine ${created.id} listening`, async () =>
    (await canConnect(address, 8080, 1_000)) ? true : undefined,
  );
  return created.id;
}

async function stateOf(h: TestHangard, app: string, id: string): Promise<string> {
  return (await ok(h, 'GET', `/v1/apps/${app}/machines/${id}`)).state;
}

test('the proxy with real machines', { skip, timeout: 240_000 }, async (t) => {
  const registryPort = await freePort();
  const proxyPort = await freePort();
  const h = await startTestHangard(t, {
    config: {
      runtime: 'required',
      network: { mode: 'required', egress: false },
      registry: { port: registryPort, insecure: [] },
      // Its subtests keep more small machines running than a 2-core host admits by default.
      capacity: { memoryOvercommit: 64, cpuOvercommit: 64 },
      proxy: {
        mode: 'on',
        http: `127.0.0.1:${proxyPort}`,
        // HTTPS, certificates and handlers have their own test (proxy-tls.test.ts).
        https: 'off',
        domain: DOMAIN,
        idleStopMs: 60_000,
        autostopIntervalMs: 200,
        wakeTimeoutMs: 30_000,
        queueTimeoutMs: 1_500,
      },
    },
  });
  // Each app runs the same image, pushed once into its own space (a machine may use only its app's).
  const images = new Map<string, Promise<string>>();
  const image = (app: string) => {
    let pushed = images.get(app);
    if (!pushed) {
      pushed = buildTestImage({
        registry: `127.0.0.1:${registryPort}`,
        token: h.token,
        repository: `${app}/proxy-test`,
        files: {
          '/www/cgi-bin/env': CGI('env'),
          '/www/cgi-bin/id': CGI('echo "$FLY_MACHINE_ID"'),
          // The shell's own default, not a template: the query string is the number of seconds.
          // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax
          '/www/cgi-bin/slow': CGI('sleep "${QUERY_STRING:-1}"; echo "$FLY_MACHINE_ID"'),
          '/www/cgi-bin/route': { content: ROUTE_CGI, mode: 0o755 },
          '/www/health.txt': 'ok\n',
        },
      });
      images.set(app, pushed);
    }
    return pushed;
  };
  const proxyUrl = h.proxyUrl!;
  assert.equal(proxyUrl, `http://127.0.0.1:${proxyPort}`);

  await t.test('Host routing, headers and error pages', async () => {
    const app = await createApp(h, 'px-web');
    await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    const id = await machine(h, app, image, { services: [httpService()] });

    const index = await get(proxyUrl, app);
    assert.equal(index.status, 200, index.body);
    assert.equal(index.body, `hello from ${app}/proxy-test:latest\n`);
    assert.match(String(index.headers.via), /hangar/);
    assert.match(String(index.headers['fly-request-id']), /^[0-9A-Z]{26}$/);
    assert.ok(index.headers.server);

    const env = await get(proxyUrl, app, '/cgi-bin/env', { 'x-forwarded-for': '198.51.100.7' });
    assert.equal(env.status, 200, env.body);
    assert.match(env.body, /^HTTP_FLY_CLIENT_IP=127\.0\.0\.1$/m);
    assert.match(env.body, /^HTTP_X_FORWARDED_FOR=198\.51\.100\.7, 127\.0\.0\.1$/m);
    assert.match(env.body, /^HTTP_X_FORWARDED_PROTO=http$/m);
    assert.match(env.body, /^HTTP_X_FORWARDED_SSL=off$/m);
    assert.match(env.body, new RegExp(`^HTTP_FLY_FORWARDED_PORT=${proxyPort}$`, 'm'));
    assert.match(env.body, /^HTTP_FLY_REGION=local$/m);
    assert.match(env.body, /^HTTP_FLY_REQUEST_ID=[0-9A-Z]{26}$/m);
    assert.match(env.body, /^HTTP_VIA=1\.1 hangar$/m);
    assert.match(env.body, new RegExp(`^FLY_MACHINE_ID=${id}$`, 'm'));

    const unknown = await get(proxyUrl, 'no-such-app');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.headers['x-hangar-proxy-error'], 'PH01');
    assert.match(unknown.body, /^PH01: unknown host/);

    const privateApp = await createApp(h, 'px-private');
    await machine(h, privateApp, image, { services: [httpService()] });
    const noIp = await get(proxyUrl, privateApp);
    assert.equal(noIp.status, 404);
    assert.equal(noIp.headers['x-hangar-proxy-error'], 'PH02');

    // A machine whose services do not cover port 80 gets nothing.
    const otherPort = await createApp(h, 'px-port81');
    await ok(h, 'POST', `/v1/apps/${otherPort}/ip_assignments`, { type: 'v6' });
    await machine(h, otherPort, image, {
      services: [httpService({ ports: [{ port: 81, handlers: ['http'] }] })],
    });
    const wrongPort = await get(proxyUrl, otherPort);
    assert.equal(wrongPort.status, 503);
    assert.equal(wrongPort.headers['x-hangar-proxy-error'], 'PR01');
    assert.match(wrongPort.body, /no machine with an HTTP service on port 80/);
  });

  await t.test('a Flycast listener answers on its own ports only', async () => {
    const app = await createApp(h, 'px-flycast');
    await machine(h, app, image, { services: [httpService()] });
    const flycast = (await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'private_v6' })).ip;
    const body = await pollUntil('the Flycast listener', async () => {
      const reply = await new Promise<Reply | undefined>((resolve) => {
        const request = http.request(
          { host: flycast, port: 80, path: '/cgi-bin/id', agent: false },
          (response) => {
            let text = '';
            response.on('data', (chunk) => {
              text += chunk;
            });
            response.on('end', () =>
              resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }),
            );
          },
        );
        request.on('error', () => resolve(undefined));
        request.end();
      });
      return reply?.status === 200 ? reply.body : undefined;
    });
    assert.match(body, /^[0-9a-f]{14}\n$/);
    // Port 81 is no service port of the app: nothing listens there.
    const refused = await new Promise<string>((resolve) => {
      const socket = net.connect({ host: flycast, port: 81 });
      socket.on('connect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    });
    assert.equal(refused, 'ECONNREFUSED');
  });

  await t.test('least-loaded pick, hard-limit queueing and the 503', async () => {
    const app = await createApp(h, 'px-load');
    await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    const service = httpService({ concurrency: { type: 'requests', soft_limit: 2, hard_limit: 3 } });
    const ids = [
      await machine(h, app, image, { services: [service] }),
      await machine(h, app, image, { services: [service] }),
    ];

    // Four at once: least-loaded puts two on each machine.
    const four = await Promise.all([1, 2, 3, 4].map(() => get(proxyUrl, app, '/cgi-bin/slow?1')));
    const counts = new Map<string, number>();
    for (const reply of four) {
      assert.equal(reply.status, 200, reply.body);
      counts.set(reply.body.trim(), (counts.get(reply.body.trim()) ?? 0) + 1);
    }
    assert.deepEqual([...counts.values()], [2, 2]);
    assert.deepEqual([...counts.keys()].sort(), [...ids].sort());

    // Seven at once with hard limit 3 on each: the seventh waits for a slot, then is answered.
    const started = Date.now();
    const seven = await Promise.all([1, 2, 3, 4, 5, 6, 7].map(() => get(proxyUrl, app, '/cgi-bin/slow?1')));
    assert.deepEqual(
      seven.map((r) => r.status),
      [200, 200, 200, 200, 200, 200, 200],
    );
    assert.ok(Date.now() - started >= 1_900, 'the seventh request waited for a slot');

    // Longer than the queue wait: the seventh gets a 503 that says why, with Retry-After.
    const saturated = await Promise.all(
      [1, 2, 3, 4, 5, 6, 7].map(() => get(proxyUrl, app, '/cgi-bin/slow?3')),
    );
    const refused = saturated.filter((r) => r.status === 503);
    assert.equal(refused.length, 1, JSON.stringify(saturated.map((r) => r.status)));
    assert.equal(refused[0]!.headers['x-hangar-proxy-error'], 'PR04');
    assert.equal(refused[0]!.headers['retry-after'], '1');
    assert.match(refused[0]!.body, /hard_limit/);

    // A cordoned machine gets nothing; uncordoned, it is back.
    await ok(h, 'POST', `/v1/apps/${app}/machines/${ids[0]}/cordon`);
    const cordoned = await Promise.all([1, 2, 3].map(() => get(proxyUrl, app, '/cgi-bin/id')));
    assert.deepEqual(
      cordoned.map((r) => r.body.trim()),
      [ids[1], ids[1], ids[1]],
    );
    await ok(h, 'POST', `/v1/apps/${app}/machines/${ids[0]}/uncordon`);

    // fly-force-instance-id and fly-prefer-instance-id.
    const forced = await get(proxyUrl, app, '/cgi-bin/id', { 'fly-force-instance-id': ids[1]! });
    assert.equal(forced.body.trim(), ids[1]);
    const preferred = await get(proxyUrl, app, '/cgi-bin/id', { 'fly-prefer-instance-id': ids[0]! });
    assert.equal(preferred.body.trim(), ids[0]);
    const missing = await get(proxyUrl, app, '/cgi-bin/id', { 'fly-force-instance-id': '0000000000000a' });
    assert.equal(missing.status, 503);
    assert.equal(missing.headers['x-hangar-proxy-error'], 'PR02');
  });

  await t.test('autostart from stopped and from suspended', async () => {
    const app = await createApp(h, 'px-wake');
    await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    const id = await machine(h, app, image, { services: [httpService({ autostart: true })] });
    await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/stop`);
    await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/wait?state=stopped&timeout=30`);

    const fromStopped = await get(proxyUrl, app, '/cgi-bin/id');
    assert.equal(fromStopped.status, 200, fromStopped.body);
    assert.equal(fromStopped.body.trim(), id);
    assert.match(
      String(fromStopped.headers['fly-wake']),
      /^from=stopped;start=\d+;boot=\d+;ready=\d+;first_byte=\d+$/,
    );
    const events: Json[] = await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/events`);
    const wake = await pollUntil('the wake event', async () =>
      (await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/events`)).find(
        (e: Json) => e.type === 'wake' && e.status === 'ready',
      ),
    );
    assert.equal(wake.source, 'hangar');
    assert.equal(typeof wake.request.boot_ms, 'number');
    assert.equal(typeof wake.request.queue_depth, 'number');
    const firstByte = await pollUntil('the first-byte event', async () =>
      (await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/events`)).find(
        (e: Json) => e.type === 'wake' && e.status === 'first_byte',
      ),
    );
    assert.equal(typeof firstByte.request.first_byte_ms, 'number');
    assert.ok(events.length > 0);

    await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/suspend`);
    await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/wait?state=suspended&timeout=30`);
    // Several requests during one wake share it.
    const replies = await Promise.all([1, 2, 3].map(() => get(proxyUrl, app, '/cgi-bin/id')));
    for (const reply of replies) {
      assert.equal(reply.status, 200, reply.body);
      assert.equal(reply.body.trim(), id);
    }
    // A request that arrives after the resume finds the machine started and needs no wake.
    assert.ok(
      replies.some((r) => /^from=suspended;/.test(String(r.headers['fly-wake']))),
      JSON.stringify(replies.map((r) => r.headers['fly-wake'])),
    );
    assert.equal(await stateOf(h, app, id), 'started');

    // autostart off: no wake, a clear 503.
    const off = await createApp(h, 'px-nowake');
    await ok(h, 'POST', `/v1/apps/${off}/ip_assignments`, { type: 'shared_v4' });
    const sleeper = await machine(h, off, image, { services: [httpService({ autostart: false })] });
    await ok(h, 'POST', `/v1/apps/${off}/machines/${sleeper}/stop`);
    await ok(h, 'GET', `/v1/apps/${off}/machines/${sleeper}/wait?state=stopped&timeout=30`);
    const refused = await get(proxyUrl, off);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['x-hangar-proxy-error'], 'PR01');
    assert.equal(await stateOf(h, off, sleeper), 'stopped');

    // wake_exempt: a monitor's request finds the app asleep and leaves it so; a normal one wakes it.
    const exempt = await createApp(h, 'px-exempt');
    await ok(h, 'POST', `/v1/apps/${exempt}/ip_assignments`, { type: 'shared_v4' });
    const dozer = await machine(h, exempt, image, {
      services: [httpService({ wake_exempt: { paths: ['/healthz'], user_agents: ['UptimeRobot'] } })],
    });
    await ok(h, 'POST', `/v1/apps/${exempt}/machines/${dozer}/stop`);
    await ok(h, 'GET', `/v1/apps/${exempt}/machines/${dozer}/wait?state=stopped&timeout=30`);
    const monitor = await get(proxyUrl, exempt, '/', {
      'user-agent': 'Mozilla/5.0 (compatible; UptimeRobot/2.0)',
    });
    const probe = await get(proxyUrl, exempt, '/healthz');
    for (const asleep of [monitor, probe]) {
      assert.equal(asleep.status, 503);
      assert.equal(asleep.headers['x-hangar-proxy-error'], 'PW01');
      assert.match(asleep.body, /asleep/);
    }
    assert.equal(await stateOf(h, exempt, dozer), 'stopped');
    const visitor = await get(proxyUrl, exempt, '/');
    assert.equal(visitor.status, 200);
    assert.equal(await stateOf(h, exempt, dozer), 'started');
  });

  await t.test('autostop down to min_machines_running, the busy veto, suspend', async () => {
    const app = await createApp(h, 'px-idle');
    await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    const service = httpService({ autostop: 'stop', min_machines_running: 1, idle_timeout: '1s' });
    const ids = [
      await machine(h, app, image, { services: [service] }),
      await machine(h, app, image, { services: [service] }),
      await machine(h, app, image, { services: [service] }),
    ];
    // All idle machines but one go in the same pass; then none more.
    await pollUntil(
      'two of three machines stopped',
      async () => {
        const states = await Promise.all(ids.map((id) => stateOf(h, app, id)));
        return states.filter((s) => s === 'stopped').length === 2 ? states : undefined;
      },
      20_000,
      100,
    );
    await sleep(2_000);
    const states = await Promise.all(ids.map((id) => stateOf(h, app, id)));
    assert.deepEqual(states.filter((s) => s === 'started').length, 1, JSON.stringify(states));
    const stoppedId = ids[states.indexOf('stopped')]!;
    const events: Json[] = await ok(h, 'GET', `/v1/apps/${app}/machines/${stoppedId}/events`);
    assert.ok(events.some((e) => e.type === 'autostop' && e.status === 'stopped' && e.source === 'hangar'));

    // The busy veto: a machine with hangar_busy set is not stopped while idle, and is once it clears it.
    const busyApp = await createApp(h, 'px-busy');
    const busyService = httpService({ autostop: 'suspend', idle_timeout: '1s' });
    const busy = await machine(h, busyApp, image, {
      services: [busyService],
      metadata: { hangar_busy: 'true' },
    });
    await sleep(2_500);
    assert.equal(await stateOf(h, busyApp, busy), 'started');
    await ok(h, 'DELETE', `/v1/apps/${busyApp}/machines/${busy}/metadata/hangar_busy`);
    await pollUntil(
      'the machine suspended once no longer busy',
      async () => ((await stateOf(h, busyApp, busy)) === 'suspended' ? true : undefined),
      15_000,
      100,
    );
  });

  await t.test('a request racing an autostop waits for the stop and wakes the machine', async () => {
    const app = await createApp(h, 'px-race');
    await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    const id = await machine(h, app, image, {
      services: [httpService({ autostop: 'stop', idle_timeout: '1s' })],
      init: { exec: STUBBORN_CMD },
      stop_config: { timeout: '2s' },
    });
    await pollUntil(
      'the autostop in progress',
      async () => ((await stateOf(h, app, id)) === 'stopping' ? true : undefined),
      15_000,
      20,
    );
    const reply = await get(proxyUrl, app, '/cgi-bin/id');
    assert.equal(reply.status, 200, reply.body);
    assert.equal(reply.body.trim(), id);
    assert.match(String(reply.headers['fly-wake']), /^from=stopped;/);
  });

  await t.test(
    'seed pattern: a public router replays to stopped customer apps on their own networks',
    async () => {
      const router = await createApp(h, 'px-router');
      await ok(h, 'POST', `/v1/apps/${router}/ip_assignments`, { type: 'shared_v4' });
      await machine(h, router, image, { services: [httpService()], env: { ROLE: 'router' } });
      const customers: Record<string, string> = {};
      for (const [name, network] of [
        ['px-cust-a', 'px-net-a'],
        ['px-cust-b', 'px-net-b'],
      ] as const) {
        await createApp(h, name, network);
        const id = await machine(h, name, image, { services: [httpService({ autostart: true })] });
        await ok(h, 'POST', `/v1/apps/${name}/machines/${id}/stop`);
        await ok(h, 'GET', `/v1/apps/${name}/machines/${id}/wait?state=stopped&timeout=30`);
        customers[name] = id;
      }
      const apps = await ok(h, 'GET', '/v1/apps?org_slug=personal');
      const networks = new Set(
        apps.apps.filter((a: Json) => a.name.startsWith('px-cust-')).map((a: Json) => a.network),
      );
      assert.equal(networks.size, 2, JSON.stringify(apps.apps));

      for (const [name, id] of Object.entries(customers)) {
        const reply = await get(proxyUrl, router, `/cgi-bin/route?${name}`);
        assert.equal(reply.status, 200, reply.body);
        const [who, src, body] = reply.body.trim().split('\n');
        assert.equal(who, `${name} ${id}`);
        assert.match(src!, /^src instance=[0-9a-f]{14};region=local;t=\d+;state=seed$/);
        assert.equal(body, 'body 0');
        assert.match(String(reply.headers['fly-wake']), /^from=stopped;/);
      }

      // A body under 1 MB is replayed whole; over 1 MB, a replay is refused with a 413 that says why.
      const post = (size: number) =>
        new Promise<Reply>((resolve, reject) => {
          const url = new URL(proxyUrl);
          const request = http.request(
            {
              host: url.hostname,
              port: url.port,
              method: 'POST',
              path: '/cgi-bin/route?px-cust-a',
              headers: { host: `${router}.${DOMAIN}`, 'content-length': String(size) },
              agent: false,
            },
            (response) => {
              let text = '';
              response.on('data', (chunk) => {
                text += chunk;
              });
              response.on('end', () =>
                resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }),
              );
            },
          );
          request.on('error', reject);
          request.end(Buffer.alloc(size, 97));
        });
      const small = await post(100_000);
      assert.equal(small.status, 200, small.body);
      assert.match(small.body, /^body 100000$/m);
      const big = await post(1024 * 1024 + 1);
      assert.equal(big.status, 413, big.body);
      assert.equal(big.headers['x-hangar-proxy-error'], 'PA01');

      // An app with no machine to take it: the fallback goes back to the router, which is told why.
      await createApp(h, 'px-cust-empty');
      const fallback = await get(proxyUrl, router, '/cgi-bin/route?px-cust-empty');
      assert.equal(fallback.status, 200, fallback.body);
      assert.match(
        fallback.body,
        /^fallback app=px-cust-empty;replay_source=[0-9a-f]{14};reason=no_candidate;elapsed_ms=\d+$/m,
      );

      // Unknown apps and endless chains get the replay error codes.
      const unknown = await get(proxyUrl, router, '/cgi-bin/route?px-nobody');
      assert.equal(unknown.headers['x-hangar-proxy-error'], 'PA04');
      const loop = await get(proxyUrl, router, `/cgi-bin/route?${router}`);
      assert.equal(loop.status, 508);
      assert.equal(loop.headers['x-hangar-proxy-error'], 'PA02');
    },
  );

  await t.test('a failing health check takes a machine out of rotation and back', async () => {
    const app = await createApp(h, 'px-health');
    await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    const service = httpService({
      checks: [{ type: 'http', path: '/health.txt', interval: '200ms', timeout: '1s' }],
    });
    const ids = [
      await machine(h, app, image, { services: [service] }),
      await machine(h, app, image, { services: [service] }),
    ];
    const checkOf = async (id: string) => (await ok(h, 'GET', `/v1/apps/${app}/machines/${id}`)).checks[0];
    for (const id of ids) {
      const check = await pollUntil('a passing check', async () => {
        const c = await checkOf(id);
        return c?.status === 'passing' ? c : undefined;
      });
      assert.equal(check.name, 'servicecheck-00-http-8080');
    }
    const [sick, well] = ids as [string, string];
    await ok(h, 'POST', `/v1/apps/${app}/machines/${sick}/exec`, { command: ['rm', '/www/health.txt'] });
    const critical = await pollUntil('a critical check', async () => {
      const c = await checkOf(sick);
      return c?.status === 'critical' ? c : undefined;
    });
    assert.match(critical.output, /GET \/health.txt to port 8080 failed/);
    const during = await Promise.all([1, 2, 3, 4, 5, 6].map(() => get(proxyUrl, app, '/cgi-bin/id')));
    assert.deepEqual(
      during.map((r) => r.body.trim()),
      [well, well, well, well, well, well],
    );
    await ok(h, 'POST', `/v1/apps/${app}/machines/${sick}/exec`, {
      command: ['sh', '-c', 'echo ok > /www/health.txt'],
    });
    await pollUntil('the check passing again', async () =>
      (await checkOf(sick))?.status === 'passing' ? true : undefined,
    );
    const back = await get(proxyUrl, app, '/cgi-bin/id', { 'fly-force-instance-id': sick });
    assert.equal(back.status, 200);
    assert.equal(back.body.trim(), sick);
  });

  await t.test('upgrades (WebSockets) pass through both ways; large bodies stream', async () => {
    const app = await createApp(h, 'px-ws');
    await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    // An echo server: every byte the proxy sends after the upgrade request comes back.
    await machine(h, app, image, {
      services: [httpService()],
      init: { exec: ['/bin/nc', '-ll', '-p', '8080', '-e', '/bin/cat'] },
    });
    const socket = net.connect({ host: '127.0.0.1', port: proxyPort });
    t.after(() => socket.destroy());
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk.toString();
    });
    socket.write(
      `GET /chat HTTP/1.1\r\nHost: ${app}.${DOMAIN}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nfirst-frame`,
    );
    await pollUntil('the echoed upgrade request', async () =>
      received.includes('first-frame') ? true : undefined,
    );
    assert.match(received, /^GET \/chat HTTP\/1\.1\r\n/);
    assert.match(received, /\r\nupgrade: websocket\r\n/);
    assert.match(received, /\r\nconnection: upgrade\r\n/);
    assert.match(received, /\r\nfly-client-ip: 127\.0\.0\.1\r\n/);
    socket.write('second-frame');
    await pollUntil('the second frame', async () => (received.includes('second-frame') ? true : undefined));
    socket.destroy();

    // A 3 MB upload streams through to a normal app (the 1 MB limit is only for replays).
    const size = 3 * 1024 * 1024;
    const counted = await new Promise<Reply>((resolve, reject) => {
      const request = http.request(
        {
          host: '127.0.0.1',
          port: proxyPort,
          method: 'POST',
          path: '/cgi-bin/route',
          headers: { host: `px-cust-a.${DOMAIN}`, 'content-length': String(size) },
          agent: false,
        },
        (response) => {
          let text = '';
          response.on('data', (chunk) => {
            text += chunk;
          });
          response.on('end', () =>
            resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }),
          );
        },
      );
      request.on('error', reject);
      request.end(Buffer.alloc(size, 98));
    });
    // px-cust-a has no public address: give it one for this request.
    assert.equal(counted.status, 404);
    await ok(h, 'POST', '/v1/apps/px-cust-a/ip_assignments', { type: 'v6' });
    const upload = await new Promise<Reply>((resolve, reject) => {
      const request = http.request(
        {
          host: '127.0.0.1',
          port: proxyPort,
          method: 'POST',
          path: '/cgi-bin/route',
          headers: { host: `px-cust-a.${DOMAIN}`, 'content-length': String(size) },
          agent: false,
        },
        (response) => {
          let text = '';
          response.on('data', (chunk) => {
            text += chunk;
          });
          response.on('end', () =>
            resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }),
          );
        },
      );
      request.on('error', reject);
      // Written in pieces: the body streams, the proxy holds no more than a buffer of it.
      const piece = Buffer.alloc(64 * 1024, 98);
      for (let sent = 0; sent < size; sent += piece.length) request.write(piece);
      request.end();
    });
    assert.equal(upload.status, 200, upload.body);
    assert.match(upload.body, new RegExp(`^body ${size}$`, 'm'));
  });

  await t.test(
    'a silent WebSocket does not keep its machine up; autostop says goodbye with 1001',
    async () => {
      const app = await createApp(h, 'px-ws-away');
      await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
      // Answers every upgrade with a 101 and one text frame ("hi"), then stays open and silent.
      const answer =
        "printf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n\\201\\002hi'; " +
        'exec sleep 1000';
      const id = await machine(h, app, image, {
        services: [httpService({ autostop: 'stop', idle_timeout: '1s' })],
        init: { exec: ['/bin/nc', '-ll', '-p', '8080', '-e', '/bin/sh', '-c', answer] },
        stop_config: { timeout: '2s' },
      });
      const socket = net.connect({ host: '127.0.0.1', port: proxyPort });
      t.after(() => socket.destroy());
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
      socket.write(
        `GET /chat HTTP/1.1\r\nHost: ${app}.${DOMAIN}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      );
      await ended;
      const received = Buffer.concat(chunks);
      const head = received.indexOf('\r\n\r\n') + 4;
      assert.match(received.subarray(0, head).toString(), /^HTTP\/1\.1 101 /);
      // The app's frame, then the proxy's close frame with status 1001 ("going away"), nothing after.
      assert.deepEqual([...received.subarray(head)], [0x81, 0x02, 0x68, 0x69, 0x88, 0x02, 0x03, 0xe9]);
      await pollUntil('the autostop', async () =>
        (await stateOf(h, app, id)) === 'stopped' ? true : undefined,
      );
    },
  );

  await t.test('health endpoints and metrics, without a token', async () => {
    const healthz = await fetch(`${h.url}/healthz`);
    assert.equal(healthz.status, 200);
    const readyz = await fetch(`${h.url}/readyz`);
    assert.equal(readyz.status, 200);
    assert.deepEqual(await readyz.json(), {
      status: 'ready',
      checks: { store: true, reconcile: true, proxy_listeners: true },
    });
    const metrics = await fetch(`${h.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(String(metrics.headers.get('content-type')), /^text\/plain; version=0\.0\.4/);
    const text = await metrics.text();
    assert.match(text, /^hangar_proxy_requests_total\{app="px-web",class="2xx"\} \d+$/m);
    assert.match(text, /^hangar_proxy_requests_total\{app="px-load",class="5xx"\} 2$/m);
    assert.match(text, /^hangar_proxy_request_duration_seconds_bucket\{app="px-web",le="\+Inf"\} \d+$/m);
    assert.match(text, /^hangar_proxy_wakes_total\{app="px-wake",from="stopped"\} 1$/m);
    assert.match(text, /^hangar_proxy_wake_duration_seconds_count\{app="px-wake"\} 2$/m);
    assert.match(text, /^hangar_proxy_autostops_total\{app="px-idle",mode="stop"\} 2$/m);
    assert.match(text, /^hangar_proxy_queue_depth\{app="px-load"\} 0$/m);
  });
});

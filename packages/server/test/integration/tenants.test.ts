import assert from 'node:assert/strict';
import { copyFile, cp, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMachinesApiError, MachinesClient } from '@hangar/sdk';
import { expectSuccess, hangarCli } from '../helpers/deploy-cli.js';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { NEEDS_ROOT, pollUntil } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * One app per customer with the built CLI against a real hangard: the router example deployed from its
 * own fly.toml, a template app, `hangar tenants create` (run twice, and on a half-made tenant), and a
 * request through the proxy that the router replays to the customer's own app on its own network.
 */

const ROUTER_EXAMPLE = fileURLToPath(new URL('../../../../examples/router/', import.meta.url));
const DOMAIN = 'hangar.localhost';

/** A request through the proxy's public listener, to `<app>.<domain>` (fetch cannot set Host). */
function viaProxy(
  proxyPort: number,
  app: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: '127.0.0.1', port: proxyPort, path, headers: { ...headers, host: `${app}.${DOMAIN}` } },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          body += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      },
    );
    request.on('error', reject);
    request.end();
  });
}

test('tenants: one app per customer behind the router example', {
  skip: NEEDS_ROOT,
  timeout: 300_000,
}, async (t) => {
  const registryPort = await freePort();
  const proxyPort = await freePort();
  const h = await startTestHangard(t, {
    config: {
      runtime: 'required',
      network: { mode: 'required', egress: false },
      registry: { port: registryPort, insecure: [] },
      proxy: { mode: 'on', http: `127.0.0.1:${proxyPort}`, https: 'off', domain: DOMAIN },
    },
  });
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false });
  const dir = await mkdtemp(join(tmpdir(), 'hangar-tenants-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const apps = ['router', 'web-template', 'acme', 'globex'];
  try {
    await scenario(h, client, dir, registryPort, proxyPort);
  } finally {
    // Before hangard closes (its after-hook runs first).
    for (const app of apps) {
      await client.apps.delete(app, { force: true }).catch((error: unknown) => {
        if (!isMachinesApiError(error, 'not_found')) throw error;
      });
    }
  }
});

async function scenario(
  h: TestHangard,
  client: MachinesClient,
  dir: string,
  registryPort: number,
  proxyPort: number,
) {
  const cli = (...args: string[]) => hangarCli(h, registryPort, args);

  // The router, deployed from the example as it is in the repository (plus the host's busybox).
  const routerDir = join(dir, 'router');
  await cp(ROUTER_EXAMPLE, routerDir, { recursive: true });
  await copyFile('/bin/busybox', join(routerDir, 'busybox'));
  expectSuccess(await cli('apps', 'create', 'router'), 'apps create router');
  expectSuccess(await cli('deploy', '-c', join(routerDir, 'fly.toml'), '--no-ha'), 'deploy the router');

  // The template: a machine serving a page, with a service.
  await client.apps.create({ app_name: 'web-template', org_slug: 'personal' });
  const image = await buildTestImage({
    registry: `127.0.0.1:${registryPort}`,
    token: h.token,
    repository: 'web-template/web',
    tag: '1',
    files: { '/www/index.html': 'customer page\n' },
    config: {
      cmd: [
        '/bin/busybox',
        'sh',
        '-c',
        'echo "$GREETING" > /www/greeting; exec /bin/busybox httpd -f -p 8080 -h /www',
      ],
    },
  });
  const template = await client.machines.launch('web-template', {
    config: {
      image,
      services: [
        { protocol: 'tcp', internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }], autostop: 'off' },
      ],
      metadata: { fly_process_group: 'app' },
    },
  });
  await client.waitForState('web-template', template.id, 'started', { timeoutMs: 60_000 });

  // 1. One step: app on its own network, Flycast on the router's network, secrets, machines.
  const create = await cli(
    'tenants',
    'create',
    'acme',
    '--template',
    'web-template',
    '--router',
    'router',
    '--secret',
    'GREETING=hi-acme',
    '--json',
  );
  expectSuccess(create, 'tenants create acme');
  const made = JSON.parse(create.stdout);
  assert.equal(made.network, 'tenant-acme');
  const routerNetwork = (await client.apps.get('router')).network;
  assert.equal(made.flycast.length, 1);
  assert.equal(made.flycast[0].network, routerNetwork);
  assert.deepEqual(made.secrets, ['GREETING']);
  assert.equal(made.machines.length, 1);
  assert.equal(made.machines[0].image, `127.0.0.1:${registryPort}/acme/web:1`);
  assert.ok(
    made.steps.every((s: { made: boolean }) => s.made),
    JSON.stringify(made.steps),
  );
  const machine = await client.machines.get('acme', made.machines[0].id);
  assert.equal(machine.state, 'started');
  assert.equal(
    machine.config?.services?.[0]?.autostop,
    true,
    'autostop "stop" (encoded true for old clients)',
  );
  assert.equal(machine.config?.services?.[0]?.autostart, true);
  assert.equal(machine.config?.metadata?.hangar_tenant, 'acme');
  const greeting = await client.machines.exec('acme', machine.id, { command: ['/bin/cat', '/www/greeting'] });
  assert.equal(greeting.stdout?.trim(), 'hi-acme');

  // 2. Idempotent: a second run makes nothing new.
  const again = await cli(
    'tenants',
    'create',
    'acme',
    '--template',
    'web-template',
    '--router',
    'router',
    '--json',
  );
  expectSuccess(again, 'tenants create acme again');
  const second = JSON.parse(again.stdout);
  assert.deepEqual(
    second.steps.map((s: { made: boolean }) => s.made),
    [false, false, false],
  );
  assert.deepEqual(
    second.machines.map((m: { id: string }) => m.id),
    [machine.id],
  );

  // 3. A half-made tenant (only its app exists) is finished.
  await client.apps.create({ app_name: 'globex', org_slug: 'personal', network: 'tenant-globex' });
  const finish = await cli('tenants', 'create', 'globex', '--template', 'web-template', '--router', 'router');
  expectSuccess(finish, 'tenants create globex (half-made)');
  assert.match(finish.stdout, /existed {2}app globex/);
  assert.match(finish.stdout, /made {5}machine \w+ \(group app, started\)/);

  // 4. The router's fly-replay reaches each customer's own app through the proxy.
  let last: { status: number; body: string } | undefined;
  const replayed = await pollUntil(
    'the router to replay to acme',
    async () => {
      last = await viaProxy(proxyPort, 'router', '/', { 'x-customer': 'acme' });
      return last.status === 200 ? last : undefined;
    },
    30_000,
    250,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}; last answer ${JSON.stringify(last)}`);
  });
  assert.equal(replayed.body, 'customer page\n');
  // Negative control: a customer that does not exist is refused by the proxy, not served.
  const unknown = await viaProxy(proxyPort, 'router', '/', { 'x-customer': 'nobody' });
  assert.equal(unknown.status, 502);
  assert.match(unknown.body, /PA04/);
  // The path form reaches globex's app, which sees the path as sent (and has no page there).
  const byPath = await viaProxy(proxyPort, 'router', '/globex/');
  assert.equal(byPath.status, 404);
  assert.match(byPath.body, /404 Not Found/);

  // 5. list, show, destroy; an app that is not a tenant is never destroyed by `tenants destroy`.
  const list = await cli('tenants', 'list', '--json');
  expectSuccess(list, 'tenants list');
  assert.deepEqual((JSON.parse(list.stdout) as { name: string }[]).map((a) => a.name).sort(), [
    'acme',
    'globex',
  ]);
  const show = await cli('tenants', 'show', 'acme');
  expectSuccess(show, 'tenants show');
  assert.match(show.stdout, /^Network +tenant-acme$/m);
  const refused = await cli('tenants', 'destroy', 'router', '--yes');
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /app router exists on network "[^"]+", so it is not a tenant/);
  expectSuccess(await cli('tenants', 'destroy', 'acme', '--yes'), 'tenants destroy acme');
  await assert.rejects(client.apps.get('acme'), (err: unknown) => isMachinesApiError(err, 'not_found'));
  assert.equal((await client.apps.get('router')).name, 'router');
}

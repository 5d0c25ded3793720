import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMachinesApiError, MachinesClient } from '@hangar/sdk';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { NEEDS_ROOT, pollUntil } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * `hangar deploy` end to end: the built CLI against a real hangard (machines, private networks, the
 * proxy's health checks), building a real image with buildah from a Dockerfile whose base image the test
 * pushes into the app's space first (nothing comes from the internet). A new version that fails its
 * health check is rolled back while the previous one keeps serving; a stopped machine is booted once to
 * verify the new version and stopped again.
 */

const CLI = fileURLToPath(new URL('../../../cli/dist/main.js', import.meta.url));
const APP = 'deploy-e2e';

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function hangar(h: TestHangard, args: string[]): Promise<CliResult> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    HANGAR_API_URL: h.url,
    HANGAR_API_TOKEN: h.token,
  };
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env, timeout: 180_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function expectSuccess(result: CliResult, what: string): void {
  assert.equal(
    result.code,
    0,
    `${what}: exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
}

const FLY_TOML = `
app = "${APP}"
primary_region = "local"
kill_timeout = 2

[build]
  dockerfile = "Dockerfile"

[deploy]
  strategy = "rolling"
  wait_timeout = "60s"

[env]
  GREETING = "hello"

[http_service]
  internal_port = 8080
  auto_stop_machines = "off"

  [[http_service.checks]]
    interval = "1s"
    timeout = "1s"
    path = "/healthz"
`;

test('hangar deploy builds, rolls out, verifies and rolls back', {
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
      proxy: { mode: 'on', http: `127.0.0.1:${proxyPort}`, domain: 'hangar.localhost' },
    },
  });
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false });
  const dir = await mkdtemp(join(tmpdir(), 'hangar-deploy-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await client.apps.create({ app_name: APP, org_slug: 'personal' });
  try {
    await deployScenario(h, client, dir, registryPort);
  } finally {
    // Before hangard closes (its after-hook runs first): the app and its machines go.
    await client.apps.delete(APP, { force: true }).catch((error: unknown) => {
      if (!isMachinesApiError(error, 'not_found')) throw error;
    });
  }
});

async function deployScenario(h: TestHangard, client: MachinesClient, dir: string, registryPort: number) {
  // The base image: busybox httpd serving /www on 8080, pushed into the app's space.
  const base = await buildTestImage({
    registry: `127.0.0.1:${registryPort}`,
    token: h.token,
    repository: `${APP}/base`,
    tag: '1',
  });
  await writeFile(join(dir, 'fly.toml'), FLY_TOML);
  /** Writes the Dockerfile of one version: its page, and a health page unless `healthy` is false. */
  const version = async (name: string, healthy = true) => {
    await writeFile(join(dir, 'index.html'), `${name}\n`);
    await writeFile(join(dir, 'healthz'), 'ok\n');
    const lines = [`FROM ${base}`, 'COPY index.html /www/index.html'];
    if (healthy) lines.push('COPY healthz /www/healthz');
    await writeFile(join(dir, 'Dockerfile'), `${lines.join('\n')}\n`);
  };
  const deploy = (...extra: string[]) =>
    hangar(h, [
      'deploy',
      '-c',
      join(dir, 'fly.toml'),
      '--registry',
      `127.0.0.1:${registryPort}`,
      '--no-ha',
      '--no-public-ips',
      '--json',
      ...extra,
    ]);
  const page = async (id: string) =>
    (await client.machines.exec(APP, id, { command: ['/bin/cat', '/www/index.html'] })).stdout?.trim();

  // A secret staged before the first deploy reaches the machines.
  await client.secrets.set(APP, { API_KEY: 'staged-before-deploy' });

  // 1. First deploy: build, push, one machine created, started and healthy.
  await version('v1');
  const first = await deploy();
  expectSuccess(first, 'first deploy');
  const firstSummary = JSON.parse(first.stdout);
  assert.equal(firstSummary.first_deploy, true);
  assert.match(firstSummary.image, new RegExp(`^127\\.0\\.0\\.1:${registryPort}/${APP}/${APP}:deployment-`));
  assert.ok(firstSummary.image_bytes > 0, 'the push reports its size');
  assert.equal(firstSummary.machines.length, 1);
  const id: string = firstSummary.machines[0].id;
  assert.deepEqual(
    [firstSummary.machines[0].action, firstSummary.machines[0].state, firstSummary.machines[0].group],
    ['created', 'started', 'app'],
  );
  // Progress went to stderr: the build's steps, the push and the machine's health.
  assert.match(first.stderr, /STEP 1\/\d+: FROM/);
  assert.match(first.stderr, /Pushed \d+ layers?, /);
  assert.match(first.stderr, new RegExp(`Machine ${id} \\[app\\] healthy: 1/1 checks passing`));
  assert.equal(await page(id), 'v1');
  const env = (await client.machines.exec(APP, id, { command: ['/bin/env'] })).stdout ?? '';
  assert.match(env, /^API_KEY=staged-before-deploy$/m);
  assert.match(env, /^GREETING=hello$/m);
  assert.match(env, /^PRIMARY_REGION=local$/m);
  const machine = await client.machines.get(APP, id);
  assert.deepEqual(machine.config?.services?.[0]?.ports, [
    { port: 80, handlers: ['http'], force_https: false },
    { port: 443, handlers: ['tls', 'http'] },
  ]);
  assert.equal(machine.config?.stop_config?.timeout, '2s');
  assert.equal(machine.config?.metadata?.fly_process_group, 'app');

  // 2. A second version rolls out onto the same machine.
  await version('v2');
  const second = await deploy();
  expectSuccess(second, 'second deploy');
  const secondSummary = JSON.parse(second.stdout);
  assert.deepEqual(
    secondSummary.machines.map((m: { id: string; action: string }) => [m.id, m.action]),
    [[id, 'updated']],
  );
  assert.equal(await page(id), 'v2');
  const goodImage = (await client.machines.get(APP, id)).config?.image;
  assert.equal(goodImage, secondSummary.image);

  // 3. A version that fails its health check is rolled back, and says so.
  await version('v3-broken', false);
  const broken = await deploy();
  assert.notEqual(broken.code, 0, `a broken version must fail the deploy:\n${broken.stderr}`);
  assert.equal(broken.stdout, '');
  assert.match(broken.stderr, /^Error: deploy failed: Machine \w+ \[app\] failed its health checks/m);
  assert.match(
    broken.stderr,
    /1 machine rolled back to the previous version\. The previous version is still serving\./,
  );
  const afterRollback = await client.machines.get(APP, id);
  assert.equal(afterRollback.config?.image, goodImage);
  assert.equal(afterRollback.state, 'started');
  assert.equal(await page(id), 'v2');
  // Positive control: the same deploy with the health page present goes through.
  await version('v3');

  // 4. A stopped machine is booted once with the new version, verified, and stopped again.
  await client.machines.stop(APP, id);
  await client.waitForState(APP, id, 'stopped', { timeoutMs: 30_000 });
  const asleep = await deploy();
  expectSuccess(asleep, 'deploy onto a stopped machine');
  const asleepSummary = JSON.parse(asleep.stdout);
  assert.deepEqual(asleepSummary.machines[0], {
    id,
    group: 'app',
    action: 'updated',
    state: 'stopped',
    version: asleepSummary.machines[0].version,
    verified: true,
  });
  assert.match(asleep.stderr, /new version verified, stopped again as before the deploy/);
  const stopped = await pollUntil('the machine to be stopped', async () => {
    const m = await client.machines.get(APP, id);
    return m.state === 'stopped' ? m : undefined;
  });
  assert.equal(stopped.config?.image, asleepSummary.image);
  assert.equal(stopped.instance_id, asleepSummary.machines[0].version);

  // 5. A broken fly.toml names its line and key, and nothing is deployed.
  await writeFile(join(dir, 'fly.toml'), FLY_TOML.replace('internal_port = 8080', 'internal_port = "http"'));
  const invalid = await deploy();
  assert.notEqual(invalid.code, 0);
  assert.match(invalid.stderr, /line 17: http_service\.internal_port: must be a whole number/);
  assert.equal((await client.machines.get(APP, id)).instance_id, stopped.instance_id);
}

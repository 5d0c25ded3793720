import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMachinesApiError, MachinesApiError, MachinesClient } from '@hangar/sdk';
import { type CliResult, expectSuccess } from '../helpers/deploy-cli.js';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { NEEDS_ROOT } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * The SDK and the CLI against a real hangard with a real runtime, so that both are known to work with
 * the server they ship with, not only with the fake server of their own unit tests. The SDK is the built
 * package (`@hangar/sdk`), the CLI its built binary run as a child process, so both are tested as
 * shipped: build first (scripts/test.sh does) or this tests the last build. Every machine and app made
 * here is removed in `finally` blocks before hangard closes, even when an assertion fails.
 */

const CLI = fileURLToPath(new URL('../../../cli/dist/main.js', import.meta.url));
/** Request ids are ULIDs (api/server.ts). */
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** Runs the built `hangar` binary with only hangard's URL and token from the environment. */
function hangar(h: TestHangard, args: string[]): Promise<CliResult> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HANGAR_API_URL: h.url,
    HANGAR_API_TOKEN: h.token,
  };
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Resolves with the MachinesApiError `work` rejects with; fails the test if it resolves. */
async function apiError(work: () => Promise<unknown>): Promise<MachinesApiError> {
  try {
    await work();
  } catch (error) {
    assert.ok(error instanceof MachinesApiError, `expected MachinesApiError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected the call to fail');
}

test('the SDK and the CLI drive a real hangard', { skip: NEEDS_ROOT, timeout: 120_000 }, async (t) => {
  const registryPort = await freePort();
  const h = await startTestHangard(t, { config: { runtime: 'required', registry: { port: registryPort } } });
  // Images live in their app's space of Hangar's registry: each app gets its own, pushed once it exists.
  const pushImage = (app: string) =>
    buildTestImage({ registry: `127.0.0.1:${registryPort}`, token: h.token, repository: `${app}/web` });
  // Retries off: an error must show up at once, as the server sent it.
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false, retries: false });

  await t.test('SDK: apps, machines, leases, secrets, ips, tokens and errors', async () => {
    const app = 'sdk-app';
    let created = false;
    try {
      const made = await client.apps.create({ app_name: app, org_slug: 'personal' });
      created = true;
      assert.equal(made.name, app);
      const listed = await client.apps.list('personal');
      assert.ok(
        listed.apps.some((a) => a.name === app),
        `apps list has ${app}: ${JSON.stringify(listed)}`,
      );
      assert.equal((await client.apps.get(app)).name, app);

      const image = await pushImage(app);
      const launched = await client.machines.launch(app, {
        config: { image, guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 128 } },
      });
      const id = launched.id;
      await client.waitForState(app, id, 'started', { timeoutMs: 30_000, instanceId: launched.instance_id });
      assert.equal((await client.machines.get(app, id)).state, 'started');
      assert.deepEqual(
        (await client.machines.list(app)).map((m) => m.id),
        [id],
      );

      // A lease blocks mutations without its nonce, and allows them with it.
      const lease = await client.machines.acquireLease(app, id, { ttl: 30, description: 'sdk test' });
      assert.match(lease.nonce, /\S/);
      assert.equal((await client.machines.getLease(app, id)).nonce, lease.nonce);
      const blocked = await apiError(() => client.machines.stop(app, id));
      assert.equal(blocked.status, 409);
      assert.equal(blocked.code, 'lease_conflict');
      await client.machines.stop(app, id, { timeout: 5 }, { nonce: lease.nonce });
      await client.waitForState(app, id, 'stopped', { timeoutMs: 30_000 });
      assert.equal((await client.machines.get(app, id)).state, 'stopped');
      await client.machines.releaseLease(app, id, lease.nonce);

      await client.machines.start(app, id);
      await client.waitForState(app, id, 'started', { timeoutMs: 30_000 });
      assert.equal((await client.machines.get(app, id)).state, 'started');

      const secrets = await client.secrets.set(app, { GREETING: 'hello' });
      assert.ok(secrets.version >= 1, `secrets version ${secrets.version}`);
      assert.deepEqual(
        (await client.secrets.list(app)).secrets.map((s) => s.name),
        ['GREETING'],
      );

      const flycast = await client.ipAssignments.allocate(app, { type: 'private_v6' });
      assert.match(flycast.ip, /^fdaa:/);
      assert.ok((await client.ipAssignments.list(app)).ips.some((ip) => ip.ip === flycast.ip));
      await client.ipAssignments.release(app, flycast.ip);
      assert.ok(!(await client.ipAssignments.list(app)).ips.some((ip) => ip.ip === flycast.ip));

      const token = await client.tokens.create({ type: 'deploy', org_slug: 'personal', app_name: app });
      assert.match(token.token, /\S/);
      assert.ok((await client.tokens.list('personal')).tokens.some((k) => k.id === token.id));
      // The deploy token works for its app, through its own client.
      const deploy = new MachinesClient({ baseUrl: h.url, token: token.token, rateLimit: false });
      assert.equal((await deploy.machines.get(app, id)).id, id);
      await client.tokens.revoke(token.id);
      const revoked = await apiError(() => deploy.machines.get(app, id));
      assert.equal(revoked.status, 401);

      const missing = await apiError(() => client.apps.get('no-such-app'));
      assert.equal(missing.status, 404);
      assert.equal(missing.code, 'not_found');
      assert.match(missing.requestId ?? '', ULID);
      assert.ok(isMachinesApiError(missing, 'not_found'));
      const bad = await apiError(() => client.machines.launch(app, { config: { image: '' } }));
      assert.equal(bad.status, 400);
      assert.equal(bad.code, 'invalid_argument');
      assert.match(bad.detail ?? bad.message, /image/);

      await client.machines.destroy(app, id, { force: true });
      await client.waitForState(app, id, 'destroyed', { timeoutMs: 30_000 });
      assert.deepEqual(await client.machines.list(app), []);
    } finally {
      if (created) await client.apps.delete(app, { force: true });
    }
    const gone = await apiError(() => client.apps.get(app));
    assert.equal(gone.status, 404);
  });

  await t.test('CLI: apps, machine run/list/stop/destroy, secrets, ips and a bad input', async () => {
    const app = 'cli-app';
    try {
      const createdApp = await hangar(h, ['apps', 'create', app, '--json']);
      expectSuccess(createdApp, 'apps create');
      assert.equal(JSON.parse(createdApp.stdout).name, app);
      const apps = await hangar(h, ['apps', 'list', '--json']);
      expectSuccess(apps, 'apps list');
      assert.ok(
        (JSON.parse(apps.stdout) as { name: string }[]).some((a) => a.name === app),
        `apps list --json has ${app}: ${apps.stdout}`,
      );

      const secretsSet = await hangar(h, ['secrets', 'set', 'API_KEY=s3cr3t', '-a', app]);
      expectSuccess(secretsSet, 'secrets set');
      const secrets = await hangar(h, ['secrets', 'list', '-a', app, '--json']);
      expectSuccess(secrets, 'secrets list');
      assert.deepEqual(
        (JSON.parse(secrets.stdout) as { name: string }[]).map((s) => s.name),
        ['API_KEY'],
      );
      assert.ok(!secrets.stdout.includes('s3cr3t'), 'secret values are not listed');

      const image = await pushImage(app);
      const run = await hangar(h, ['machine', 'run', image, '-a', app, '--memory', '128']);
      expectSuccess(run, 'machine run');
      const id = /^Machine (\w+) \(/.exec(run.stdout)?.[1];
      assert.ok(id, `machine id in ${run.stdout}`);
      assert.match(run.stdout, new RegExp(`\\nWaiting for ${id} to start\\.\\.\\.\\nState: started\\n$`));
      assert.equal((await client.machines.get(app, id)).state, 'started');

      const list = await hangar(h, ['machine', 'list', '-a', app, '--json']);
      expectSuccess(list, 'machine list');
      const listed = JSON.parse(list.stdout) as { id: string; state: string }[];
      assert.deepEqual(
        listed.map((m) => [m.id, m.state]),
        [[id, 'started']],
      );
      // The secret reached the machine's config as a secret reference, never as a plain value.
      const machine = await client.machines.get(app, id);
      assert.ok(!JSON.stringify(machine).includes('s3cr3t'));

      expectSuccess(await hangar(h, ['machine', 'stop', id, '-a', app]), 'machine stop');
      await client.waitForState(app, id, 'stopped', { timeoutMs: 30_000 });
      const destroyed = await hangar(h, ['machine', 'destroy', id, '-a', app, '--force']);
      expectSuccess(destroyed, 'machine destroy');
      assert.match(destroyed.stdout, new RegExp(`Machine ${id} was destroyed`));
      assert.equal((await client.machines.get(app, id)).state, 'destroyed');

      const ip = await hangar(h, ['ips', 'allocate-v6', '--private', '-a', app, '--json']);
      expectSuccess(ip, 'ips allocate-v6 --private');
      const [allocated] = JSON.parse(ip.stdout) as { ip: string }[];
      assert.match(allocated?.ip ?? '', /^fdaa:/);
      assert.ok((await client.ipAssignments.list(app)).ips.some((a) => a.ip === allocated?.ip));

      // Bad input: the server's message reaches the user, on stderr, with a failing exit code.
      const bad = await hangar(h, ['apps', 'create', 'Not_A_Valid_Name']);
      assert.notEqual(bad.code, 0, `bad app name: ${bad.stdout}`);
      assert.equal(bad.stdout, '');
      assert.match(bad.stderr, /name/i);
      const missing = await hangar(h, ['machine', 'status', '0000000000abcd', '-a', app]);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /not found/i);
    } finally {
      await client.apps.delete(app, { force: true }).catch((error: unknown) => {
        if (!isMachinesApiError(error, 'not_found')) throw error;
      });
    }
  });
});

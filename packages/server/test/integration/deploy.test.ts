import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expectSuccess, flyToml, withDeployFixture } from '../helpers/deploy-cli.js';
import { NEEDS_ROOT, pollUntil } from '../helpers/integration.js';

/**
 * `hangar deploy` end to end: the built CLI against a real hangard (machines, private networks, the
 * proxy's health checks), building a real image with buildah from a Dockerfile whose base image the test
 * pushes into the app's space first (nothing comes from the internet). A new version that fails its
 * health check is rolled back while the previous one keeps serving; a stopped machine is booted once to
 * verify the new version and stopped again; a broken fly.toml is refused with its line and key.
 */

const APP = 'deploy-e2e';

test(
  'hangar deploy builds, rolls out, verifies and rolls back',
  { skip: NEEDS_ROOT, timeout: 300_000 },
  (t) =>
    withDeployFixture(t, APP, async ({ client, registryPort, version, deploy, page, writeFlyToml }) => {
      // A secret staged before the first deploy reaches the machines.
      await client.secrets.set(APP, { API_KEY: 'staged-before-deploy' });

      // 1. First deploy: build, push, one machine created, started and healthy.
      await version('v1');
      const first = await deploy();
      expectSuccess(first, 'first deploy');
      const firstSummary = JSON.parse(first.stdout);
      assert.equal(firstSummary.first_deploy, true);
      assert.match(
        firstSummary.image,
        new RegExp(`^127\\.0\\.0\\.1:${registryPort}/${APP}/${APP}:deployment-`),
      );
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
      await writeFlyToml(flyToml(APP).replace('internal_port = 8080', 'internal_port = "http"'));
      const invalid = await deploy();
      assert.notEqual(invalid.code, 0);
      assert.match(invalid.stderr, /line 17: http_service\.internal_port: must be a whole number/);
      assert.equal((await client.machines.get(APP, id)).instance_id, stopped.instance_id);
    }),
);

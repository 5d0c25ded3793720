import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expectSuccess, flyToml, withDeployFixture } from '../helpers/deploy-cli.js';
import { NEEDS_ROOT } from '../helpers/integration.js';

/**
 * `hangar deploy`'s strategies and steps beyond a plain rolling update, end to end (see deploy.test.ts
 * for the set-up): a suspended machine verified and suspended again, canary, bluegreen, and the release
 * command (a failing one stops the deploy before any machine changes).
 */

const APP = 'deploy-strategies';

test(
  'hangar deploy: suspended machines, canary, bluegreen, release command',
  { skip: NEEDS_ROOT, timeout: 300_000 },
  (t) =>
    withDeployFixture(t, APP, async ({ client, version, deploy, page, writeFlyToml }) => {
      await version('v1');
      const first = await deploy();
      expectSuccess(first, 'first deploy');
      const id: string = JSON.parse(first.stdout).machines[0].id;

      // 1. A suspended machine is verified and suspended again.
      await client.machines.start(APP, id);
      await client.waitForState(APP, id, 'started', { timeoutMs: 30_000 });
      await client.machines.suspend(APP, id);
      await client.waitForState(APP, id, 'suspended', { timeoutMs: 30_000 });
      await version('v4');
      const suspended = await deploy();
      expectSuccess(suspended, 'deploy onto a suspended machine');
      assert.deepEqual(
        JSON.parse(suspended.stdout).machines.map((m: { state: string; verified?: boolean }) => [
          m.state,
          m.verified,
        ]),
        [['suspended', true]],
      );
      assert.match(suspended.stderr, /new version verified, suspended again as before the deploy/);
      assert.equal((await client.machines.get(APP, id)).state, 'suspended');

      // 2. canary: an extra machine of the new version is verified and removed before the machine updates.
      await client.machines.start(APP, id);
      await client.waitForState(APP, id, 'started', { timeoutMs: 30_000 });
      await version('v5');
      const canary = await deploy('--strategy', 'canary');
      expectSuccess(canary, 'canary deploy');
      const canaryId = /Machine (\w+) \[app\]: canary healthy, removing it/.exec(canary.stderr)?.[1];
      assert.ok(canaryId && canaryId !== id, `a canary machine in:\n${canary.stderr}`);
      assert.equal((await client.machines.get(APP, canaryId)).state, 'destroyed');
      assert.deepEqual(
        JSON.parse(canary.stdout).machines.map((m: { id: string; action: string }) => [m.id, m.action]),
        [[id, 'updated']],
      );
      assert.equal(await page(id), 'v5');

      // 3. bluegreen: a verified twin takes over and the old machine goes.
      await version('v6');
      const bluegreen = await deploy('--strategy', 'bluegreen');
      expectSuccess(bluegreen, 'bluegreen deploy');
      const actions = JSON.parse(bluegreen.stdout).machines.map((m: { id: string; action: string }) => [
        m.id,
        m.action,
      ]);
      const green = actions.find(([, action]: [string, string]) => action === 'created')?.[0];
      assert.ok(green, JSON.stringify(actions));
      assert.deepEqual(actions, [
        [green, 'created'],
        [id, 'destroyed'],
      ]);
      const live = (await client.machines.list(APP)).filter((m) => m.state !== 'destroyed');
      assert.deepEqual(
        live.map((m) => [m.id, m.state, m.cordoned ?? false]),
        [[green, 'started', false]],
      );
      assert.equal(await page(green), 'v6');

      // 4. A release command that fails stops the deploy before any machine changes.
      const instance = (await client.machines.get(APP, green)).instance_id;
      await writeFlyToml(
        flyToml(APP).replace(
          'strategy = "rolling"',
          `strategy = "rolling"\n  release_command = "/bin/busybox sh -c 'echo migrating; exit 3'"`,
        ),
      );
      await version('v7');
      const release = await deploy();
      assert.notEqual(release.code, 0);
      assert.match(release.stderr, /Running release command: \/bin\/busybox sh -c echo migrating; exit 3/);
      assert.match(release.stderr, /^ {2}migrating$/m);
      assert.match(release.stderr, /Error: release command failed \(exit 3\): nothing was deployed/);
      assert.equal((await client.machines.get(APP, green)).instance_id, instance);
      // Positive control: a release command that succeeds lets the deploy through; its machine is gone after.
      await writeFlyToml(
        flyToml(APP).replace(
          'strategy = "rolling"',
          `strategy = "rolling"\n  release_command = "/bin/busybox echo migrated"`,
        ),
      );
      const released = await deploy();
      expectSuccess(released, 'deploy with a release command');
      assert.equal(JSON.parse(released.stdout).release_command_exit_code, 0);
      assert.match(released.stderr, /^ {2}migrated$/m);
      const remaining = (await client.machines.list(APP)).filter((m) => m.state !== 'destroyed');
      assert.deepEqual(
        remaining.map((m) => m.id),
        [green],
      );
    }),
);

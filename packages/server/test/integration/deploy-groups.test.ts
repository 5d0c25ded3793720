import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Machine } from '@hangar/sdk';
import { expectSuccess, withDeployFixture } from '../helpers/deploy-cli.js';
import { NEEDS_ROOT } from '../helpers/integration.js';

/**
 * `hangar deploy` with process groups and a volume, end to end (see deploy.test.ts for the set-up): a
 * first deploy creates two web machines (HA) and one worker with a volume made from [[mounts]], and
 * public addresses; an immediate redeploy updates all three and the worker keeps its volume; a group
 * taken out of fly.toml loses its machines. No health checks here (deploy.test.ts has them), so this
 * hangard needs no private networks.
 */

const APP = 'deploy-groups';

const flyToml = (withWorker: boolean) => `
app = "${APP}"
primary_region = "local"
kill_timeout = 1

[build]
  dockerfile = "Dockerfile"

[deploy]
  wait_timeout = "60s"

[processes]
  web = "/bin/busybox httpd -f -p 8080 -h /www"
${withWorker ? `  worker = "/bin/busybox sh -c 'while true; do date >> /data/ticks; sleep 1; done'"` : ''}

${
  withWorker
    ? `[[mounts]]
  source = "worker_data"
  destination = "/data"
  processes = ["worker"]
  initial_size = "1gb"`
    : ''
}

[http_service]
  internal_port = 8080
  processes = ["web"]

[[vm]]
  memory = "128mb"
`;

const groupOf = (m: Machine) => m.config?.metadata?.fly_process_group;

test(
  'hangar deploy: process groups, a volume, immediate, a removed group',
  { skip: NEEDS_ROOT, timeout: 300_000 },
  (t) =>
    withDeployFixture(t, APP, async ({ client, version, deployHa, writeFlyToml }) => {
      await writeFlyToml(flyToml(true));
      await version('v1');
      const first = await deployHa();
      expectSuccess(first, 'first deploy');
      const summary = JSON.parse(first.stdout);
      assert.deepEqual(
        summary.machines.map((m: { group: string; action: string }) => [m.group, m.action]),
        [
          ['web', 'created'],
          ['web', 'created'],
          ['worker', 'created'],
        ],
      );
      // Public addresses for an app with services, on its first deploy.
      assert.equal(summary.allocated_ips.length, 2);
      const types = (await client.ipAssignments.list(APP)).ips.map((ip) => ip.type).sort();
      assert.deepEqual(types, ['shared_v4', 'v6']);

      const machines = (await client.machines.list(APP)).filter((m) => m.state !== 'destroyed');
      const worker = machines.find((m) => groupOf(m) === 'worker');
      assert.ok(worker);
      assert.equal(worker.config?.guest?.memory_mb, 128);
      assert.equal(worker.config?.services, undefined);
      const volumeId = worker.config?.mounts?.[0]?.volume;
      assert.match(volumeId ?? '', /^vol_/);
      const volumes = await client.volumes.list(APP);
      assert.deepEqual(
        volumes.map((v) => [v.id, v.name, v.size_gb, v.attached_machine_id]),
        [[volumeId, 'worker_data', 1, worker.id]],
      );
      const ticks = await client.machines.exec(APP, worker.id, { command: ['/bin/busybox', 'ls', '/data'] });
      assert.match(ticks.stdout ?? '', /ticks/);

      // immediate: all three at once, the worker on its own volume still.
      await version('v2');
      const second = await deployHa('--strategy', 'immediate');
      expectSuccess(second, 'immediate deploy');
      const updated = JSON.parse(second.stdout).machines;
      assert.equal(updated.length, 3);
      assert.ok(updated.every((m: { action: string }) => m.action === 'updated'));
      const workerAfter = await client.machines.get(APP, worker.id);
      assert.equal(workerAfter.config?.mounts?.[0]?.volume, volumeId);
      assert.equal(workerAfter.config?.image, JSON.parse(second.stdout).image);

      // The worker group leaves fly.toml: its machine goes, the web machines stay.
      await writeFlyToml(flyToml(false));
      const third = await deployHa();
      expectSuccess(third, 'deploy without the worker group');
      const actions = JSON.parse(third.stdout).machines.map((m: { id: string; action: string }) => [
        m.id,
        m.action,
      ]);
      assert.deepEqual(
        actions.filter(([, action]: [string, string]) => action === 'destroyed'),
        [[worker.id, 'destroyed']],
      );
      const left = (await client.machines.list(APP)).filter((m) => m.state !== 'destroyed');
      assert.deepEqual(left.map(groupOf), ['web', 'web']);
    }),
);

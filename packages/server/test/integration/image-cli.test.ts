import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { MachinesClient } from '@hangar/sdk';
import { expectSuccess, hangarCli } from '../helpers/deploy-cli.js';
import { startTestHangard } from '../helpers/hangard.js';
import { NEEDS_ROOT, pollUntil } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * `hangar image push` and `hangar image show`: the built CLI against a real hangard and its registry. The
 * image is built locally into an OCI layout directory (nothing comes from the internet), pushed with the
 * CLI into the app's space, run by a machine, and shown with its digest and its repository's tags. A
 * deploy token of another app cannot push into this app's space (with its own app as positive control).
 */

const APP = 'imgcli-a';
const OTHER = 'imgcli-b';

test('hangar image push and image show', { skip: NEEDS_ROOT, timeout: 240_000 }, async (t) => {
  const registryPort = await freePort();
  const h = await startTestHangard(t, {
    config: { runtime: 'required', registry: { port: registryPort, insecure: [] } },
  });
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false });
  const work = await mkdtemp(join(tmpdir(), 'hangar-image-cli-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  const registry = `127.0.0.1:${registryPort}`;
  await client.apps.create({ app_name: APP, org_slug: 'personal' });
  await client.apps.create({ app_name: OTHER, org_slug: 'personal' });
  try {
    const layout = join(work, 'oci');
    await buildTestImage({ registry, repository: `${APP}/${APP}`, tag: 'build', ociLayout: layout });

    // 1. Push the layout under two tags; stdout is the reference with its digest, progress on stderr.
    const v1 = await hangarCli(h, registryPort, [
      'image',
      'push',
      `${layout}:build`,
      '-a',
      APP,
      '--tag',
      'v1',
    ]);
    expectSuccess(v1, 'image push v1');
    const pushed = v1.stdout.trim();
    const match = new RegExp(
      `^${registry.replace(/\./g, '\\.')}/${APP}/${APP}:v1@(sha256:[0-9a-f]{64})$`,
    ).exec(pushed);
    assert.ok(match, `pushed reference: ${pushed}`);
    const digest = match[1];
    assert.match(v1.stderr, new RegExp(`Pushing oci:.*:build to ${registry}/${APP}/${APP}:v1`));
    assert.match(v1.stderr, /Writing manifest/, 'skopeo progress is shown');
    assert.match(v1.stderr, new RegExp(`Pushed 1 layer, [\\d.]+ (kB|MB) \\(${digest}\\)`));
    const v2 = await hangarCli(h, registryPort, [
      'image',
      'push',
      `oci:${layout}:build`,
      '-a',
      APP,
      '--tag',
      'v2',
      '--json',
    ]);
    expectSuccess(v2, 'image push v2 --json');
    const v2Json = JSON.parse(v2.stdout);
    assert.equal(v2Json.digest, digest, 'the same image has the same digest under another tag');
    assert.equal(v2Json.reference, `${registry}/${APP}/${APP}:v2`);
    assert.equal(v2Json.layers, 1);

    // 2. A machine runs it; image show names its image, digest and the repository's tags.
    const machine = await client.machines.create(APP, { config: { image: `${registry}/${APP}/${APP}:v1` } });
    await pollUntil(
      'the machine to start',
      async () => ((await client.machines.get(APP, machine.id)).state === 'started' ? true : undefined),
      60_000,
      200,
    );
    const shown = await hangarCli(h, registryPort, ['image', 'show', '-a', APP, '--json']);
    expectSuccess(shown, 'image show --json');
    const view = JSON.parse(shown.stdout);
    assert.equal(view.machines.length, 1);
    assert.equal(view.machines[0].id, machine.id);
    assert.equal(view.machines[0].image, `${registry}/${APP}/${APP}:v1`);
    assert.equal(view.machines[0].digest, digest);
    assert.deepEqual(view.repositories, [{ repository: `${APP}/${APP}`, tags: ['v1', 'v2'] }]);
    const table = await hangarCli(h, registryPort, ['image', 'show', '-a', APP]);
    expectSuccess(table, 'image show');
    assert.match(table.stdout, new RegExp(`${machine.id}\\s.*${APP}:v1\\s+${digest}`));
    assert.match(table.stdout, new RegExp(`Tags of ${registry}/${APP}/${APP}: v1, v2`));

    // 3. A deploy token of another app pushes into its own space (control), not into this app's.
    const otherToken = (await h.call('POST', `/v1/apps/${OTHER}/deploy_token`, {})).body.token as string;
    const asOther = (args: string[]) =>
      hangarCli({ ...h, token: otherToken }, registryPort, ['image', 'push', `${layout}:build`, ...args]);
    expectSuccess(await asOther(['-a', OTHER, '--tag', 'own']), 'push into its own app');
    const refused = await asOther(['-a', APP, '--tag', 'intruder']);
    assert.notEqual(refused.code, 0, 'a push into another app’s space must fail');
    assert.match(refused.stderr, /^Error: skopeo copy failed/m);
    assert.match(refused.stderr, /denied|DENIED|403/);
    assert.ok(!refused.stderr.includes(otherToken), 'the token never appears in the error');
    const after = JSON.parse(
      (await hangarCli(h, registryPort, ['image', 'show', '-a', APP, '--json'])).stdout,
    );
    assert.deepEqual(after.repositories[0].tags, ['v1', 'v2'], 'nothing was pushed by the intruder');

    // 4. Mistakes are one line with a hint.
    const archive = join(work, 'web.tar');
    await writeFile(archive, 'not an archive');
    const file = await hangarCli(h, registryPort, ['image', 'push', archive, '-a', APP]);
    assert.equal(file.code, 1);
    assert.match(file.stderr, /is a file/);
    assert.match(file.stderr, /oci-archive:.*docker-archive:/);
  } finally {
    await client.apps.delete(APP, { force: true }).catch(() => {});
    await client.apps.delete(OTHER, { force: true }).catch(() => {});
  }
});

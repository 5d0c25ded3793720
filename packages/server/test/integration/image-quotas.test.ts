import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT, ok, pollUntil } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Image quotas with a real hangard, its real registry and real pushes (skopeo): the app's space in the
 * registry (images and bytes), what an app holds unpacked on the host (images), and the bounds on one
 * pull (compressed and unpacked). Every refusal has a positive control beside it and names the setting
 * that raises it. Machines are removed by hangard's close (an after-hook).
 */

const MIB = 1024 * 1024;

function skopeo(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('skopeo', args, { timeout: 60_000 }, (error, _stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stderr });
    });
  });
}

/** A push that must fail: its error, as skopeo shows it to the user. */
async function pushRefused(push: Promise<string>): Promise<string> {
  let message = '';
  await assert.rejects(push, (error: Error & { stderr?: string }) => {
    message = `${error.message} ${error.stderr ?? ''}`;
    return true;
  });
  return message;
}

async function waitStarted(h: TestHangard, app: string, id: string): Promise<void> {
  const wait = await h.call('GET', `/v1/apps/${app}/machines/${id}/wait?state=started&timeout=60`);
  assert.equal(wait.status, 200, JSON.stringify(wait.body));
}

/** The error a machine's failed boot recorded. */
async function bootFailure(h: TestHangard, app: string, id: string): Promise<string> {
  return pollUntil(
    `machine ${id} to fail its boot`,
    async () => {
      const machine = (await h.call('GET', `/v1/apps/${app}/machines/${id}`)).body;
      if (machine.state !== 'failed') return undefined;
      const event = (machine.events as Json[]).find((e) => e.type === 'start' && e.status === 'failed');
      return event?.request?.error as string | undefined;
    },
    60_000,
  );
}

test('image quotas: registry space, unpacked images per app, and the size of one pull', {
  skip: NEEDS_ROOT,
  timeout: 300_000,
}, async (t) => {
  const port = await freePort();
  const registry = `127.0.0.1:${port}`;
  const h = await startTestHangard(t, {
    config: {
      runtime: 'required',
      registry: { port },
      quotas: {
        registryImagesPerApp: 3,
        registryBytesPerApp: 16 * MIB,
        imagesPerApp: 2,
        imageBytesPerApp: 200 * MIB,
      },
      images: { maxPullBytes: 6 * MIB, maxUnpackedBytes: 24 * MIB },
    },
  });
  const push = (
    app: string,
    name: string,
    files: Record<string, string | { content: Buffer; mode: number }> = {},
  ) => buildTestImage({ registry, token: h.token, repository: `${app}/${name}`, tag: '1', files });

  await t.test('an app holds at most quotas.registryImagesPerApp images in the registry', async () => {
    await createApp(h, 'iq-reg');
    for (const name of ['a', 'b', 'c']) await push('iq-reg', name);
    const refused = await pushRefused(push('iq-reg', 'd'));
    assert.match(refused, /quota exceeded: app iq-reg may hold at most 3 images/);
    assert.match(refused, /quotas\.registryImagesPerApp/);
    // Positive control: the same image under another tag is no new image.
    const again = await skopeo([
      'copy',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      '--src-creds',
      `x:${h.token}`,
      '--dest-creds',
      `x:${h.token}`,
      `docker://${registry}/iq-reg/a:1`,
      `docker://${registry}/iq-reg/a:again`,
    ]);
    assert.equal(again.code, 0, again.stderr);
    // Another app has its own count.
    await createApp(h, 'iq-reg2');
    await push('iq-reg2', 'd');
  });

  await t.test("an app's images take at most quotas.registryBytesPerApp in the registry", async () => {
    await createApp(h, 'iq-bytes');
    await push('iq-bytes', 'small');
    const refused = await pushRefused(
      push('iq-bytes', 'huge', { '/data/blob': { content: randomBytes(20 * MIB), mode: 0o644 } }),
    );
    assert.match(
      refused,
      /quota exceeded: app iq-bytes's images in Hangar's registry may take at most 16 MiB/,
    );
    assert.match(refused, /quotas\.registryBytesPerApp/);
    // Positive control: the refused upload left the app its room.
    await push('iq-bytes', 'small2');
  });

  await t.test('an app holds at most quotas.imagesPerApp images unpacked on the host', async () => {
    await createApp(h, 'iq-run');
    const images = [await push('iq-run', 'a'), await push('iq-run', 'b'), await push('iq-run', 'c')];
    for (const image of images.slice(0, 2)) {
      const machine = await ok(h, 'POST', '/v1/apps/iq-run/machines', { config: { image } });
      await waitStarted(h, 'iq-run', machine.id);
    }
    const refused = await h.call('POST', '/v1/apps/iq-run/machines', { config: { image: images[2] } });
    assert.equal(refused.status, 422, JSON.stringify(refused.body));
    assert.equal(refused.body.status, 'quota_exceeded');
    assert.match(refused.body.error, /at most 2 distinct images unpacked/);
    assert.match(refused.body.error, /quotas\.imagesPerApp/);
    // Positive control: an image the app already holds runs again.
    const same = await ok(h, 'POST', '/v1/apps/iq-run/machines', { config: { image: images[0] } });
    await waitStarted(h, 'iq-run', same.id);
    // An update to a third image is refused the same way, and leaves the machine on its image.
    const update = await h.call('POST', `/v1/apps/iq-run/machines/${same.id}`, {
      config: { image: images[2] },
    });
    assert.equal(update.status, 422, JSON.stringify(update.body));
    assert.match(update.body.error, /quotas\.imagesPerApp/);
    assert.equal((await ok(h, 'GET', `/v1/apps/iq-run/machines/${same.id}`)).state, 'started');
  });

  await t.test('one pull brings at most images.maxPullBytes, unpacked images.maxUnpackedBytes', async () => {
    await createApp(h, 'iq-big');
    // Positive control: a small image boots in the same app.
    const small = await ok(h, 'POST', '/v1/apps/iq-big/machines', {
      config: { image: await push('iq-big', 'small') },
    });
    await waitStarted(h, 'iq-big', small.id);

    const heavy = await push('iq-big', 'heavy', {
      '/data/blob': { content: randomBytes(7 * MIB), mode: 0o644 },
    });
    const heavyMachine = await ok(h, 'POST', '/v1/apps/iq-big/machines', { config: { image: heavy } });
    const pullError = await bootFailure(h, 'iq-big', heavyMachine.id);
    assert.match(pullError, /is too large: its layers are [\d.]+ MiB, and this host pulls at most 6 MiB/);
    assert.match(pullError, /images\.maxPullBytes/);
    assert.doesNotMatch(
      pullError,
      /hangar-test|\/tmp\/|skopeo/,
      'nothing of the host in what the tenant reads',
    );

    // 40 MiB of zeros compress to almost nothing: the pull is small, the unpacked image is not.
    const bomb = await push('iq-big', 'bomb', {
      '/data/zeros': { content: Buffer.alloc(40 * MIB), mode: 0o644 },
    });
    const bombMachine = await ok(h, 'POST', '/v1/apps/iq-big/machines', { config: { image: bomb } });
    const unpackError = await bootFailure(h, 'iq-big', bombMachine.id);
    assert.match(unpackError, /is too large: it unpacks to more than 24 MiB/);
    assert.match(unpackError, /images\.maxUnpackedBytes/);
  });
});

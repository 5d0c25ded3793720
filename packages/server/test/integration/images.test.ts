import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ImagePullError, ImageStore, type ImageStoreOptions } from '../../src/runtime/images/image-store.js';
import { LocalRegistry } from '../../src/runtime/images/registry.js';
import { HOST_PLATFORM } from '../../src/runtime/images/resolve-manifest.js';
import { uidRangeForApp } from '../../src/runtime/uid-range.js';
import { parseReference } from '../../src/shared/image-reference.js';
import { buildTestImage, freePort, startTestRegistry } from '../helpers/test-image.js';

/**
 * The image side of the runtime against real tools: docker-registry, umoci and skopeo. Every test closes
 * the registries it starts and removes its directories through t.after, so a failing assertion leaves
 * nothing running.
 */

const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const REGISTRY_MODULE = fileURLToPath(new URL('../../src/runtime/images/registry.ts', import.meta.url));
/** Failures must come back quickly; this is a loose bound, far above the expected few hundred ms. */
const PROMPT_MS = 10_000;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

async function tempDir(t: TestContext, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function newStore(t: TestContext, options: Partial<ImageStoreOptions> = {}): Promise<ImageStore> {
  const store = new ImageStore({ dir: join(await tempDir(t, 'hangar-images-'), 'images'), ...options });
  t.after(() => store.close());
  return store;
}

function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

function killIfAlive(pid: number | undefined): void {
  if (pid !== undefined && isAlive(pid)) process.kill(pid, 'SIGKILL');
}

/** Times a promise; the times are printed for the record, never asserted. */
async function timed<T>(label: string, work: () => Promise<T>): Promise<T> {
  const start = performance.now();
  const result = await work();
  console.log(`# ${label}: ${(performance.now() - start).toFixed(1)} ms`);
  return result;
}

/** Hangar's own registry as the image store sees it: plain HTTP, with hangard's credential. */
const own = (address: string) => ({ ownRegistry: { addresses: [address], credential: 'test-credential' } });

async function rejectsQuickly(
  work: () => Promise<unknown>,
  reason: ImagePullError['reason'],
  message: RegExp,
  detail?: RegExp,
): Promise<void> {
  const start = performance.now();
  await assert.rejects(work, (error: unknown) => {
    assert.ok(error instanceof ImagePullError, `expected ImagePullError, got ${String(error)}`);
    assert.equal(error.reason, reason, error.message);
    assert.match(error.message, message);
    if (detail) {
      assert.match(error.detail, detail);
      // What the host saw stays in the detail, out of the message tenants read.
      assert.doesNotMatch(error.message, detail);
    }
    return true;
  });
  const elapsed = performance.now() - start;
  assert.ok(elapsed < PROMPT_MS, `took ${elapsed} ms`);
}

test('parseReference follows Docker rules', () => {
  const digest = `sha256:${'a'.repeat(64)}`;
  const cases: [string, ReturnType<typeof parseReference>][] = [
    ['alpine', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest', digest: '' }],
    ['acme/app:1.2', { registry: 'docker.io', repository: 'acme/app', tag: '1.2', digest: '' }],
    [
      'index.docker.io/acme/app',
      { registry: 'docker.io', repository: 'acme/app', tag: 'latest', digest: '' },
    ],
    ['127.0.0.1:5000/app', { registry: '127.0.0.1:5000', repository: 'app', tag: 'latest', digest: '' }],
    ['localhost/a/b:x', { registry: 'localhost', repository: 'a/b', tag: 'x', digest: '' }],
    [
      'registry.fly.io/my-app:deployment-01',
      {
        registry: 'registry.fly.io',
        repository: 'my-app',
        tag: 'deployment-01',
        digest: '',
      },
    ],
    [`app@${digest}`, { registry: 'docker.io', repository: 'library/app', tag: '', digest }],
    [`host:5000/app:1@${digest}`, { registry: 'host:5000', repository: 'app', tag: '1', digest }],
    ['[::1]:5000/app', { registry: '[::1]:5000', repository: 'app', tag: 'latest', digest: '' }],
  ];
  for (const [input, expected] of cases) assert.deepEqual(parseReference(input), expected, input);
  for (const bad of [
    '',
    'UPPER/Case',
    'app:',
    'app@sha256:123',
    'docker://alpine',
    'a b',
    'app:bad/tag',
    '-app',
  ]) {
    assert.throws(() => parseReference(bad), /invalid image reference/, bad);
  }
});

test('the registry starts, answers, and stops', async (t) => {
  const registry = await startTestRegistry(t);
  const response = await fetch(`http://${registry.address}/v2/`);
  assert.equal(response.status, 200);
  const pid = registry.pid;
  assert.ok(pid !== undefined && isAlive(pid));
  assert.equal(Number(readFileSync(registry.pidFile, 'utf8')), pid);
  const config = readFileSync(registry.configFile, 'utf8');
  assert.match(config, /secret: "[0-9a-f]{64}"/);
  assert.match(config, new RegExp(`addr: "${registry.address}"`));
  await registry.close();
  await registry.close();
  assert.ok(!isAlive(pid));
  assert.ok(!existsSync(registry.pidFile));
  await assert.rejects(fetch(`http://${registry.address}/v2/`));
});

test('a registry left running by a SIGKILLed hangard is replaced at the next start', async (t) => {
  const dir = join(await tempDir(t, 'hangar-registry-'), 'registry');
  const port = await freePort();
  const leftovers: number[] = [];
  t.after(() => {
    for (const pid of leftovers) killIfAlive(pid);
  });

  // A separate process plays hangard, so that SIGKILL leaves its registry orphaned as it would in production.
  const script = `
    const { LocalRegistry } = await import(${JSON.stringify(REGISTRY_MODULE)});
    const registry = new LocalRegistry({ dir: ${JSON.stringify(dir)}, port: ${port} });
    await registry.start();
    console.log('ready ' + registry.pid);
    setInterval(() => {}, 60_000);`;
  const owner = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => owner.kill('SIGKILL'));
  const firstPid = await new Promise<number>((resolve, reject) => {
    let out = '';
    owner.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /ready (\d+)/.exec(out);
      if (match) resolve(Number(match[1]));
    });
    owner.once('exit', (code) =>
      reject(new Error(`the owner exited (${code}) before its registry was ready`)),
    );
  });
  leftovers.push(firstPid);
  const secret = /secret: "(\w+)"/.exec(readFileSync(join(dir, 'config.yml'), 'utf8'))?.[1];
  owner.kill('SIGKILL');
  await new Promise((resolve) => owner.once('exit', resolve));
  assert.ok(isAlive(firstPid), 'the orphaned registry keeps running');

  const second = new LocalRegistry({ dir, port });
  t.after(() => second.close());
  await timed('registry start after an orphan', () => second.start());
  assert.ok(!isAlive(firstPid), 'the orphan was stopped');
  assert.notEqual(second.pid, firstPid);
  assert.equal((await fetch(`http://${second.address}/v2/`)).status, 200);
  assert.equal(/secret: "(\w+)"/.exec(readFileSync(second.configFile, 'utf8'))?.[1], secret);

  // The registry itself SIGKILLed: a stale pid file, and a restart that simply works.
  const secondPid = second.pid!;
  leftovers.push(secondPid);
  process.kill(secondPid, 'SIGKILL');
  const third = new LocalRegistry({ dir, port });
  t.after(() => third.close());
  await third.start();
  assert.equal((await fetch(`http://${third.address}/v2/`)).status, 200);
});

test('the registry reports a taken port and a missing binary clearly', async (t) => {
  const dir = await tempDir(t, 'hangar-registry-');
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const port = (blocker.address() as { port: number }).port;

  const taken = new LocalRegistry({ dir: join(dir, 'a'), port });
  t.after(() => taken.close());
  await assert.rejects(taken.start(), /127\.0\.0\.1:\d+ is already in use by another process/);

  const missing = new LocalRegistry({
    dir: join(dir, 'b'),
    port: await freePort(),
    binary: 'no-such-registry',
  });
  t.after(() => missing.close());
  await assert.rejects(missing.start(), /not installed \(install Debian's docker-registry package/);
});

test('image store', async (t) => {
  const registry = await startTestRegistry(t);
  const address = registry.address;
  const store = await newStore(t, own(address));
  const appA = uidRangeForApp(1);
  const appB = uidRangeForApp(2);

  const reference = await timed('build + push', () =>
    buildTestImage({
      registry: address,
      repository: 'acme/web',
      tag: 'v1',
      files: { '/etc/motd': 'hi\n', '/app/run.sh': { content: '#!/bin/sh\necho run\n', mode: 0o755 } },
      config: {
        cmd: ['/bin/sh', '-c', 'echo hello'],
        entrypoint: ['/bin/busybox'],
        env: { GREETING: 'hello world', EMPTY: '' },
        workingDir: '/app',
        stopSignal: 'SIGINT',
        labels: { 'org.example.team': 'web' },
      },
    }),
  );
  assert.equal(reference, `${address}/acme/web:v1`);
  let digest = '';
  let rootfsA = '';

  await t.test('prepare pulls and unpacks, owned by the mapped ids, with the image config', async () => {
    const image = await timed('cold prepare (resolve + skopeo copy + umoci unpack)', () =>
      store.prepare(reference, appA),
    );
    digest = image.ref.digest;
    rootfsA = image.rootfs;
    assert.match(digest, /^sha256:[a-f0-9]{64}$/);
    assert.deepEqual(image.ref, {
      registry: address,
      repository: 'acme/web',
      tag: 'v1',
      digest,
      labels: { 'org.example.team': 'web' },
    });
    assert.deepEqual(image.config, {
      entrypoint: ['/bin/busybox'],
      cmd: ['/bin/sh', '-c', 'echo hello'],
      env: { GREETING: 'hello world', EMPTY: '' },
      workingDir: '/app',
      user: '',
      stopSignal: 'SIGINT',
      labels: { 'org.example.team': 'web' },
    });
    assert.ok(image.rootfs.startsWith(store.dir));
    for (const path of ['.', 'bin/busybox', 'tmp', 'etc/motd', 'app/run.sh']) {
      const stat = statSync(join(image.rootfs, path));
      assert.equal(stat.uid, appA.hostId, path);
      assert.equal(stat.gid, appA.hostId, path);
    }
    assert.equal(statSync(join(image.rootfs, 'bin/busybox')).mode & 0o777, 0o755);
    assert.equal(statSync(join(image.rootfs, 'tmp')).mode & 0o7777, 0o1777);
    assert.equal(statSync(join(image.rootfs, 'app/run.sh')).mode & 0o777, 0o755);
    assert.equal(readFileSync(join(image.rootfs, 'www/index.html'), 'utf8'), 'hello from acme/web:v1\n');
    assert.deepEqual(store.stats, { resolves: 1, copies: 1, unpacks: 1, hits: 0 });
  });

  await t.test('a second prepare is a cache hit: no copy, no unpack', async () => {
    const before = statSync(rootfsA);
    const image = await timed('cache hit by tag (one manifest request)', () =>
      store.prepare(reference, appA),
    );
    assert.equal(image.rootfs, rootfsA);
    assert.equal(image.ref.digest, digest);
    const after = statSync(rootfsA);
    assert.equal(after.ino, before.ino);
    assert.equal(after.mtimeMs, before.mtimeMs);
    const pinned = `${address}/acme/web@${digest}`;
    const byDigest = await timed('cache hit by digest (no registry)', () => store.prepare(pinned, appA));
    assert.equal(byDigest.rootfs, rootfsA);
    assert.equal(byDigest.ref.tag, '');
    // `localhost:<port>` names the same insecure registry as `127.0.0.1:<port>`.
    const viaLocalhost = await store.prepare(reference.replace('127.0.0.1', 'localhost'), appA);
    assert.equal(viaLocalhost.rootfs, rootfsA);
    assert.equal(viaLocalhost.ref.registry, address.replace('127.0.0.1', 'localhost'));
    assert.deepEqual(store.stats, { resolves: 3, copies: 1, unpacks: 1, hits: 3 });
  });

  await t.test('the same image for another mapping is unpacked again, with other owners', async () => {
    const image = await store.prepare(reference, appB);
    assert.notEqual(image.rootfs, rootfsA);
    assert.equal(statSync(join(image.rootfs, 'bin/busybox')).uid, appB.hostId);
    assert.equal(statSync(join(rootfsA, 'bin/busybox')).uid, appA.hostId);
    assert.equal(store.stats.copies, 1, 'the layout already had the image');
    assert.equal(store.stats.unpacks, 2);
  });

  await t.test('a digest reference pulls into a fresh store', async (t) => {
    const fresh = await newStore(t, own(address.replace('127.0.0.1', 'localhost')));
    const image = await timed('cold prepare by digest, fresh store', () =>
      fresh.prepare(`${address}/acme/web@${digest}`, appA),
    );
    assert.equal(image.ref.digest, digest);
    assert.equal(image.ref.tag, '');
    assert.equal(image.config.stopSignal, 'SIGINT');
    assert.equal(statSync(join(image.rootfs, 'bin/busybox')).uid, appA.hostId);
  });

  await t.test('an image index resolves to the entry for this host', async () => {
    const manifestUrl = (tag: string) => `http://${address}/v2/acme/web/manifests/${tag}`;
    const manifest = await fetch(manifestUrl('v1'), { headers: { accept: OCI_MANIFEST } });
    const size = (await manifest.arrayBuffer()).byteLength;
    const entry = (platform: { os: string; architecture: string }) => ({
      mediaType: OCI_MANIFEST,
      digest,
      size,
      platform,
    });
    const pushIndex = async (tag: string, platforms: { os: string; architecture: string }[]) => {
      const body = JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: platforms.map(entry),
      });
      const response = await fetch(manifestUrl(tag), {
        method: 'PUT',
        headers: { 'content-type': OCI_INDEX },
        body,
      });
      assert.equal(response.status, 201, await response.text());
      return response.headers.get('docker-content-digest')!;
    };
    const other = { os: 'linux', architecture: 'riscv64' };
    const indexDigest = await pushIndex('multi', [other, HOST_PLATFORM]);
    const before = store.stats;
    const image = await store.prepare(`${address}/acme/web:multi`, appA);
    assert.equal(image.ref.digest, digest, 'the digest of the platform manifest, not of the index');
    assert.equal(image.rootfs, rootfsA);
    const byIndexDigest = await store.prepare(`${address}/acme/web@${indexDigest}`, appA);
    assert.equal(byIndexDigest.ref.digest, digest);
    assert.equal(store.stats.unpacks, before.unpacks);
    assert.equal(store.stats.hits - before.hits, 2);

    await pushIndex('foreign', [other]);
    await rejectsQuickly(
      () => store.prepare(`${address}/acme/web:foreign`, appA),
      'unsupported',
      new RegExp(
        `has no ${HOST_PLATFORM.os}/${HOST_PLATFORM.architecture} variant \\(it has: linux/riscv64\\)`,
      ),
    );
  });

  await t.test('concurrent prepares of one image unpack it once', async () => {
    const other = await buildTestImage({ registry: address, repository: 'acme/worker' });
    const before = store.stats;
    const images = await timed('4 concurrent cold prepares of one image', () =>
      Promise.all([1, 2, 3, 4].map(() => store.prepare(other, appA))),
    );
    assert.equal(new Set(images.map((image) => image.rootfs)).size, 1);
    assert.equal(store.stats.copies - before.copies, 1);
    assert.equal(store.stats.unpacks - before.unpacks, 1);
    assert.deepEqual(images[0]?.config.cmd, ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www']);
    assert.equal(images[0]?.config.workingDir, '/');
    assert.equal(images[0]?.config.stopSignal, undefined);
  });

  await t.test('failures reject quickly with a helpful ImagePullError', async (t) => {
    await rejectsQuickly(
      () => store.prepare(`${address}/acme/web:v2`, appA),
      'not_found',
      /was not found in its registry: acme\/web has no tag v2 \(its tags: v1[^)]*\); check the name and tag, or push it first with skopeo copy .* docker:\/\/127\.0\.0\.1:\d+\/acme\/web:v2/,
    );
    await rejectsQuickly(
      () => store.prepare(`${address}/acme/nothing:v1`, appA),
      'not_found',
      /the repository acme\/nothing does not exist there/,
    );
    await rejectsQuickly(
      () => store.prepare(`${address}/acme/web@sha256:${'0'.repeat(64)}`, appA),
      'not_found',
      /has no manifest sha256:0{64}/,
    );
    await rejectsQuickly(
      () => store.prepare('Bad/Name', appA),
      'invalid_reference',
      /invalid image reference/,
    );
    await rejectsQuickly(() => store.prepare('app@sha256:12', appA), 'invalid_reference', /64 lowercase hex/);

    const closed = `127.0.0.1:${await freePort()}`;
    const withClosed = await newStore(t, own(closed));
    await rejectsQuickly(
      () => withClosed.prepare(`${closed}/app:1`, appA),
      'unreachable',
      /could not be reached: check the name, and that it is up and public$/,
      /ECONNREFUSED 127\.0\.0\.1:\d+/,
    );
    // An operator's plain-HTTP registry goes through skopeo, and its words stay in the detail.
    const withInsecure = await newStore(t, { insecureRegistries: [closed] });
    await rejectsQuickly(
      () => withInsecure.prepare(`${closed}/app:1`, appA),
      'unreachable',
      /could not be reached/,
      /connection refused/,
    );
    // Neither Hangar's own nor allowed: a loopback registry is refused before any connection.
    await rejectsQuickly(
      () => store.prepare(`${closed}/app:1`, appA),
      'refused',
      /image registry 127\.0\.0\.1:\d+ is refused: it is a loopback/,
    );

    // Through skopeo as well, so its stderr is what explains the failure (in the detail).
    const viaSkopeo = await newStore(t, { ...own(address), directManifestFetch: false });
    await rejectsQuickly(
      () => viaSkopeo.prepare(`${address}/acme/web:v2`, appA),
      'not_found',
      /was not found in its registry: check the name and tag, or push it first /,
      /manifest unknown/,
    );
  });

  await t.test('a registry that never answers times out, and an abort cancels', async (t) => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => silent.close(() => resolve()));
    });
    const host = `127.0.0.1:${(silent.address() as { port: number }).port}`;
    for (const directManifestFetch of [true, false]) {
      const hanging = await newStore(t, {
        ...own(host),
        pullTimeoutMs: 500,
        directManifestFetch,
      });
      await rejectsQuickly(
        () => hanging.prepare(`${host}/app:1`, appA),
        'timeout',
        /took longer than 0\.5 s/,
      );
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 100);
      const patient = await newStore(t, { ...own(host), directManifestFetch });
      await rejectsQuickly(
        () => patient.prepare(`${host}/app:1`, appA, controller.signal),
        'cancelled',
        /cancelled/,
      );
    }
  });

  await t.test('gc removes what is not in use', async () => {
    const worker = await store.prepare(`${address}/acme/worker:latest`, appA);
    const result = await store.gc(new Set([digest]));
    assert.deepEqual(result.digests, [worker.ref.digest]);
    assert.deepEqual(result.bundles, [join(worker.rootfs, '..')]);
    assert.ok(!existsSync(worker.rootfs));
    // The layout's blobs went too (OCI images are stored as pushed, so the manifest keeps its digest).
    assert.ok(!existsSync(join(store.dir, 'oci/blobs/sha256', worker.ref.digest.slice('sha256:'.length))));
    assert.ok(existsSync(join(store.dir, 'oci/blobs/sha256', digest.slice('sha256:'.length))));
    assert.ok(existsSync(join(rootfsA, 'bin/busybox')));
    const again = await store.prepare(`${address}/acme/worker:latest`, appA);
    assert.ok(existsSync(join(again.rootfs, 'bin/busybox')), 'a collected image can be pulled again');
    assert.deepEqual(await store.gc(new Set([digest, worker.ref.digest])), { bundles: [], digests: [] });
  });
});

test('leftovers of an interrupted unpack are removed when the store is created', async (t) => {
  const dir = join(await tempDir(t, 'hangar-images-'), 'images');
  mkdirSync(join(dir, 'tmp', 'abc-123'), { recursive: true });
  writeFileSync(join(dir, 'tmp', 'abc-123', 'partial'), 'x');
  const store = new ImageStore({ dir });
  t.after(() => store.close());
  assert.ok(!existsSync(join(dir, 'tmp', 'abc-123')));
  assert.ok(existsSync(join(dir, 'tmp')));
});

test("an app's unpacked images: concurrent prepares take its last slot once, and gc gives it back", async (t) => {
  const registry = await startTestRegistry(t);
  const address = registry.address;
  const store = await newStore(t, { ...own(address), limits: { imagesPerApp: 2 } });
  const app = uidRangeForApp(7);
  const other = uidRangeForApp(8);
  const [first, second, third] = await Promise.all(
    ['one', 'two', 'three'].map((name) => buildTestImage({ registry: address, repository: `quota/${name}` })),
  );
  const kept = await store.prepare(first!, app);
  assert.equal(store.usage(app).images.size, 1);
  assert.ok(store.usage(app).bytes > 1024 * 1024, 'the unpacked bytes are recorded (busybox alone is 2 MB)');

  // One slot left, two new images at once: exactly one is unpacked.
  const results = await Promise.allSettled([store.prepare(second!, app), store.prepare(third!, app)]);
  const refused = results.filter((r) => r.status === 'rejected');
  assert.equal(refused.length, 1, JSON.stringify(results.map((r) => r.status)));
  const error = (refused[0] as PromiseRejectedResult).reason;
  assert.ok(error instanceof ImagePullError);
  assert.equal(error.reason, 'quota');
  assert.equal(error.code, 'quota_exceeded');
  assert.match(
    error.message,
    /at most 2 distinct images unpacked on this host \(it holds 2\).*quotas\.imagesPerApp/,
  );
  assert.equal(store.usage(app).images.size, 2);
  // Positive controls: an image the app holds is a cache hit; another app has its own count.
  await store.prepare(first!, app);
  const loser = results[0]!.status === 'rejected' ? second! : third!;
  await store.prepare(loser, other);
  await store.admitImage(first!, app);
  await assert.rejects(store.admitImage(loser, app), /quotas\.imagesPerApp/);

  // The image no machine uses counts until gc removes it; then the third one fits.
  const won = results.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<{
    ref: { digest: string };
  }>;
  await store.gc(new Set([kept.ref.digest]));
  assert.equal(store.usage(app).images.size, 1);
  assert.ok(!store.usage(app).images.has(won.value.ref.digest));
  await store.admitImage(loser, app);
  await store.prepare(loser, app);
  assert.equal(store.usage(app).images.size, 2);
});

import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT, ok, pollUntil, sleep } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Logs are bounded where they are written and where they are read: a machine writing at full speed
 * stays under its cap on disk, rotation loses no line, and a follower that stops reading makes hangard
 * read no further (its memory stays flat) while the rest of the API answers.
 */

const CAP = 256 * 1024;

/**
 * Memory this process still holds after a full collection: the V8 heap in use plus Buffers. RSS alone is
 * not a measure of retention (V8 grows and keeps its heap as it likes, and the runner shares the process),
 * so an unread follower's backlog is looked for where it would live.
 */
function retainedMiB(): number {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
  const usage = process.memoryUsage();
  return (usage.heapUsed + usage.arrayBuffers) / 1024 / 1024;
}

async function setUp(t: TestContext): Promise<{ h: TestHangard; registry: string }> {
  const port = await freePort();
  const h = await startTestHangard(t, {
    config: { runtime: 'required', registry: { port }, logs: { maxBytesPerMachine: CAP } },
  });
  return { h, registry: `127.0.0.1:${port}` };
}

async function logBytes(h: TestHangard, id: string): Promise<number> {
  const dir = join(h.dataDir, 'machines', id);
  let total = 0;
  for (const file of ['log', 'log.1'])
    total += await stat(join(dir, file)).then(
      (s) => s.size,
      () => 0,
    );
  return total;
}

async function started(h: TestHangard, app: string, id: string) {
  const answer = await h.call('GET', `/v1/apps/${app}/machines/${id}/wait?state=started&timeout=30`);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

test('logs are bounded on disk and in memory', { skip: NEEDS_ROOT, timeout: 150_000 }, async (t) => {
  const { h, registry } = await setUp(t);
  const app = await createApp(h, 'logs-app');

  await t.test('rotation loses no line and keeps the files under the cap', async () => {
    const counter = await buildTestImage({
      registry,
      token: h.token,
      repository: `${app}/counter`,
      config: { cmd: ['/bin/sh', '-c', 'seq 1 200000; exec sleep 1000'] },
    });
    const body = await ok(h, 'POST', `/v1/apps/${app}/machines`, { config: { image: counter } });
    await started(h, app, body.id);
    const dir = join(h.dataDir, 'machines', body.id);
    const text = await pollUntil('the last number in the log', async () => {
      // Between the writer's rename and its next append there is no `log` for a moment.
      const all = `${await readFile(join(dir, 'log.1'), 'utf8').catch(() => '')}${await readFile(join(dir, 'log'), 'utf8').catch(() => '')}`;
      return all.endsWith('\n200000\n') ? all : undefined;
    }).catch(async (error: Error) => {
      const last = (await readFile(join(dir, 'log'), 'utf8').catch(() => '')).slice(-200);
      throw new Error(`${error.message}; the log ends with ${JSON.stringify(last)}`);
    });
    // ~1.3 MB of output went through five times the cap: what is kept is one unbroken run of lines.
    const numbers = text.trimEnd().split('\n').slice(1).map(Number); // the first may be a line's tail
    for (let i = 1; i < numbers.length; i++) assert.equal(numbers[i], numbers[i - 1]! + 1, `at ${i}`);
    assert.ok(numbers.length > 10_000, `kept ${numbers.length} lines`);
    assert.ok((await logBytes(h, body.id)) <= CAP);
    // tail reads backwards across both files.
    const tail = await fetch(`${h.url}/v1/apps/${app}/machines/${body.id}/logs?tail=3`, {
      headers: { authorization: `Bearer ${h.token}` },
    });
    const lines = (await tail.text())
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as Json).message);
    assert.deepEqual(lines, ['199998', '199999', '200000']);
    await ok(h, 'DELETE', `/v1/apps/${app}/machines/${body.id}?force=true`);
  });

  await t.test('a follower that stops reading: memory flat, disk under the cap, API answers', async () => {
    const chatty = await buildTestImage({
      registry,
      token: h.token,
      repository: `${app}/chatty`,
      config: { cmd: ['/bin/yes', 'the quick brown fox jumps over the lazy dog'] },
    });
    const body = await ok(h, 'POST', `/v1/apps/${app}/machines`, { config: { image: chatty } });
    const id = body.id as string;
    await started(h, app, id);
    // A raw client: sends the request, reads the first bytes, then never reads again.
    const url = new URL(h.url);
    const socket = net.connect({ host: url.hostname, port: Number(url.port) });
    t.after(() => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.write(
      `GET /v1/apps/${app}/machines/${id}/logs?follow=true&tail=10 HTTP/1.1\r\nhost: ${url.host}\r\n` +
        `authorization: Bearer ${h.token}\r\n\r\n`,
    );
    await new Promise((resolve) => socket.once('data', resolve));
    socket.pause();
    // hangard runs in this process: its memory is this process's. Measured once the stream has settled.
    await sleep(2_000);
    const before = process.memoryUsage();
    const retainedBefore = retainedMiB();
    let maxDisk = 0;
    let slowest = 0;
    const deadline = Date.now() + 6_000;
    while (Date.now() < deadline) {
      maxDisk = Math.max(maxDisk, await logBytes(h, id));
      const t0 = performance.now();
      const answer = await h.call('GET', `/v1/apps/${app}/machines/${id}`);
      slowest = Math.max(slowest, performance.now() - t0);
      assert.equal(answer.status, 200);
      await sleep(200);
    }
    const after = process.memoryUsage();
    const retainedGrewMiB = retainedMiB() - retainedBefore;
    const rssMiB = (after.rss - before.rss) / 1024 / 1024;
    const buffersMiB = (after.arrayBuffers - before.arrayBuffers) / 1024 / 1024;
    t.diagnostic(
      `6 s more of a stalled follower: retained +${retainedGrewMiB.toFixed(1)} MiB (rss +${rssMiB.toFixed(1)}), ` +
        `buffers +${buffersMiB.toFixed(1)} MiB, log files at most ${maxDisk} bytes (cap ${CAP}), ` +
        `slowest GET ${slowest.toFixed(0)} ms`,
    );
    // `yes` writes hundreds of MB in 6 s: a follower read without backpressure would retain far more than this.
    assert.ok(maxDisk <= CAP, `log files reached ${maxDisk} bytes`);
    assert.ok(retainedGrewMiB < 16, `hangard retained ${retainedGrewMiB.toFixed(1)} MiB more`);
    assert.ok(buffersMiB < 16, `buffers grew by ${buffersMiB.toFixed(1)} MiB`);
    assert.ok(slowest < 2_000, `a GET took ${slowest.toFixed(0)} ms`);
    socket.destroy();
    await ok(h, 'DELETE', `/v1/apps/${app}/machines/${id}?force=true`);
  });

  await t.test('shutdown does not wait on a follower: the stream is cut and close() returns', async () => {
    const body = await ok(h, 'POST', `/v1/apps/${app}/machines`, {
      config: { image: await buildTestImage({ registry, token: h.token, repository: `${app}/idle` }) },
    });
    await started(h, app, body.id);
    const follow = await fetch(`${h.url}/v1/apps/${app}/machines/${body.id}/logs?follow=true`, {
      headers: { authorization: `Bearer ${h.token}` },
    });
    assert.equal(follow.status, 200);
    const reading = follow.body!.getReader();
    // Without the cut, close() would wait for this client for as long as it stays (forever here).
    await h.close();
    const ended = await (async () => {
      try {
        while (!(await reading.read()).done);
        return 'ended';
      } catch {
        return 'cut';
      }
    })();
    assert.ok(['ended', 'cut'].includes(ended));
  });
});

import assert from 'node:assert/strict';
import { totalmem } from 'node:os';
import { test } from 'node:test';
import { createApp, startTestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Capacity admission with real machines (crun or runc, real images from Hangar's registry): N creates
 * and then N starts fired at once at a host with room for exactly K. hangard's close removes them.
 */

const MIB = 1024 * 1024;
const N = 5;
const K = 2;

test('concurrent creates and starts of real machines: exactly K of N are admitted', {
  skip: NEEDS_ROOT,
  timeout: 240_000,
}, async (t) => {
  const port = await freePort();
  const h = await startTestHangard(t, {
    config: {
      runtime: 'required',
      registry: { port },
      // Room for K machines of 128 MB, not K + 1.
      capacity: { memoryOvercommit: ((K * 128 + 64) * MIB) / totalmem(), cpuOvercommit: 64 },
    },
  });
  await createApp(h, 'admit');
  const image = await buildTestImage({
    registry: `127.0.0.1:${port}`,
    token: h.token,
    repository: 'admit/web',
  });
  const config = { image, guest: { cpus: 1, memory_mb: 128 } };
  const answers = await Promise.all(
    Array.from({ length: N }, () => h.call('POST', '/v1/apps/admit/machines', { config })),
  );
  const admitted = answers.filter((a) => a.status === 200);
  assert.equal(admitted.length, K, JSON.stringify(answers.map((a) => [a.status, a.body?.error])));
  for (const refused of answers.filter((a) => a.status !== 200)) {
    assert.equal(refused.status, 422);
    assert.equal(refused.body.status, 'insufficient_capacity');
    assert.match(refused.body.error, /capacity\.memoryOvercommit/);
  }
  const ids = admitted.map((a) => a.body.id as string);
  for (const id of ids) {
    const wait = await h.call('GET', `/v1/apps/admit/machines/${id}/wait?state=started&timeout=60`);
    assert.equal(wait.status, 200, JSON.stringify(wait.body));
  }

  // Stopped, and beside N - K machines created without launching: N starts at once, K pass.
  for (const id of ids)
    assert.equal((await h.call('POST', `/v1/apps/admit/machines/${id}/stop`)).status, 200);
  for (let i = 0; i < N - K; i++) {
    const idle = await h.call('POST', '/v1/apps/admit/machines', { config, skip_launch: true });
    assert.equal(idle.status, 200, JSON.stringify(idle.body));
    ids.push(idle.body.id);
  }
  const starts = await Promise.all(ids.map((id) => h.call('POST', `/v1/apps/admit/machines/${id}/start`)));
  assert.equal(starts.filter((s) => s.status === 200).length, K, JSON.stringify(starts.map((s) => s.body)));
  for (const refused of starts.filter((s) => s.status !== 200)) {
    assert.equal(refused.body.status, 'insufficient_capacity');
  }
  const machines = (await h.call('GET', '/v1/apps/admit/machines')).body as Json[];
  const holding = machines.filter((m) => ['starting', 'started'].includes(m.state));
  assert.equal(holding.length, K);
  // A refused start leaves its machine as it was.
  assert.equal(machines.filter((m) => m.state === 'failed').length, 0);
});

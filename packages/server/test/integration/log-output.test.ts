import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { formatLogRecord } from '../../src/shared/log-format.js';
import { forceCleanup } from '../helpers/host-cleanup.js';
import { freePort } from '../helpers/ports.js';

/**
 * The built hangard with stdout to a pipe (not a terminal) writes one JSON object per request, and a
 * request's Authorization header (the token) appears neither there nor in the text form of the record.
 */

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

test('the built hangard writes JSON lines to a pipe, without the token', { timeout: 60_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-log-format-'));
  const port = await freePort();
  const config = join(dir, 'hangard.json');
  await writeFile(
    config,
    JSON.stringify({
      dataDir: join(dir, 'data'),
      listen: { host: '127.0.0.1', port },
      runtime: 'off',
      network: { mode: 'off', egress: false },
      proxy: { mode: 'off', https: 'off' },
    }),
  );
  const child = spawn(process.execPath, [MAIN, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  // One hook, in order: hangard stops, what it mounted in its data dir goes, then the directory.
  t.after(async () => {
    child.kill('SIGTERM');
    await closed;
    await forceCleanup(join(dir, 'data'), new Set());
    await rm(dir, { recursive: true, force: true });
  });
  let stdout = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stdout += c.toString()));
  const deadline = Date.now() + 30_000;
  const until = async (what: string, ok: () => boolean) => {
    while (!ok()) {
      if (Date.now() > deadline || child.exitCode !== null) assert.fail(`${what}; output:\n${stdout}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  await until('hangard to listen', () => stdout.includes('Machines API on'));
  const token = (await readFile(join(dir, 'data/personal.token'), 'utf8')).trim();
  const response = await fetch(`http://127.0.0.1:${port}/v1/apps?org_slug=personal`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(response.status, 200);
  const requestId = response.headers.get('fly-request-id');
  await until('the request line', () => stdout.includes(`"reqId":"${requestId}"`));
  const line = stdout.split('\n').find((l) => l.includes(`"reqId":"${requestId}"`)) ?? '';
  const record = JSON.parse(line);
  assert.equal(record.method, 'GET');
  assert.equal(record.url, '/v1/apps?org_slug=personal');
  assert.equal(record.statusCode, 200);
  assert.equal(typeof record.responseTime, 'number');
  assert.equal(
    stdout.split('\n').filter((l) => l.includes(`"reqId":"${requestId}"`)).length,
    1,
    'one line per request',
  );
  assert.ok(!stdout.includes(token), 'the token is never logged');
  assert.ok(!/authorization/i.test(stdout), 'no Authorization header is logged');
  assert.doesNotMatch(stdout, /Deprecation|FSTDEP/, 'hangard uses no deprecated option');
  // The same record in text form carries no token either.
  assert.ok(!formatLogRecord(record).includes(token));

  // A machine's state changes are events of the same log, one JSON object each.
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const app = await fetch(`http://127.0.0.1:${port}/v1/apps`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ app_name: 'log-output', org_slug: 'personal' }),
  });
  assert.equal(app.status, 201);
  const created = await fetch(`http://127.0.0.1:${port}/v1/apps/log-output/machines`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ skip_launch: true, config: { image: 'docker.io/library/busybox:1.36' } }),
  });
  const machine = (await created.json()) as { id: string; state: string };
  assert.equal(created.status, 200, JSON.stringify(machine));
  await until('the machine state event', () => stdout.includes(`"machine":"${machine.id}"`));
  const event = JSON.parse(stdout.split('\n').find((l) => l.includes(`"machine":"${machine.id}"`)) ?? '');
  assert.equal(event.msg, 'machine state');
  assert.equal(event.to, machine.state);
});

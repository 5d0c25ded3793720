import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMachinesApiError, MachinesClient } from '@hangar/sdk';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { NEEDS_ROOT, pollUntil } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * `hangar ssh console` and `hangar ssh sftp` against a real machine: a command that sees a terminal, an
 * interactive shell driven through a pseudo-terminal, the remote exit code as the CLI's, files copied in
 * and out byte for byte, and the refusals of tokens without write access to the app.
 */

const CLI = fileURLToPath(new URL('../../../cli/dist/main.js', import.meta.url));
const APP = 'console-app';
const OTHER = 'console-other';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end, feeding `input` (then closing stdin). */
function runProgram(file: string, args: string[], env: Record<string, string>, input = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

test('ssh console and sftp in a real machine', { skip: NEEDS_ROOT, timeout: 300_000 }, async (t) => {
  const registryPort = await freePort();
  const h = await startTestHangard(t, {
    config: { runtime: 'required', registry: { port: registryPort, insecure: [] } },
  });
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false });
  const dir = await mkdtemp(join(tmpdir(), 'hangar-console-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  try {
    await scenario(t, h, client, registryPort, dir);
  } finally {
    // Before hangard closes (its after-hook runs first).
    for (const app of [APP, OTHER]) {
      await client.apps.delete(app, { force: true }).catch((error: unknown) => {
        if (!isMachinesApiError(error, 'not_found')) throw error;
      });
    }
  }
});

async function scenario(
  t: TestContext,
  h: TestHangard,
  client: MachinesClient,
  registryPort: number,
  dir: string,
): Promise<void> {
  await client.apps.create({ app_name: APP, org_slug: 'personal' });
  await client.apps.create({ app_name: OTHER, org_slug: 'personal' });
  const image = await buildTestImage({
    registry: `127.0.0.1:${registryPort}`,
    token: h.token,
    repository: `${APP}/web`,
  });
  const machine = await client.machines.launch(APP, { config: { image } });
  await client.waitForState(APP, machine.id, 'started', { timeoutMs: 60_000 });
  const deploy = (await client.tokens.create({ type: 'deploy', org_slug: 'personal', app_name: APP })).token;
  const otherDeploy = (await client.tokens.create({ type: 'deploy', org_slug: 'personal', app_name: OTHER }))
    .token;
  const readonly = (await client.tokens.create({ type: 'readonly', org_slug: 'personal' })).token;
  const env = (token: string) => ({
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HANGAR_API_URL: h.url,
    HANGAR_API_TOKEN: token,
    TERM: 'xterm-256color',
  });
  const hangar = (token: string, args: string[], input = '') =>
    runProgram(process.execPath, [CLI, ...args], env(token), input);

  await t.test(
    '-C runs with a terminal: a pty path, TERM and the size; the exit code is the CLI’s',
    async () => {
      const result = await hangar(deploy, [
        'ssh',
        'console',
        '-a',
        APP,
        '-C',
        '/bin/busybox tty; echo "TERM=$TERM"; /bin/busybox stty size; exit 3',
      ]);
      assert.equal(result.code, 3, result.stderr);
      assert.match(result.stdout, /\/dev\/pts\/\d+\r?$/m);
      assert.match(result.stdout, /TERM=xterm-256color\r?$/m);
      assert.match(result.stdout, /(^|\s)24 80\r?$/m, 'the default size without a local terminal');
      // Control: without a terminal the same question has the other answer.
      const plain = await hangar(deploy, [
        'ssh',
        'console',
        '-a',
        APP,
        '--no-pty',
        '-C',
        'test -t 0 || echo no-tty',
      ]);
      assert.equal(plain.code, 0, plain.stderr);
      assert.equal(plain.stdout, 'no-tty\n');
    },
  );

  await t.test('an interactive shell driven through a pseudo-terminal', async () => {
    // util-linux script gives the CLI a terminal on its stdin (so it goes raw) and relays what is typed.
    const result = await runProgram(
      'script',
      [
        '--quiet',
        '--return',
        '--command',
        `"${process.execPath}" "${CLI}" ssh console -a ${APP}`,
        '/dev/null',
      ],
      env(deploy),
      'echo "answer-$((6 * 7))"\nexit 5\n',
    );
    assert.equal(result.code, 5, `${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout, /answer-42/);
  });

  await t.test('a resize frame reaches the machine’s terminal (the command sees the new size)', async () => {
    const query = new URLSearchParams({ command: JSON.stringify(['/bin/sh']), rows: '10', cols: '20' });
    const socket = await new Promise<Duplex>((resolve, reject) => {
      const request = http.request(`${h.url}/v1/apps/${APP}/machines/${machine.id}/console?${query}`, {
        headers: { authorization: `Bearer ${deploy}`, connection: 'Upgrade', upgrade: 'hangar-console' },
      });
      request.on('upgrade', (_response, upgraded, head) => {
        if (head.length > 0) upgraded.unshift(head);
        resolve(upgraded);
      });
      request.on('response', (response) => reject(new Error(`console answered ${response.statusCode}`)));
      request.on('error', reject);
      request.end();
    });
    const frame = (type: number, payload: Buffer) => {
      const header = Buffer.alloc(5);
      header.writeUInt8(type, 0);
      header.writeUInt32BE(payload.length, 1);
      return Buffer.concat([header, payload]);
    };
    const size = Buffer.alloc(4);
    size.writeUInt16BE(50, 0);
    size.writeUInt16BE(60, 2);
    const frames: { type: number; payload: Buffer }[] = [];
    let pending = Buffer.alloc(0);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const length = pending.readUInt32BE(1);
        frames.push({ type: pending.readUInt8(0), payload: pending.subarray(5, 5 + length) });
        pending = pending.subarray(5 + length);
      }
    });
    const output = () =>
      Buffer.concat(frames.filter((f) => f.type === 0).map((f) => f.payload)).toString('utf8');
    // The shell prints the size it started with, then waits for the new one (a resize is applied after
    // its frame arrives), then exits. The resize is sent once the first size is printed.
    socket.write(
      frame(
        0,
        Buffer.from(
          '/bin/busybox stty size; until [ "$(/bin/busybox stty size)" = "50 60" ]; do sleep 0.05; done; echo "now-$(/bin/busybox stty size | tr " " x)"; exit 4\n',
        ),
      ),
    );
    await pollUntil('the size asked for at start', async () =>
      /(^|\s)10 20\r?$/m.test(output()) ? true : undefined,
    );
    socket.write(frame(3, size));
    await closed;
    assert.match(output(), /now-50x60/);
    const exit = frames.at(-1)!;
    assert.equal(exit.type, 2);
    assert.equal(exit.payload.readInt32BE(0), 4);
  });

  await t.test('sftp put, get and shell round-trip a binary file', async () => {
    const original = randomBytes(300 * 1024 + 7);
    const local = join(dir, 'blob.bin');
    const back = join(dir, 'back.bin');
    await writeFile(local, original);
    const put = await hangar(deploy, ['ssh', 'sftp', 'put', local, '/tmp/blob.bin', '-a', APP]);
    assert.equal(put.code, 0, put.stderr);
    const get = await hangar(deploy, ['ssh', 'sftp', 'get', '/tmp/blob.bin', back, '-a', APP]);
    assert.equal(get.code, 0, get.stderr);
    assert.ok(original.equals(await readFile(back)), 'the file came back byte for byte');
    const missing = await hangar(deploy, [
      'ssh',
      'sftp',
      'get',
      '/tmp/none.bin',
      join(dir, 'none'),
      '-a',
      APP,
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no such regular file/);
  });

  await t.test('tokens without write access to the app are refused, beside a control', async () => {
    const control = await hangar(deploy, [
      'ssh',
      'console',
      '-a',
      APP,
      '--machine',
      machine.id,
      '-C',
      'echo in',
    ]);
    assert.equal(control.code, 0, control.stderr);
    // crun 1.8 sometimes relays the last output of a command that ends at once through its own log
    // (a timestamp and colour around it): the line is there either way.
    assert.match(control.stdout, /(^|\s)in\r?$/m);
    const ro = await hangar(readonly, [
      'ssh',
      'console',
      '-a',
      APP,
      '--machine',
      machine.id,
      '-C',
      'echo in',
    ]);
    assert.equal(ro.code, 1);
    assert.match(ro.stderr, /read-only/);
    assert.doesNotMatch(ro.stdout, /in/);
    const other = await hangar(otherDeploy, [
      'ssh',
      'console',
      '-a',
      APP,
      '--machine',
      machine.id,
      '-C',
      'echo in',
    ]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /deploy token is for another app/);
  });
}

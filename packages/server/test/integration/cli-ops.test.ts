import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMachinesApiError, MachinesClient } from '@hangar/sdk';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { NEEDS_ROOT } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * The CLI's operating commands (auth, machine update/clone/leases, ips, secrets, volume snapshots and
 * forks, scale, status, logs, releases, doctor) against a real hangard with a real runtime. The CLI is its
 * built binary run as a child process with only the environment each case gives it; the SDK (built
 * package) checks what the commands did. Every app made here is deleted in a `finally` before hangard
 * closes, even when an assertion fails.
 */

const CLI = fileURLToPath(new URL('../../../cli/dist/main.js', import.meta.url));

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  /** Extra environment; `HANGAR_API_URL` and `HANGAR_API_TOKEN` are set unless `bare`. */
  env?: Record<string, string>;
  bare?: boolean;
  /** Piped into stdin (else stdin is empty and closed). */
  stdin?: string;
}

/** Runs the built `hangar` binary; resolves with its exit code and output. */
function hangar(h: TestHangard, args: string[], options: RunOptions = {}): Promise<CliResult> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ...(options.bare ? {} : { HANGAR_API_URL: h.url, HANGAR_API_TOKEN: h.token }),
    ...options.env,
  };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
    child.stdin.end(options.stdin ?? '');
  });
}

function expectSuccess(result: CliResult, what: string): void {
  assert.equal(
    result.code,
    0,
    `${what}: exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
}

test('the CLI operates apps on a real hangard', { skip: NEEDS_ROOT, timeout: 300_000 }, async (t) => {
  const registryPort = await freePort();
  const h = await startTestHangard(t, { config: { runtime: 'required', registry: { port: registryPort } } });
  const pushImage = (app: string, cmd?: string[]) =>
    buildTestImage({
      registry: `127.0.0.1:${registryPort}`,
      token: h.token,
      repository: `${app}/web`,
      ...(cmd ? { config: { cmd } } : {}),
    });
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false, retries: false });
  /** Creates an app and registers nothing: callers delete it in `finally` with `removeApp`. */
  const removeApp = (app: string) =>
    client.apps.delete(app, { force: true }).catch((error: unknown) => {
      if (!isMachinesApiError(error, 'not_found')) throw error;
    });

  await t.test('auth login stores a checked token 0600; whoami, token, orgs list, logout', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hangar-cli-config-'));
    try {
      const env = { HANGAR_CONFIG_DIR: dir };
      const file = join(dir, 'config.json');
      const refused = await hangar(h, ['auth', 'login', '--url', h.url], {
        bare: true,
        env,
        stdin: 'hg1_0000000000_forged\n',
      });
      assert.equal(refused.code, 1, refused.stdout);
      assert.match(refused.stderr, /refused this token \(nothing was stored\)\nHint: /);
      assert.throws(() => statSync(file), /ENOENT/);

      const login = await hangar(h, ['auth', 'login', '--url', h.url], {
        bare: true,
        env,
        stdin: `${h.token}\n`,
      });
      expectSuccess(login, 'auth login');
      assert.match(login.stdout, /with a org token of organization personal/);
      assert.ok(
        !login.stdout.includes(h.token) && !login.stderr.includes(h.token),
        'the token is not echoed',
      );
      assert.equal(statSync(file).mode & 0o777, 0o600);

      // From now on the stored login alone reaches hangard.
      const who = await hangar(h, ['auth', 'whoami', '--json'], { bare: true, env });
      expectSuccess(who, 'auth whoami');
      const me = JSON.parse(who.stdout);
      assert.equal(me.type, 'org');
      assert.equal(me.org_slug, 'personal');
      assert.equal(me.api_url, h.url);
      const token = await hangar(h, ['auth', 'token'], { bare: true, env });
      assert.equal(token.stdout, `${h.token}\n`);
      const orgs = await hangar(h, ['orgs', 'list', '--json'], { bare: true, env });
      expectSuccess(orgs, 'orgs list');
      assert.deepEqual(
        (JSON.parse(orgs.stdout) as { slug: string }[]).map((o) => o.slug),
        ['personal'],
      );
      expectSuccess(
        await hangar(h, ['apps', 'list'], { bare: true, env }),
        'apps list with the stored login',
      );

      expectSuccess(await hangar(h, ['auth', 'logout'], { bare: true, env }), 'auth logout');
      assert.throws(() => statSync(file), /ENOENT/);
      // The version endpoint the doctor reads answers with a token only.
      assert.equal((await client.platform.version()).name, 'hangard');
      const anonymous = await fetch(`${h.url}/v1/platform/version`);
      assert.equal(anonymous.status, 401);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMachinesApiError, MachinesClient } from '@hangar/sdk';
import { startTestHangard, type TestHangard } from './hangard.js';
import { buildTestImage, freePort } from './test-image.js';

/**
 * For the tests of `hangar deploy`: the built CLI run as a child process against a real hangard with
 * machines, private networks and the proxy (whose health checks a deploy waits for), and an app whose
 * versions are built with buildah from a Dockerfile `FROM` a base image pushed into its space first.
 * `hangarCli` and `expectSuccess` serve the other tests of the built CLI too.
 */

const CLI = fileURLToPath(new URL('../../../cli/dist/main.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `hangar` with only hangard's URL, token and registry from the environment. */
export function hangarCli(h: TestHangard, registryPort: number, args: string[]): Promise<CliResult> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    HANGAR_API_URL: h.url,
    HANGAR_API_TOKEN: h.token,
    HANGAR_REGISTRY: `127.0.0.1:${registryPort}`,
  };
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env, timeout: 180_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export function expectSuccess(result: CliResult, what: string): void {
  assert.equal(
    result.code,
    0,
    `${what}: exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
}

/** The app's fly.toml: one http_service on 8080 with a health check on /healthz every second. */
export const flyToml = (app: string) => `
app = "${app}"
primary_region = "local"
kill_timeout = 2

[build]
  dockerfile = "Dockerfile"

[deploy]
  strategy = "rolling"
  wait_timeout = "60s"

[env]
  GREETING = "hello"

[http_service]
  internal_port = 8080
  auto_stop_machines = "off"

  [[http_service.checks]]
    interval = "1s"
    timeout = "1s"
    path = "/healthz"
`;

export interface DeployFixture {
  h: TestHangard;
  client: MachinesClient;
  registryPort: number;
  /** The directory of fly.toml, the Dockerfile and its files. */
  dir: string;
  /** Writes the Dockerfile of one version: its page, and a health page unless `healthy` is false. */
  version(name: string, healthy?: boolean): Promise<void>;
  writeFlyToml(text: string): Promise<void>;
  /** `hangar deploy -c <dir>/fly.toml --no-ha --no-public-ips --json ...extra`. */
  deploy(...extra: string[]): Promise<CliResult>;
  /** `hangar deploy -c <dir>/fly.toml --json ...extra` (two machines per group with services). */
  deployHa(...extra: string[]): Promise<CliResult>;
  /** The page a machine serves (read inside it). */
  page(id: string): Promise<string | undefined>;
}

/**
 * Starts hangard (with private networks and the proxy unless `network: false`), creates `app` with its
 * base image and fly.toml, runs `body`, then removes the app (before hangard closes) and the directory,
 * even when `body` fails.
 */
export async function withDeployFixture(
  t: TestContext,
  app: string,
  body: (fixture: DeployFixture) => Promise<void>,
  options: { network?: boolean } = {},
): Promise<void> {
  const registryPort = await freePort();
  const proxyPort = await freePort();
  // Health checks reach machines over their private networks, which the host lends to one hangard at a
  // time: a test whose fly.toml declares no checks runs without them, and waits for no other test.
  const network = options.network ?? true;
  const h = await startTestHangard(t, {
    config: {
      runtime: 'required',
      registry: { port: registryPort, insecure: [] },
      ...(network
        ? {
            network: { mode: 'required', egress: false },
            proxy: { mode: 'on', http: `127.0.0.1:${proxyPort}`, https: 'off', domain: 'hangar.localhost' },
          }
        : {}),
    },
  });
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false });
  const dir = await mkdtemp(join(tmpdir(), 'hangar-deploy-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await client.apps.create({ app_name: app, org_slug: 'personal' });
  try {
    // The base image: busybox httpd serving /www on 8080, pushed into the app's space.
    const base = await buildTestImage({
      registry: `127.0.0.1:${registryPort}`,
      token: h.token,
      repository: `${app}/base`,
      tag: '1',
    });
    const writeFlyToml = (text: string) => writeFile(join(dir, 'fly.toml'), text);
    await writeFlyToml(flyToml(app));
    await body({
      h,
      client,
      registryPort,
      dir,
      writeFlyToml,
      async version(name, healthy = true) {
        await writeFile(join(dir, 'index.html'), `${name}\n`);
        await writeFile(join(dir, 'healthz'), 'ok\n');
        const lines = [`FROM ${base}`, 'COPY index.html /www/index.html'];
        if (healthy) lines.push('COPY healthz /www/healthz');
        await writeFile(join(dir, 'Dockerfile'), `${lines.join('\n')}\n`);
      },
      deploy: (...extra) =>
        hangarCli(h, registryPort, [
          'deploy',
          '-c',
          join(dir, 'fly.toml'),
          '--no-ha',
          '--no-public-ips',
          '--json',
          ...extra,
        ]),
      deployHa: (...extra) =>
        hangarCli(h, registryPort, ['deploy', '-c', join(dir, 'fly.toml'), '--json', ...extra]),
      async page(id) {
        return (
          await client.machines.exec(app, id, { command: ['/bin/cat', '/www/index.html'] })
        ).stdout?.trim();
      },
    });
  } finally {
    await client.apps.delete(app, { force: true }).catch((error: unknown) => {
      if (!isMachinesApiError(error, 'not_found')) throw error;
    });
  }
}

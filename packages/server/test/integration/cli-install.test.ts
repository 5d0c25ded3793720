import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startTestHangard } from '../helpers/hangard.js';

/**
 * The CLI installs on its own, as on a laptop with only Node: the sdk and cli packages are packed with
 * `npm pack`, installed with `npm install --prefix` into an empty directory, and the installed `hangar`
 * logs in to a real hangard and lists its apps. The install is offline: the CLI's own dependencies are
 * packed from the project's installed copies, so nothing is downloaded.
 */

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

/** The CLI's runtime dependencies outside the workspace, transitively, as installed in the project. */
async function runtimeDependencies(): Promise<string[]> {
  const found = new Set<string>();
  const visit = async (pkgJson: string) => {
    const deps = Object.keys(JSON.parse(await readFile(pkgJson, 'utf8')).dependencies ?? {});
    for (const dep of deps) {
      if (dep.startsWith('@hangar/') || found.has(dep)) continue;
      found.add(dep);
      await visit(join(ROOT, 'node_modules', dep, 'package.json'));
    }
  };
  await visit(join(ROOT, 'packages/cli/package.json'));
  return [...found].sort();
}

async function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const { stdout } = await run('npm', args, { cwd, env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

test('the packed CLI installs alone and talks to a remote hangard', { timeout: 240_000 }, async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'hangar-cli-install-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  const packs = join(work, 'packs');
  const prefix = join(work, 'prefix');
  const home = join(work, 'home');
  // npm writes its cache and logs under HOME: a home of the test's own keeps the user's untouched.
  const npmEnv = {
    ...process.env,
    HOME: home,
    npm_config_cache: join(home, '.npm'),
    npm_config_update_notifier: 'false',
  };

  // The packages as published: built dist (the test suite builds it; `prepack` builds it on publish).
  await run('mkdir', ['-p', packs, prefix, home]);
  const packed = JSON.parse(
    await npm(
      [
        'pack',
        '--json',
        '--ignore-scripts',
        '--pack-destination',
        packs,
        '-w',
        'packages/sdk',
        '-w',
        'packages/cli',
      ],
      ROOT,
      npmEnv,
    ),
  ) as Array<{ name: string; filename: string; files: Array<{ path: string }> }>;
  const cli = packed.find((p) => p.name === '@hangar/cli');
  const sdk = packed.find((p) => p.name === '@hangar/sdk');
  assert.ok(cli && sdk, 'both packages are packed');
  const cliFiles = cli.files.map((f) => f.path);
  assert.ok(cliFiles.includes('dist/main.js'), 'the bin is in the package');
  assert.ok(!cliFiles.some((f) => f.startsWith('src/') || f.startsWith('test/')), 'no sources or tests');
  assert.ok(sdk.files.some((f) => f.path === 'dist/index.js'));

  const deps = await runtimeDependencies();
  assert.ok(deps.includes('commander'));
  for (const dep of deps) {
    await npm(
      ['pack', '--ignore-scripts', '--pack-destination', packs, join(ROOT, 'node_modules', dep)],
      ROOT,
      npmEnv,
    );
  }
  const tarballs = (await run('ls', [packs])).stdout.split('\n').filter((f) => f.endsWith('.tgz'));
  await npm(
    [
      'install',
      '--offline',
      '--no-audit',
      '--no-fund',
      '--prefix',
      prefix,
      ...tarballs.map((f) => join(packs, f)),
    ],
    work,
    npmEnv,
  );

  const bin = join(prefix, 'node_modules/.bin/hangar');
  const h = await startTestHangard(t);
  const hangar = async (args: string[], input?: string) => {
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: home,
      HANGAR_CONFIG_DIR: join(home, 'config'),
    };
    const child = execFile(bin, args, { env, cwd: work, timeout: 60_000 });
    child.stdin?.end(input ?? '');
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (c: string) => (stdout += c));
    child.stderr?.on('data', (c: string) => (stderr += c));
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
    return { code, stdout, stderr };
  };
  const version = await hangar(['--version']);
  assert.equal(version.code, 0, version.stderr);
  const own = JSON.parse(await readFile(join(ROOT, 'packages/cli/package.json'), 'utf8')).version;
  assert.equal(version.stdout.trim(), own);
  const help = await hangar(['--help']);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: hangar/m);
  assert.match(help.stdout, /^ {2}image\|images\s/m);

  await h.call('POST', '/v1/apps', { app_name: 'standalone-cli', org_slug: 'personal' });
  const login = await hangar(['auth', 'login', '--url', h.url], h.token);
  assert.equal(login.code, 0, `auth login: ${login.stderr}`);
  assert.ok(
    !login.stdout.includes(h.token) && !login.stderr.includes(h.token),
    'login never prints the token',
  );
  const list = await hangar(['apps', 'list', '--json']);
  assert.equal(list.code, 0, `apps list: ${list.stderr}`);
  assert.deepEqual(
    (JSON.parse(list.stdout) as Array<{ name: string }>).map((a) => a.name),
    ['standalone-cli'],
  );
});

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMachinesApiError, MachinesClient } from '@hangar/sdk';
import { type CliResult, expectSuccess } from '../helpers/deploy-cli.js';
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

/** A running `hangar` that does not end by itself (`logs` following): wait on its output, then stop it. */
function hangarFollowing(h: TestHangard, args: string[]) {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HANGAR_API_URL: h.url, HANGAR_API_TOKEN: h.token };
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: Array<() => void> = [];
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    for (const wake of waiters.splice(0)) wake();
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  return {
    /** Resolves once `until(stdout)` holds; fails after `timeoutMs` with what was printed. */
    async waitFor(until: (stdout: string) => boolean, timeoutMs = 60_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!until(stdout)) {
        const left = deadline - Date.now();
        if (left <= 0 || child.exitCode !== null) {
          assert.fail(`hangar ${args.join(' ')}: condition not met\nstdout:\n${stdout}\nstderr:\n${stderr}`);
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(left, 1_000));
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    },
    async stop(): Promise<CliResult> {
      child.kill('SIGTERM');
      const code = await closed;
      return { code: code ?? 1, stdout, stderr };
    },
  };
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
  /** `hangar machine run IMAGE -a APP --memory 128 ...extra --json`, which must succeed: the machine printed. */
  const runMachine = async (app: string, image: string, extra: string[], what: string) => {
    const run = await hangar(h, ['machine', 'run', image, '-a', app, '--memory', '128', ...extra, '--json']);
    expectSuccess(run, what);
    return JSON.parse(run.stdout) as { id: string; instance_id: string };
  };

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

  await t.test('machine update, leases, restart --force-stop and clone', async () => {
    const app = 'ops-update';
    try {
      expectSuccess(await hangar(h, ['apps', 'create', app]), 'apps create');
      // SIGINT (the default stop signal) is trapped: a graceful stop says so and exits 0; a kill cannot.
      const image = await pushImage(app, [
        '/bin/busybox',
        'sh',
        '-c',
        'trap "echo graceful stop; exit 0" INT; echo booted; while true; do /bin/busybox sleep 1; done',
      ]);
      const first = await runMachine(app, image, [], 'machine run');
      const id = first.id;

      const update = await hangar(h, [
        'machine',
        'update',
        id,
        '-a',
        app,
        '-e',
        'COLOR=blue',
        '--vm-memory',
        '192',
      ]);
      expectSuccess(update, 'machine update');
      assert.match(update.stdout, /^Updated machine \w+:\n/);
      assert.match(update.stdout, /\n {2}\+ env\.COLOR: "blue"\n/);
      assert.match(update.stdout, /\n {2}~ guest\.memory_mb: 128 -> 192\n/);
      const updated = await client.machines.get(app, id);
      assert.notEqual(updated.instance_id, first.instance_id);
      assert.equal(updated.state, 'started');
      assert.equal(updated.config?.env?.COLOR, 'blue');
      assert.equal(updated.config?.guest?.memory_mb, 192);
      assert.equal((await client.machines.versions(app, id)).length, 2);
      const exec = await client.machines.exec(app, id, {
        command: ['/bin/busybox', 'sh', '-c', 'echo $COLOR'],
      });
      assert.equal(exec.stdout, 'blue\n', 'the new version runs');
      const noLease = await client.machines.getLease(app, id).catch((error: unknown) => error);
      assert.ok(isMachinesApiError(noLease, 'not_found'), 'the update released its lease');
      const same = await hangar(h, ['machine', 'update', id, '-a', app, '-e', 'COLOR=blue']);
      expectSuccess(same, 'machine update without a change');
      assert.equal(same.stdout, `No changes to apply to machine ${id}\n`);
      assert.equal((await client.machines.versions(app, id)).length, 2);

      // Someone else's lease: the update is refused and says why; leases view shows it, clear removes it.
      const lease = await client.machines.acquireLease(app, id, { ttl: 120, description: 'someone else' });
      const blocked = await hangar(h, ['machine', 'update', id, '-a', app, '--vm-memory', '256']);
      assert.equal(blocked.code, 1, blocked.stdout);
      assert.match(blocked.stderr, /HTTP 409/);
      assert.match(blocked.stderr, /\nHint: another client holds a lease/);
      assert.equal((await client.machines.get(app, id)).config?.guest?.memory_mb, 192);
      const view = await hangar(h, ['machine', 'leases', 'view', id, '-a', app, '--json']);
      expectSuccess(view, 'machine leases view');
      const [viewed] = JSON.parse(view.stdout) as {
        machine_id: string;
        lease: { nonce: string; description: string };
      }[];
      assert.equal(viewed?.lease.nonce, lease.nonce);
      assert.equal(viewed?.lease.description, 'someone else');
      expectSuccess(await hangar(h, ['machine', 'leases', 'clear', id, '-a', app]), 'machine leases clear');
      const cleared = await client.machines.getLease(app, id).catch((error: unknown) => error);
      assert.ok(isMachinesApiError(cleared, 'not_found'), 'the lease is gone');

      /** The newest exit event's details, once there are more exit events than `before`. */
      const exits = async () =>
        (await client.machines.events(app, id, { limit: 100 })).filter((e) => e.type === 'exit');
      let before = (await exits()).length;
      expectSuccess(await hangar(h, ['machine', 'restart', id, '-a', app]), 'machine restart');
      await client.waitForState(app, id, 'started', { timeoutMs: 30_000 });
      let events = await exits();
      assert.equal(events.length, before + 1);
      assert.equal(events[0]?.request?.exit_event?.exit_code, 0, 'a plain restart stops gracefully');
      before = events.length;
      expectSuccess(
        await hangar(h, ['machine', 'restart', id, '-a', app, '--force-stop']),
        'restart --force-stop',
      );
      await client.waitForState(app, id, 'started', { timeoutMs: 30_000 });
      events = await exits();
      assert.equal(events.length, before + 1);
      assert.equal(events[0]?.request?.exit_event?.signal, 'SIGKILL', '--force-stop kills');
      const logs = await hangar(h, ['machine', 'logs', id, '-a', app, '-n', '1000']);
      // Boot, update (graceful), restart (graceful), restart --force-stop (killed: nothing said).
      assert.equal(logs.stdout, 'booted\ngraceful stop\nbooted\ngraceful stop\nbooted\nbooted\n');

      const clone = await hangar(h, ['machine', 'clone', id, '-a', app, '--name', 'web-clone', '--json']);
      expectSuccess(clone, 'machine clone');
      const cloned = JSON.parse(clone.stdout) as { id: string; name: string; state: string };
      assert.notEqual(cloned.id, id);
      assert.equal(cloned.name, 'web-clone');
      assert.equal(cloned.state, 'started');
      const copy = await client.machines.get(app, cloned.id);
      assert.equal(copy.config?.image, updated.config?.image);
      assert.equal(copy.config?.env?.COLOR, 'blue');
      assert.equal(copy.config?.guest?.memory_mb, 192);
    } finally {
      await removeApp(app);
    }
  });

  await t.test('secrets import and deploy, ips, volume snapshots and forks', async () => {
    const app = 'ops-res';
    try {
      expectSuccess(await hangar(h, ['apps', 'create', app]), 'apps create');
      const image = await pushImage(app);
      const volume = await hangar(h, ['volumes', 'create', 'data', '-a', app, '--size', '1', '--json']);
      expectSuccess(volume, 'volumes create');
      const volumeId = (JSON.parse(volume.stdout) as { id: string }).id;
      const { id } = await runMachine(app, image, ['-v', `${volumeId}:/data`], 'machine run');
      const sh = async (script: string) =>
        (await client.machines.exec(app, id, { command: ['/bin/busybox', 'sh', '-c', script] })).stdout;

      // Staged secrets reach the machine only with `secrets deploy`; values are never printed.
      const imported = await hangar(h, ['secrets', 'import', '-a', app, '--stage'], {
        stdin: '# comment\nAPI_KEY=k-one-two\nMOTTO="two words"\n',
      });
      expectSuccess(imported, 'secrets import --stage');
      assert.ok(!imported.stdout.includes('k-one-two') && !imported.stderr.includes('k-one-two'));
      assert.deepEqual((await client.secrets.list(app)).secrets.map((x) => x.name).sort(), [
        'API_KEY',
        'MOTTO',
      ]);
      assert.equal(await sh('echo "[$API_KEY]"'), '[]\n', 'staged: not in the machine yet');
      const deploy = await hangar(h, ['secrets', 'deploy', '-a', app]);
      expectSuccess(deploy, 'secrets deploy');
      assert.equal(deploy.stdout, `Updated 1 machine of ${app}\n`);
      assert.equal(await sh('echo "[$API_KEY] [$MOTTO]"'), '[k-one-two] [two words]\n');

      const v4 = await hangar(h, ['ips', 'allocate-v4', '-a', app]);
      assert.equal(v4.code, 1, v4.stdout);
      assert.match(v4.stderr, /\nHint: add --shared/);
      const shared = await hangar(h, ['ips', 'allocate-v4', '--shared', '-a', app, '--json']);
      expectSuccess(shared, 'ips allocate-v4 --shared');
      assert.equal((JSON.parse(shared.stdout) as { type: string }[])[0]?.type, 'shared_v4');
      const flycast = await hangar(h, ['ips', 'allocate-v6', '--private', '-a', app, '--json']);
      expectSuccess(flycast, 'ips allocate-v6 --private');
      assert.match((JSON.parse(flycast.stdout) as { ip: string }[])[0]?.ip ?? '', /^fdaa:/);
      const priv = await hangar(h, ['ips', 'private', '-a', app, '--json']);
      expectSuccess(priv, 'ips private');
      const machine = await client.machines.get(app, id);
      assert.deepEqual(
        (JSON.parse(priv.stdout) as { id: string; private_ip: string }[]).map((m) => [m.id, m.private_ip]),
        [[id, machine.private_ip]],
      );

      // A snapshot and a fork of the live volume; the fork holds the data, and mounts elsewhere.
      await sh('echo kept > /data/file && sync');
      const snap = await hangar(h, ['volumes', 'snapshots', 'create', volumeId, '-a', app, '--json']);
      expectSuccess(snap, 'volumes snapshots create');
      const snapshotId = (JSON.parse(snap.stdout) as { id: string }).id;
      const snaps = await hangar(h, ['volumes', 'snapshots', 'list', volumeId, '-a', app, '--json']);
      expectSuccess(snaps, 'volumes snapshots list');
      assert.ok((JSON.parse(snaps.stdout) as { id: string }[]).some((x) => x.id === snapshotId));
      const fork = await hangar(h, ['volumes', 'fork', volumeId, '-a', app, '--name', 'data_copy', '--json']);
      expectSuccess(fork, 'volumes fork');
      const forked = JSON.parse(fork.stdout) as {
        id: string;
        name: string;
        attached_machine_id: string | null;
      };
      assert.equal(forked.name, 'data_copy');
      assert.equal(forked.attached_machine_id, null);
      const { id: readerId } = await runMachine(
        app,
        image,
        ['-v', `${forked.id}:/data`],
        'machine run on the fork',
      );
      const read = await client.machines.exec(app, readerId, {
        command: ['/bin/busybox', 'cat', '/data/file'],
      });
      assert.equal(read.stdout, 'kept\n');
    } finally {
      await removeApp(app);
    }
  });

  await t.test('scale count clones and destroys, reusing volumes; scale memory and show', async () => {
    const app = 'ops-scale';
    try {
      expectSuccess(await hangar(h, ['apps', 'create', app]), 'apps create');
      const image = await pushImage(app);
      const volume = await client.volumes.create(app, { name: 'data', size_gb: 1 });
      const { id: first } = await runMachine(app, image, ['-v', `${volume.id}:/data`], 'machine run');
      const live = async () => (await client.machines.list(app)).filter((m) => m.state !== 'destroyed');

      const up = await hangar(h, ['scale', 'count', '2', '-a', app, '--json']);
      expectSuccess(up, 'scale count 2');
      const [grown] = JSON.parse(up.stdout) as { created: string[]; destroyed: string[] }[];
      assert.equal(grown?.created.length, 1);
      const clone = grown?.created[0] ?? '';
      let machines = await live();
      assert.deepEqual(machines.map((m) => m.id).sort(), [first, clone].sort());
      for (const m of machines) assert.equal(m.state, 'started');
      const cloneVolume = (await client.machines.get(app, clone)).config?.mounts?.[0]?.volume;
      assert.ok(cloneVolume && cloneVolume !== volume.id, 'the clone has a volume of its own');
      assert.equal((await client.volumes.list(app)).length, 2);

      // Without a terminal, destroying needs --yes; nothing happens without it.
      const refused = await hangar(h, ['scale', 'count', '1', '-a', app]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /refusing to destroy 1 machine/);
      assert.equal((await live()).length, 2);
      const down = await hangar(h, ['scale', 'count', '1', '-a', app, '--yes']);
      expectSuccess(down, 'scale count 1');
      machines = await live();
      assert.deepEqual(
        machines.map((m) => m.id),
        [first],
        'the newest machine went',
      );
      const freed = (await client.volumes.list(app)).find((v) => v.id === cloneVolume);
      assert.ok(freed && !freed.attached_machine_id, 'its volume stays, unattached');

      const again = await hangar(h, ['scale', 'count', '2', '-a', app, '--json']);
      expectSuccess(again, 'scale count 2 again');
      const regrown = (JSON.parse(again.stdout) as { created: string[] }[])[0]?.created[0] ?? '';
      assert.equal(
        (await client.machines.get(app, regrown)).config?.mounts?.[0]?.volume,
        cloneVolume,
        'reused',
      );
      assert.equal((await client.volumes.list(app)).length, 2);

      const memory = await hangar(h, ['scale', 'memory', '192', '-a', app]);
      expectSuccess(memory, 'scale memory');
      for (const m of await live()) {
        assert.equal(m.config?.guest?.memory_mb, 192, m.id);
        assert.equal(m.state, 'started', m.id);
      }
      const show = await hangar(h, ['scale', 'show', '-a', app, '--json']);
      expectSuccess(show, 'scale show');
      assert.deepEqual(JSON.parse(show.stdout), [
        {
          process_group: 'app',
          count: 2,
          cpu_kind: 'shared',
          cpus: 1,
          memory_mb: 192,
          regions: [machines[0]?.region],
        },
      ]);
    } finally {
      await removeApp(app);
    }
  });

  await t.test('status, logs (merged and followed) and releases', async () => {
    const app = 'ops-view';
    let follower: ReturnType<typeof hangarFollowing> | undefined;
    try {
      expectSuccess(await hangar(h, ['apps', 'create', app]), 'apps create');
      const cmd = [
        '/bin/busybox',
        'sh',
        '-c',
        'echo "hello from $FLY_MACHINE_ID"; while true; do /bin/busybox sleep 1; done',
      ];
      const image = await pushImage(app, cmd);
      const { id: first } = await runMachine(app, image, [], 'machine run');
      const clone = await hangar(h, ['machine', 'clone', first, '-a', app, '--json']);
      expectSuccess(clone, 'machine clone');
      const second = (JSON.parse(clone.stdout) as { id: string }).id;
      const region = (await client.machines.get(app, first)).region;

      const status = await hangar(h, ['status', '-a', app]);
      expectSuccess(status, 'status');
      assert.match(status.stdout, new RegExp(`^App\\s+${app}$`, 'm'));
      for (const id of [first, second]) {
        assert.match(status.stdout, new RegExp(`^app\\s+${id}\\s+\\w{26}\\s+${region}\\s+started\\s`, 'm'));
      }
      const statusJson = JSON.parse((await hangar(h, ['status', '-a', app, '--json'])).stdout);
      assert.equal(statusJson.app.name, app);
      assert.equal(statusJson.machines.length, 2);

      const logs = await hangar(h, ['logs', '-a', app, '--no-tail']);
      expectSuccess(logs, 'logs --no-tail');
      assert.deepEqual(
        logs.stdout.trimEnd().split('\n').sort(),
        [first, second].sort().map((id) => `app[${id}] ${region} hello from ${id}`),
      );

      // Following: both machines' lines, then a line written after the follow began.
      follower = hangarFollowing(h, ['logs', '-a', app]);
      const lineOf = (id: string) => `app[${id}] ${region} hello from ${id}`;
      const count = (out: string, line: string) => out.split('\n').filter((l) => l === line).length;
      await follower.waitFor((out) => count(out, lineOf(first)) === 1 && count(out, lineOf(second)) === 1);
      await client.machines.restart(app, second);
      await follower.waitFor((out) => count(out, lineOf(second)) === 2);
      // A machine created while following joins the merged output.
      const third = (
        await client.machines.launch(app, {
          config: (await client.machines.get(app, first)).config ?? { image },
        })
      ).id;
      await follower.waitFor((out) => count(out, lineOf(third)) === 1);
      await client.machines.destroy(app, third, { force: true });
      await follower.stop();
      follower = undefined;

      // A new image on one machine is a new release; an env change on the other keeps it in its own. The
      // destroyed machine stays in the history of the release it ran.
      const v2 = await buildTestImage({
        registry: `127.0.0.1:${registryPort}`,
        token: h.token,
        repository: `${app}/web`,
        tag: 'v2',
        config: { cmd },
      });
      expectSuccess(
        await hangar(h, ['machine', 'update', first, '-a', app, '--image', v2]),
        'update --image',
      );
      expectSuccess(await hangar(h, ['machine', 'update', second, '-a', app, '-e', 'A=1']), 'update -e');
      const releases = await hangar(h, ['releases', '-a', app, '--json']);
      expectSuccess(releases, 'releases');
      const list = JSON.parse(releases.stdout) as {
        version: number;
        image: string;
        running: string[];
        machines: string[];
      }[];
      assert.deepEqual(
        list.map((r) => [r.version, r.image, r.running, r.machines.sort()]),
        [
          [2, v2, [first], [first]],
          [1, image, [second], [first, second, third].sort()],
        ],
      );
      const table = await hangar(h, ['releases', '-a', app]);
      assert.match(table.stdout, /^v2\s+running on 1\s/m);
      assert.match(table.stdout, /^v1\s+running on 1\s/m);

      // Rollback to v1: the machine on v2 gets its own v1 config back (a new release, v3); the other,
      // already on its v1 config, is left alone.
      const rolled = await hangar(h, ['releases', 'rollback', '-a', app, '--yes']);
      expectSuccess(rolled, 'releases rollback');
      assert.equal(rolled.stdout, `Rolled back ${app} to v1 (${image}): 1 machine updated\n`);
      const back = await client.machines.get(app, first);
      assert.equal(back.config?.image, image);
      assert.equal(back.state, 'started');
      assert.equal((await client.machines.get(app, second)).config?.env?.A, '1', 'untouched');
      const after = JSON.parse((await hangar(h, ['releases', '-a', app, '--json'])).stdout) as {
        version: number;
        image: string;
        running: string[];
      }[];
      assert.deepEqual(
        after.map((r) => [r.version, r.image, r.running]),
        [
          [3, image, [first]],
          [2, v2, []],
          [1, image, [second]],
        ],
      );
    } finally {
      await follower?.stop();
      await removeApp(app);
    }
  });

  await t.test('doctor: host, token, and an app’s failed boot, crash and missing address', async () => {
    const app = 'ops-doctor';
    try {
      const host = await hangar(h, ['doctor']);
      expectSuccess(host, 'doctor');
      assert.match(host.stdout, /^\[ok\] {3}api: .* answers and is ready\n/);
      assert.match(
        host.stdout,
        /^\[ok\] {3}token: org token \S+ of organization personal \(from HANGAR_API_TOKEN\)/m,
      );
      assert.match(host.stdout, /^\[ok\] {3}version: hangard 0\.1\.0, CLI 0\.1\.0$/m);
      const forged = await hangar(h, ['doctor'], { env: { HANGAR_API_TOKEN: 'hg1_0000000000_forged' } });
      assert.equal(forged.code, 1);
      assert.match(forged.stdout, /^\[FAIL\] token: the token from HANGAR_API_TOKEN is refused/m);

      expectSuccess(await hangar(h, ['apps', 'create', app]), 'apps create');
      const image = await pushImage(app);
      const { id: webId } = await runMachine(
        app,
        image,
        ['-p', '80:8080/tcp:http'],
        'machine run with a service',
      );
      const noAddress = await hangar(h, ['doctor', '-a', app, '--json']);
      expectSuccess(noAddress, 'doctor -a with a service and no address');
      const checks = (
        JSON.parse(noAddress.stdout) as { checks: { name: string; status: string; detail: string }[] }
      ).checks;
      assert.deepEqual(
        checks
          .filter((c) => c.name === `machine ${webId}` || c.name === 'addresses')
          .map((c) => [c.name, c.status]),
        [
          [`machine ${webId}`, 'ok'],
          ['addresses', 'warn'],
        ],
      );

      // A machine that exits 3 (no restart), and one whose image does not exist.
      const crashImage = await buildTestImage({
        registry: `127.0.0.1:${registryPort}`,
        token: h.token,
        repository: `${app}/crash`,
        config: { cmd: ['/bin/busybox', 'sh', '-c', 'echo dying; exit 3'] },
      });
      const crash = await client.machines.launch(app, {
        config: {
          image: crashImage,
          guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 128 },
          restart: { policy: 'no' },
        },
      });
      await client.waitForState(app, crash.id, 'stopped', { timeoutMs: 30_000 });
      const missing = await client.machines.launch(app, {
        config: {
          image: `127.0.0.1:${registryPort}/${app}/missing:1`,
          guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 128 },
        },
      });
      await client.waitForState(app, missing.id, 'failed', { timeoutMs: 30_000 });
      expectSuccess(
        await hangar(h, ['ips', 'allocate-v6', '--private', '-a', app]),
        'ips allocate-v6 --private',
      );

      const sick = await hangar(h, ['doctor', '-a', app]);
      assert.equal(sick.code, 1, sick.stdout);
      assert.match(sick.stdout, new RegExp(`^\\[FAIL\\] machine ${missing.id}: failed: .*missing`, 'm'));
      assert.match(
        sick.stdout,
        new RegExp(`\\n {7}fix: fix the cause, then: hangar machine start ${missing.id} -a ${app}`),
      );
      assert.match(
        sick.stdout,
        new RegExp(`^\\[warn\\] machine ${crash.id}: exited with code 3 at .*, state now stopped$`, 'm'),
      );
      assert.match(sick.stdout, /^\[ok\] {3}addresses: private_v6$/m);
    } finally {
      await removeApp(app);
    }
  });
});

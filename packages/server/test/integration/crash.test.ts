import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { type DaemonProcess, daemonHarness } from '../helpers/daemon-process.js';

/**
 * Durability under `kill -9`: a burst of concurrent writes from several workers, the daemon SIGKILLed in
 * the middle of it (requests still in flight), then a restart on the same data directory. Every write the
 * client saw acknowledged (a 2xx received) must be there, the database must be intact, and no app may
 * exist half-made.
 */

const WORKERS = 8;
/** The daemon is killed when this many writes have been acknowledged. */
const KILL_AFTER_ACKS = 240;

interface Acked {
  apps: Set<string>;
  /** One secret name per write, so each digest must come back exactly. */
  secrets: { app: string; name: string; digest: string; version: number }[];
  machines: { app: string; id: string; name: string }[];
  metadata: { app: string; machineId: string; key: string; value: string }[];
}

test('acknowledged writes survive SIGKILL in the middle of a burst', async (t) => {
  const harness = daemonHarness(t);
  const dataDir = harness.makeDataDir();
  const first = await harness.start(dataDir);

  const acked: Acked = { apps: new Set(), secrets: [], machines: [], metadata: [] };
  const unexpected: string[] = [];
  let acks = 0;
  let inFlight = 0;
  let inFlightAtKill = -1;
  let killing: Promise<void> | undefined;

  /** One write; true when acknowledged, false when the daemon is gone (connection refused or reset). */
  const write = async (
    method: string,
    path: string,
    body: unknown,
    onAck: (responseBody: Record<string, unknown>) => void,
  ): Promise<boolean> => {
    if (killing) return false;
    inFlight++;
    let response: Awaited<ReturnType<DaemonProcess['call']>>;
    try {
      response = await first.call(method, path, body);
    } catch {
      return false;
    } finally {
      inFlight--;
    }
    if (response.status < 200 || response.status > 299) {
      unexpected.push(`${method} ${path}: ${response.status} ${JSON.stringify(response.body)}`);
      return false;
    }
    onAck(response.body as Record<string, unknown>);
    acks++;
    if (acks === KILL_AFTER_ACKS && !killing) {
      // Synchronously, inside this response's handler: every other worker is awaiting a response.
      inFlightAtKill = inFlight;
      killing = first.kill();
    }
    return true;
  };

  const worker = async (w: number) => {
    const apps: string[] = [];
    const machines: { app: string; id: string }[] = [];
    for (let i = 0; ; i++) {
      const app = apps[i % Math.max(apps.length, 1)];
      const machine = machines[i % Math.max(machines.length, 1)];
      const op = app === undefined ? 0 : i % 4;
      let ok: boolean;
      if (op === 0) {
        const name = `crash-w${w}-a${i}`;
        ok = await write('POST', '/v1/apps', { app_name: name, org_slug: 'personal' }, () => {
          acked.apps.add(name);
          apps.push(name);
        });
      } else if (op === 1) {
        const name = `S_W${w}_${i}`;
        ok = await write(
          'POST',
          `/v1/apps/${app}/secrets`,
          { values: { [name]: `value-${w}-${i}-${Math.random()}` } },
          (b) => {
            const secret = (b.secrets as { name: string; digest: string }[]).find((s) => s.name === name)!;
            acked.secrets.push({ app: app!, name, digest: secret.digest, version: b.version as number });
          },
        );
      } else if (op === 2 || machine === undefined) {
        const name = `m-w${w}-${i}`;
        ok = await write(
          'POST',
          `/v1/apps/${app}/machines`,
          {
            name,
            skip_launch: true,
            config: { image: 'registry.example/crash:1', env: { WORKER: String(w) } },
          },
          (b) => {
            acked.machines.push({ app: app!, id: b.id as string, name });
            machines.push({ app: app!, id: b.id as string });
          },
        );
      } else {
        const key = `k-w${w}-${i}`;
        const value = `v${i}`;
        ok = await write(
          'POST',
          `/v1/apps/${machine.app}/machines/${machine.id}/metadata/${key}`,
          { value },
          () => {
            acked.metadata.push({ app: machine.app, machineId: machine.id, key, value });
          },
        );
      }
      if (!ok) return;
    }
  };

  await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
  assert.deepEqual(unexpected, [], 'every write before the kill succeeds');
  assert.ok(killing, `the burst ended before ${KILL_AFTER_ACKS} acknowledged writes`);
  await killing;
  const killed = await first.exited;
  assert.equal(killed.signal, 'SIGKILL');
  t.diagnostic(
    `acknowledged writes: ${acks} (apps ${acked.apps.size}, secrets ${acked.secrets.length}, machines ${acked.machines.length}, ` +
      `metadata ${acked.metadata.length}); in flight at the kill: ${inFlightAtKill}`,
  );
  assert.ok(inFlightAtKill > 0, 'requests were in flight when the daemon was killed');
  const wal = join(dataDir, 'hangar.db-wal');
  t.diagnostic(`WAL left by the killed daemon: ${existsSync(wal) ? `${statSync(wal).size} bytes` : 'none'}`);

  // Restart on the same directory: SQLite recovers from its WAL.
  const second = await harness.start(dataDir);
  const get = async (path: string) => {
    const response = await second.call('GET', path);
    assert.equal(response.status, 200, `GET ${path}: ${response.status} ${JSON.stringify(response.body)}`);
    return response.body;
  };

  const listed = await get('/v1/apps?org_slug=personal');
  const listedNames = new Set<string>(listed.apps.map((a: { name: string }) => a.name));
  for (const app of acked.apps) assert.ok(listedNames.has(app), `acknowledged app ${app} is listed`);
  assert.equal(listed.total_apps, listed.apps.length);

  // No app half-made: each listed one (acknowledged or caught in flight) reads whole, with its network.
  for (const summary of listed.apps as { name: string; network: unknown }[]) {
    assert.equal(summary.network, 'default', `app ${summary.name} lists its network`);
    const app = await get(`/v1/apps/${summary.name}`);
    assert.equal(app.name, summary.name);
    assert.equal(app.network, 'default', `app ${summary.name} has its network`);
    assert.equal(app.organization.slug, 'personal');
    assert.ok(Array.isArray(await get(`/v1/apps/${summary.name}/machines`)));
    assert.ok(Array.isArray((await get(`/v1/apps/${summary.name}/secrets`)).secrets));
  }

  const secretsByApp = new Map<string, Map<string, string>>();
  for (const secret of acked.secrets) {
    let digests = secretsByApp.get(secret.app);
    if (!digests) {
      const body = await get(`/v1/apps/${secret.app}/secrets`);
      digests = new Map(body.secrets.map((s: { name: string; digest: string }) => [s.name, s.digest]));
      secretsByApp.set(secret.app, digests);
    }
    assert.equal(digests.get(secret.name), secret.digest, `acknowledged secret ${secret.app}/${secret.name}`);
    // The app's secrets version is at least the acknowledged one (a 412 would say it is older).
    await get(`/v1/apps/${secret.app}/secrets?min_version=${secret.version}`);
  }

  const machinesByApp = new Map<string, Map<string, { name: string; metadata: Record<string, string> }>>();
  const machinesOf = async (app: string) => {
    let found = machinesByApp.get(app);
    if (!found) {
      const list = await get(`/v1/apps/${app}/machines`);
      found = new Map(
        list.map((m: { id: string; name: string; config: { metadata?: Record<string, string> } }) => [
          m.id,
          { name: m.name, metadata: m.config.metadata ?? {} },
        ]),
      );
      machinesByApp.set(app, found);
    }
    return found;
  };
  for (const machine of acked.machines) {
    const found = (await machinesOf(machine.app)).get(machine.id);
    assert.ok(found, `acknowledged machine ${machine.app}/${machine.id} exists`);
    assert.equal(found.name, machine.name);
  }
  for (const entry of acked.metadata) {
    const found = (await machinesOf(entry.app)).get(entry.machineId);
    assert.equal(
      found?.metadata[entry.key],
      entry.value,
      `acknowledged metadata ${entry.machineId}.${entry.key}`,
    );
    const metadata = await get(`/v1/apps/${entry.app}/machines/${entry.machineId}/metadata`);
    assert.equal(metadata[entry.key], entry.value);
  }

  // The database file itself is intact once the second daemon has closed it.
  await second.stop();
  const db = new Database(join(dataDir, 'hangar.db'), { readonly: true, fileMustExist: true });
  try {
    assert.deepEqual(db.pragma('integrity_check', { simple: false }), [{ integrity_check: 'ok' }]);
  } finally {
    db.close();
  }
});

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../../src/store/sqlite/migrations.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { appRecord, storeContract } from './contract.js';

/** A database file in a temp dir of its own, removed after the test. */
function tempDb(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'test.db');
}

// The contract on a database file, as hangard runs it (WAL, a real file), not ':memory:'.
storeContract('SQLite', (t) => new SqliteStore({ path: tempDb(t), synchronous: 'NORMAL' }));

// ---- what only the SQLite store has: a file that outlives the process, migrations, warnings ---------

test('sqlite: data and sequences survive reopening the file', async (t) => {
  const path = tempDb(t);
  let store = new SqliteStore({ path });
  const first = await store.write((tx) => [tx.nextSequence('network'), tx.nextSequence('network')]);
  await store.write((tx) => tx.apps.insert(appRecord('kept')));
  store.close();
  store = new SqliteStore({ path });
  t.after(() => store.close());
  assert.deepEqual(first, [1, 2]);
  assert.equal(await store.write((tx) => tx.nextSequence('network')), 3);
  assert.equal((await store.read((tx) => tx.apps.get('app-kept')))?.name, 'kept');
});

test('sqlite: a sequence value taken in a rolled-back transaction is handed out again', async (t) => {
  const store = new SqliteStore({ path: tempDb(t) });
  t.after(() => store.close());
  await assert.rejects(
    store.write((tx) => {
      tx.nextSequence('network');
      throw new Error('rolled back');
    }),
  );
  assert.equal(await store.write((tx) => tx.nextSequence('network')), 1);
});

test('sqlite: refuses a database from a newer hangard', (t) => {
  const path = tempDb(t);
  new SqliteStore({ path }).close();
  const db = new Database(path);
  db.pragma('user_version = 999');
  db.close();
  assert.throws(() => new SqliteStore({ path }), /newer than this hangard understands/);
});

test('sqlite: a failing watcher is reported as a process warning', async (t) => {
  const store = new SqliteStore({ path: tempDb(t) });
  t.after(() => store.close());
  store.watch(() => {
    throw new Error('watcher bug');
  });
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  await store.write((tx) => tx.apps.insert(appRecord('ok')));
  await new Promise((resolve) => setImmediate(resolve));
  assert.ok(warnings.some((w) => w.includes('watcher bug')));
});

test('sqlite: migration 2 indexes the names of machines written before it', async (t) => {
  const path = tempDb(t);
  const old = new Database(path);
  old.exec(MIGRATIONS[0]!);
  old.pragma('user_version = 1');
  old
    .prepare('INSERT INTO machines (key, doc, app_id, state, region) VALUES (?, ?, ?, ?, ?)')
    .run(
      'm1',
      JSON.stringify({ id: 'm1', appId: 'a1', name: 'web-1', state: 'stopped', region: 'local' }),
      'a1',
      'stopped',
      'local',
    );
  old.close();
  const store = new SqliteStore({ path });
  t.after(() => store.close());
  assert.deepEqual(
    await store.read((tx) => tx.machines.list({ appId: 'a1', name: 'web-1' }).map((m) => m.id)),
    ['m1'],
  );
});

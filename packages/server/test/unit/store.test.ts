import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { AppRecord } from '../../src/store/records.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { type ChangeBatch, StoreConflictError } from '../../src/store/store.js';

const app = (name: string, id = `id-${name}`): AppRecord => ({
  id,
  name,
  orgId: 'org1',
  networkId: 1,
  status: 'pending',
  internalNumericId: 1,
  secretsVersion: 0,
  createdAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
});

function tempDb(t: import('node:test').TestContext) {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'test.db');
}

test('store: documents round-trip, filter on indexes, update and delete', async (t) => {
  const store = new SqliteStore({ path: ':memory:' });
  t.after(() => store.close());
  await store.write((tx) => {
    tx.apps.insert(app('a'));
    tx.apps.insert(app('b'));
  });
  assert.deepEqual(await store.read((tx) => tx.apps.get('id-a')), app('a'));
  assert.deepEqual(await store.read((tx) => tx.apps.list({ name: 'b' }).map((a) => a.id)), ['id-b']);
  assert.equal(await store.read((tx) => tx.apps.count({ orgId: 'org1' })), 2);
  await store.write((tx) => tx.apps.update({ ...app('a'), status: 'deployed' }));
  assert.equal((await store.read((tx) => tx.apps.get('id-a')))?.status, 'deployed');
  assert.equal(await store.write((tx) => tx.apps.delete('id-a')), true);
  assert.equal(await store.write((tx) => tx.apps.delete('id-a')), false);
  await assert.rejects(
    store.write((tx) => tx.apps.update(app('zzz'))),
    /no document/,
  );
  await assert.rejects(
    store.read((tx) => tx.apps.list({ status: 'pending' } as never)),
    /unindexed field status/,
  );
  await assert.rejects(
    store.read((tx) => (tx as unknown as import('../../src/store/store.js').WriteTx).apps.insert(app('c'))),
    /read transaction/,
  );
});

test('store: a unique index violation names the fields and rolls back the whole transaction', async (t) => {
  const store = new SqliteStore({ path: ':memory:' });
  t.after(() => store.close());
  await store.write((tx) => tx.apps.insert(app('taken')));
  const seen: ChangeBatch[] = [];
  store.watch((batch) => seen.push(batch));
  const error = await store
    .write((tx) => {
      tx.apps.insert(app('fresh'));
      tx.nextSequence('network');
      tx.apps.insert(app('taken', 'other-id'));
    })
    .catch((e: unknown) => e);
  assert.ok(error instanceof StoreConflictError);
  assert.deepEqual(error.fields, ['name']);
  assert.equal(
    await store.read((tx) => tx.apps.get('id-fresh')),
    undefined,
    'nothing of the failed transaction stays',
  );
  assert.equal(seen.length, 0, 'watchers hear only committed changes');
  // The sequence value taken inside the rolled-back transaction is handed out again: nothing was used.
  assert.equal(await store.write((tx) => tx.nextSequence('network')), 1);
});

test('store: change feed delivers committed batches in order with increasing revisions', async (t) => {
  const store = new SqliteStore({ path: ':memory:' });
  t.after(() => store.close());
  const seen: ChangeBatch[] = [];
  const unwatch = store.watch((batch) => seen.push(batch));
  await store.write((tx) => tx.apps.insert(app('a')));
  await store.write((tx) => {
    tx.apps.update({ ...app('a'), status: 'deployed' });
    tx.apps.delete('id-a');
  });
  await store.write(() => undefined);
  unwatch();
  await store.write((tx) => tx.apps.insert(app('b')));
  assert.deepEqual(
    seen.map((b) => b.revision),
    [1, 2],
    'an empty transaction has no revision; unwatch stops delivery',
  );
  assert.deepEqual(
    seen[1]!.changes.map((c) => [c.collection, c.key, c.doc === undefined]),
    [
      ['apps', 'id-a', false],
      ['apps', 'id-a', true],
    ],
  );
});

test('store: sequences are never reused and survive reopening; migrations run once', async (t) => {
  const path = tempDb(t);
  let store = new SqliteStore({ path });
  const first = await store.write((tx) => [
    tx.nextSequence('network'),
    tx.nextSequence('network'),
    tx.nextSequence('app'),
  ]);
  await store.write((tx) => tx.apps.insert(app('kept')));
  store.close();
  store = new SqliteStore({ path });
  t.after(() => store.close());
  assert.deepEqual(first, [1, 2, 1]);
  assert.equal(await store.write((tx) => tx.nextSequence('network')), 3);
  assert.equal((await store.read((tx) => tx.apps.get('id-kept')))?.name, 'kept');
});

test('store: refuses a database from a newer hangard', async (t) => {
  const path = tempDb(t);
  new SqliteStore({ path }).close();
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(path);
  db.pragma('user_version = 999');
  db.close();
  assert.throws(() => new SqliteStore({ path }), /newer than this hangard understands/);
});

test('store: a throwing watcher does not fail the committed write', async (t) => {
  const store = new SqliteStore({ path: ':memory:' });
  t.after(() => store.close());
  store.watch(() => {
    throw new Error('watcher bug');
  });
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  await store.write((tx) => tx.apps.insert(app('ok')));
  assert.equal((await store.read((tx) => tx.apps.get('id-ok')))?.name, 'ok');
  await new Promise((resolve) => setImmediate(resolve));
  assert.ok(warnings.some((w) => w.includes('watcher bug')));
});

test('store: migration 2 indexes the names of machines written before it', async (t) => {
  const path = tempDb(t);
  const Database = (await import('better-sqlite3')).default;
  const { MIGRATIONS } = await import('../../src/store/sqlite/migrations.js');
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

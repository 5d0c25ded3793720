import assert from 'node:assert/strict';
import { describe, type TestContext, test } from 'node:test';
import type {
  AppRecord,
  MachineRecord,
  MachineVersionRecord,
  NetworkRecord,
  VolumeRecord,
} from '../../src/store/records.js';
import { type ChangeBatch, type Store, StoreConflictError, type WriteTx } from '../../src/store/store.js';

/**
 * What every Store (src/store/store.ts) must do, whatever keeps the data: SQLite today, etcd next. Each
 * implementation's test file calls `storeContract` with a factory; the tests here use only the Store
 * interface, never SQL or files.
 *
 * The change feed is not assumed to be synchronous: a store may deliver batches after write() resolves
 * (an etcd watch does), so the feed tests wait for the batches they expect, and prove that a batch did
 * not come by the arrival of a later one.
 */

/** Makes an empty store for one test; the contract closes it after the test, the factory removes its files. */
export type MakeStore = (t: TestContext) => Store | Promise<Store>;

const AT = '2026-01-01T00:00:00.000Z';

export function appRecord(name: string, overrides: Partial<AppRecord> = {}): AppRecord {
  return {
    id: `app-${name}`,
    name,
    orgId: 'org1',
    networkId: 1,
    status: 'pending',
    internalNumericId: 1,
    secretsVersion: 0,
    createdAt: AT,
    updatedAt: AT,
    ...overrides,
  };
}

/** A machine with the smallest config that is valid whether configs are typed or plain JSON. */
export function machineRecord(id: string, overrides: Partial<MachineRecord> = {}): MachineRecord {
  return {
    id,
    appId: 'app-a',
    name: `machine-${id}`,
    region: 'local',
    hostId: 'host1',
    state: 'created',
    instanceId: `instance-${id}`,
    config: {
      image: 'x',
      guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 256 },
      restart: { policy: 'on-failure' },
      dns: {},
    },
    imageRef: null,
    privateIp: null,
    cordoned: false,
    createdAt: AT,
    updatedAt: AT,
    ...overrides,
  };
}

function volumeRecord(id: string, attachedMachineId: string | null): VolumeRecord {
  return {
    id,
    appId: 'app-a',
    name: 'data',
    state: 'created',
    sizeGb: 1,
    region: 'local',
    zone: 'z1',
    hostId: 'host1',
    encrypted: false,
    fstype: 'ext4',
    snapshotRetention: 5,
    autoBackupEnabled: false,
    attachedMachineId,
    sourceSnapshotId: null,
    sourceVolumeId: null,
    createdAt: AT,
  };
}

function network(id: number, name: string, orgId = 'org1'): NetworkRecord {
  return { id, orgId, name, createdAt: AT };
}

/** Records every batch the store delivers, and waits for a given number of them. */
function feed(store: Store) {
  const batches: ChangeBatch[] = [];
  const unwatch = store.watch((batch) => batches.push(batch));
  return {
    batches,
    unwatch,
    async until(count: number, timeoutMs = 5_000): Promise<ChangeBatch[]> {
      const deadline = Date.now() + timeoutMs;
      while (batches.length < count) {
        if (Date.now() > deadline) {
          assert.fail(`expected ${count} change batches, got ${batches.length}: ${JSON.stringify(batches)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      return batches;
    },
  };
}

const summary = (batch: ChangeBatch | undefined) =>
  batch?.changes.map((c) => [c.collection, c.key, c.doc === undefined ? 'deleted' : 'written']);

/** Registers the contract's tests under `store contract: <name>`. */
export function storeContract(name: string, makeStore: MakeStore): void {
  const withStore = (title: string, body: (store: Store, t: TestContext) => Promise<void>) =>
    test(title, async (t) => {
      const store = await makeStore(t);
      try {
        await body(store, t);
      } finally {
        store.close();
      }
    });

  describe(`store contract: ${name}`, () => {
    // ---- documents ------------------------------------------------------------------------------

    withStore('documents round-trip unchanged, by key, in every collection kind', async (store) => {
      const machine = machineRecord('m1', {
        imageRef: { registry: 'r', repository: 'x', tag: 'latest', digest: 'sha256:1', labels: { a: 'b' } },
        machineNumber: 7,
        skipSecrets: true,
      });
      const version: MachineVersionRecord = {
        machineId: 'm1',
        version: 'v1',
        config: machine.config,
        createdAt: AT,
      };
      await store.write((tx) => {
        tx.apps.insert(appRecord('a'));
        tx.networks.insert(network(42, 'default'));
        tx.machines.insert(machine);
        tx.machineVersions.insert(version);
      });
      await store.read((tx) => {
        assert.deepEqual(tx.apps.get('app-a'), appRecord('a'));
        assert.deepEqual(tx.networks.get('42'), network(42, 'default'), 'numeric keys are looked up as text');
        assert.deepEqual(tx.machines.get('m1'), machine);
        assert.deepEqual(tx.machineVersions.get('m1/v1'), version, 'composite keys');
        assert.equal(tx.apps.get('app-none'), undefined);
      });
    });

    withStore('update replaces a document; update of a missing one fails', async (store) => {
      await store.write((tx) => tx.apps.insert(appRecord('a')));
      await store.write((tx) => tx.apps.update(appRecord('a', { status: 'deployed', secretsVersion: 3 })));
      assert.deepEqual(
        await store.read((tx) => tx.apps.get('app-a')),
        appRecord('a', { status: 'deployed', secretsVersion: 3 }),
      );
      // The index follows the update.
      assert.deepEqual(
        await store.read((tx) => tx.machines.list({ state: 'started' })),
        [],
        'nothing indexed yet',
      );
      await store.write((tx) => tx.machines.insert(machineRecord('m1')));
      await store.write((tx) => tx.machines.update(machineRecord('m1', { state: 'started' })));
      assert.deepEqual(await store.read((tx) => tx.machines.list({ state: 'started' }).map((m) => m.id)), [
        'm1',
      ]);
      assert.equal(await store.read((tx) => tx.machines.count({ state: 'created' })), 0);
      await assert.rejects(store.write((tx) => tx.apps.update(appRecord('missing'))));
      assert.equal(await store.read((tx) => tx.apps.get('app-missing')), undefined);
    });

    withStore('delete says whether there was a document; deleteWhere counts', async (store) => {
      await store.write((tx) => {
        for (const id of ['m1', 'm2', 'm3']) tx.machines.insert(machineRecord(id));
        tx.machines.insert(machineRecord('m4', { appId: 'app-b' }));
      });
      assert.equal(await store.write((tx) => tx.machines.delete('m1')), true);
      assert.equal(await store.write((tx) => tx.machines.delete('m1')), false);
      assert.equal(await store.write((tx) => tx.machines.deleteWhere({ appId: 'app-a' })), 2);
      assert.equal(await store.write((tx) => tx.machines.deleteWhere({ appId: 'app-a' })), 0);
      assert.deepEqual(await store.read((tx) => tx.machines.list().map((m) => m.id)), ['m4']);
    });

    withStore('a read transaction cannot write', async (store) => {
      await assert.rejects(
        store.read((tx) => (tx as unknown as WriteTx).apps.insert(appRecord('a'))),
        /read transaction/,
      );
      await assert.rejects(store.read((tx) => (tx as unknown as WriteTx).nextSequence('s')));
      assert.equal(await store.read((tx) => tx.apps.count()), 0);
    });

    // ---- unique keys and conflicts --------------------------------------------------------------

    withStore('a taken unique field is a StoreConflictError naming the fields', async (store) => {
      await store.write((tx) => tx.apps.insert(appRecord('taken')));
      const error = await store
        .write((tx) => tx.apps.insert(appRecord('taken', { id: 'app-other' })))
        .catch((e: unknown) => e);
      assert.ok(error instanceof StoreConflictError, `got ${String(error)}`);
      assert.equal(error.collection, 'apps');
      assert.deepEqual(error.fields, ['name']);

      // A unique group: the same name is free in another org, taken in the same one.
      await store.write((tx) => {
        tx.networks.insert(network(1, 'default', 'org1'));
        tx.networks.insert(network(2, 'default', 'org2'));
      });
      const group = await store
        .write((tx) => tx.networks.insert(network(3, 'default', 'org1')))
        .catch((e: unknown) => e);
      assert.ok(group instanceof StoreConflictError);
      assert.deepEqual([...group.fields].sort(), ['name', 'orgId']);

      // An update into a taken value conflicts too.
      await store.write((tx) => tx.apps.insert(appRecord('free')));
      await assert.rejects(
        store.write((tx) => tx.apps.update(appRecord('taken', { id: 'app-free' }))),
        StoreConflictError,
      );
      assert.equal((await store.read((tx) => tx.apps.get('app-free')))?.name, 'free');
    });

    withStore('a second document with the same key is a StoreConflictError', async (store) => {
      await store.write((tx) => tx.machines.insert(machineRecord('m1')));
      const error = await store
        .write((tx) => tx.machines.insert(machineRecord('m1', { name: 'other' })))
        .catch((e: unknown) => e);
      assert.ok(error instanceof StoreConflictError, `got ${String(error)}`);
      assert.equal(error.collection, 'machines');
      assert.equal((await store.read((tx) => tx.machines.get('m1')))?.name, 'machine-m1');
    });

    withStore('of concurrent inserts of one unique name, exactly one wins', async (store) => {
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) =>
          store.write((tx) => tx.apps.insert(appRecord('race', { id: `app-race-${i}` }))),
        ),
      );
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of results) {
        if (r.status === 'rejected') assert.ok(r.reason instanceof StoreConflictError);
      }
      assert.equal(await store.read((tx) => tx.apps.count({ name: 'race' })), 1);
    });

    // ---- transactions ---------------------------------------------------------------------------

    withStore('a throw inside write() leaves nothing of the transaction', async (store) => {
      await store.write((tx) => {
        tx.apps.insert(appRecord('kept'));
        tx.machines.insert(machineRecord('m1'));
      });
      const before = await store.write((tx) => tx.nextSequence('seq'));
      const failure = new Error('changed my mind');
      const error = await store
        .write((tx) => {
          tx.apps.insert(appRecord('fresh'));
          tx.apps.update(appRecord('kept', { status: 'deployed' }));
          tx.machines.delete('m1');
          tx.nextSequence('seq');
          throw failure;
        })
        .catch((e: unknown) => e);
      assert.equal(error, failure, 'the callback error comes back as it was thrown');
      await store.read((tx) => {
        assert.equal(tx.apps.get('app-fresh'), undefined);
        assert.equal(tx.apps.get('app-kept')?.status, 'pending');
        assert.ok(tx.machines.get('m1'));
      });
      // The sequence only moved on for committed work (or at least never hands out a committed value again).
      assert.ok((await store.write((tx) => tx.nextSequence('seq'))) > before);
    });

    withStore('a conflict in the middle rolls back the writes before it', async (store) => {
      await store.write((tx) => tx.apps.insert(appRecord('taken')));
      await assert.rejects(
        store.write((tx) => {
          tx.apps.insert(appRecord('fresh'));
          tx.machines.insert(machineRecord('m1'));
          tx.apps.insert(appRecord('taken', { id: 'app-other' }));
        }),
        StoreConflictError,
      );
      assert.equal(await store.read((tx) => tx.apps.get('app-fresh')), undefined);
      assert.equal(await store.read((tx) => tx.machines.count()), 0);
    });

    withStore('a transaction reads its own writes; others see them only once committed', async (store) => {
      const seen = await store.write((tx) => {
        tx.apps.insert(appRecord('a'));
        tx.apps.update(appRecord('a', { status: 'deployed' }));
        tx.machines.insert(machineRecord('m1'));
        return {
          app: tx.apps.get('app-a')?.status,
          listed: tx.machines.list({ appId: 'app-a' }).length,
          counted: tx.apps.count(),
        };
      });
      assert.deepEqual(seen, { app: 'deployed', listed: 1, counted: 1 });
      assert.equal(await store.read((tx) => tx.apps.get('app-a')?.status), 'deployed');
      assert.equal(await store.read(() => 'result'), 'result', 'read returns the callback value');
      const failure = new Error('read failed');
      await assert.rejects(
        store.read(() => {
          throw failure;
        }),
        (e) => e === failure,
      );
    });

    withStore('concurrent read-modify-write transactions do not lose updates', async (store) => {
      await store.write((tx) => tx.apps.insert(appRecord('counter')));
      const bump = () =>
        store.write((tx) => {
          const app = tx.apps.get('app-counter')!;
          tx.apps.update({ ...app, secretsVersion: app.secretsVersion + 1 });
          return app.secretsVersion + 1;
        });
      const results = await Promise.all(Array.from({ length: 20 }, bump));
      assert.equal((await store.read((tx) => tx.apps.get('app-counter')))?.secretsVersion, 20);
      assert.deepEqual(
        [...results].sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => i + 1),
        'each transaction saw the one before it',
      );
    });

    // ---- lists ----------------------------------------------------------------------------------

    withStore('list filters on indexed fields, including null, and refuses others', async (store) => {
      await store.write((tx) => {
        tx.machines.insert(machineRecord('m1', { state: 'started' }));
        tx.machines.insert(machineRecord('m2', { state: 'stopped' }));
        tx.machines.insert(machineRecord('m3', { state: 'started', appId: 'app-b' }));
        tx.volumes.insert(volumeRecord('v1', 'm1'));
        tx.volumes.insert(volumeRecord('v2', null));
      });
      await store.read((tx) => {
        assert.deepEqual(
          tx.machines.list({ state: 'started' }).map((m) => m.id),
          ['m1', 'm3'],
        );
        assert.deepEqual(
          tx.machines.list({ appId: 'app-a', state: 'started' }).map((m) => m.id),
          ['m1'],
          'several fields must all match',
        );
        assert.deepEqual(
          tx.machines.list({ appId: 'app-a', state: undefined }).map((m) => m.id),
          ['m1', 'm2'],
          'an undefined field does not filter',
        );
        assert.deepEqual(
          tx.volumes.list({ attachedMachineId: null }).map((v) => v.id),
          ['v2'],
        );
        assert.equal(tx.machines.count({ state: 'started' }), 2);
        assert.equal(tx.machines.count(), 3);
        assert.deepEqual(tx.machines.list({ appId: 'app-none' }), []);
      });
      await assert.rejects(
        store.read((tx) => tx.machines.list({ hostId: 'host1' })),
        /unindexed field hostId/,
      );
    });

    withStore('list is ordered by key; newestFirst reverses it; limit cuts it', async (store) => {
      // ULID-like keys: lexical order is creation order.
      const ids = ['01A', '01B', '01C', '01D', '01E'];
      await store.write((tx) => {
        for (const id of ['01C', '01A', '01E', '01B', '01D']) tx.machines.insert(machineRecord(id));
      });
      await store.read((tx) => {
        assert.deepEqual(
          tx.machines.list().map((m) => m.id),
          ids,
        );
        assert.deepEqual(
          tx.machines.list({}, { newestFirst: true }).map((m) => m.id),
          [...ids].reverse(),
        );
        assert.deepEqual(
          tx.machines.list({ appId: 'app-a' }, { newestFirst: true, limit: 2 }).map((m) => m.id),
          ['01E', '01D'],
        );
        assert.deepEqual(
          tx.machines.list({}, { limit: 2 }).map((m) => m.id),
          ['01A', '01B'],
        );
        assert.deepEqual(tx.machines.list({}, { limit: 0 }), []);
        assert.equal(tx.machines.list({}, { limit: 100 }).length, 5);
      });
    });

    // ---- sequences ------------------------------------------------------------------------------

    withStore('sequences start at 1, count up per name, and are never reused', async (store) => {
      const first = await store.write((tx) => [tx.nextSequence('network'), tx.nextSequence('network')]);
      const other = await store.write((tx) => tx.nextSequence('machine'));
      const third = await store.write((tx) => tx.nextSequence('network'));
      assert.deepEqual(first, [1, 2]);
      assert.equal(other, 1, 'each name has its own sequence');
      assert.equal(third, 3);
      const concurrent = await Promise.all(
        Array.from({ length: 10 }, () => store.write((tx) => tx.nextSequence('network'))),
      );
      assert.equal(new Set(concurrent).size, 10, 'concurrent transactions get distinct values');
      assert.ok(concurrent.every((n) => n > 3));
    });

    // ---- the change feed ------------------------------------------------------------------------

    withStore(
      'one batch per committed transaction, in commit order, with consecutive revisions',
      async (store) => {
        const watched = feed(store);
        await store.write((tx) => tx.apps.insert(appRecord('a')));
        await store.write((tx) => {
          tx.apps.update(appRecord('a', { status: 'deployed' }));
          tx.machines.insert(machineRecord('m1'));
          tx.machines.delete('m1');
        });
        await store.write((tx) => tx.apps.delete('app-a'));
        const batches = await watched.until(3);
        assert.equal(batches.length, 3);
        assert.deepEqual(summary(batches[0]), [['apps', 'app-a', 'written']]);
        assert.deepEqual(summary(batches[1]), [
          ['apps', 'app-a', 'written'],
          ['machines', 'm1', 'written'],
          ['machines', 'm1', 'deleted'],
        ]);
        assert.deepEqual(summary(batches[2]), [['apps', 'app-a', 'deleted']]);
        assert.deepEqual(
          batches[1]?.changes[0]?.doc,
          appRecord('a', { status: 'deployed' }),
          'the doc after',
        );
        const revisions = batches.map((b) => b.revision);
        assert.deepEqual(
          revisions,
          [revisions[0], revisions[0]! + 1, revisions[0]! + 2],
          'each batch one revision after the last',
        );
      },
    );

    withStore('no batch for a rolled-back or an empty transaction', async (store) => {
      const watched = feed(store);
      await store.write((tx) => tx.apps.insert(appRecord('taken')));
      await assert.rejects(
        store.write((tx) => {
          tx.apps.insert(appRecord('fresh'));
          tx.apps.insert(appRecord('taken', { id: 'app-other' }));
        }),
      );
      await assert.rejects(
        store.write((tx) => {
          tx.apps.insert(appRecord('thrown'));
          throw new Error('no');
        }),
      );
      await store.write((tx) => tx.apps.get('app-taken'));
      await store.write((tx) => tx.machines.insert(machineRecord('m1')));
      // The last write's batch has come, so any batch of the ones before it would have come first.
      const batches = await watched.until(2);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(batches.map(summary), [
        [['apps', 'app-taken', 'written']],
        [['machines', 'm1', 'written']],
      ]);
      assert.equal(batches[1]!.revision, batches[0]!.revision + 1, 'failed transactions used no revision');
    });

    withStore('deleteWhere reports each deleted document', async (store) => {
      await store.write((tx) => {
        tx.machines.insert(machineRecord('m1'));
        tx.machines.insert(machineRecord('m2'));
      });
      const watched = feed(store);
      await store.write((tx) => tx.machines.deleteWhere({ appId: 'app-a' }));
      const [batch] = await watched.until(1);
      assert.deepEqual(summary(batch)?.sort(), [
        ['machines', 'm1', 'deleted'],
        ['machines', 'm2', 'deleted'],
      ]);
    });

    withStore('every watcher gets every batch; unwatch stops delivery to that one', async (store) => {
      const first = feed(store);
      const second = feed(store);
      await store.write((tx) => tx.apps.insert(appRecord('a')));
      await first.until(1);
      await second.until(1);
      first.unwatch();
      await store.write((tx) => tx.apps.insert(appRecord('b')));
      await second.until(2);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(first.batches.length, 1);
      assert.deepEqual(second.batches.map(summary), [
        [['apps', 'app-a', 'written']],
        [['apps', 'app-b', 'written']],
      ]);
    });

    withStore('a throwing watcher neither fails the write nor starves the others', async (store) => {
      store.watch(() => {
        throw new Error('watcher bug');
      });
      const watched = feed(store);
      await store.write((tx) => tx.apps.insert(appRecord('ok')));
      assert.equal((await store.read((tx) => tx.apps.get('app-ok')))?.name, 'ok');
      await watched.until(1);
    });

    // ---- closing --------------------------------------------------------------------------------

    withStore('close is idempotent; a closed store refuses work', async (store) => {
      await store.write((tx) => tx.apps.insert(appRecord('a')));
      store.close();
      store.close();
      await assert.rejects(store.read((tx) => tx.apps.get('app-a')));
      await assert.rejects(store.write((tx) => tx.apps.insert(appRecord('b'))));
    });
  });
}

import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { resolve } from '../../src/dns/resolve.js';
import { DnsView } from '../../src/dns/view.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import type { ReadTx, Store } from '../../src/store/store.js';
import { app, flycast, IP, machine, network, seededView, seedTwoNetworks } from './fixtures.js';

async function seeded(t: TestContext) {
  const { store, view } = await seededView(t);
  const ask = (name: string, type = 'AAAA', callerNetwork = 1) => {
    const result = resolve({ name, type }, view.snapshot(), callerNetwork);
    return { rcode: result.rcode, data: result.answers.map((answer) => answer.data) };
  };
  return { store, view, ask };
}

test('view: follows machine state changes from the change feed', async (t) => {
  const { store, view, ask } = await seeded(t);
  const before = view.snapshot().revision;
  await store.write((tx) =>
    tx.machines.update(machine('aaa1', 'web', { state: 'stopped', privateIp: IP.web1 })),
  );
  assert.deepEqual(ask('web.internal').data, [IP.web2]);
  assert.ok(view.snapshot().revision > before);
  await store.write((tx) =>
    tx.machines.update(machine('aaa3', 'web', { region: 'ord', privateIp: IP.web3, state: 'started' })),
  );
  assert.deepEqual(ask('web.internal').data, [IP.web2, IP.web3]);
  assert.deepEqual(ask('ord.web.internal').data, [IP.web3]);
  // The networking work filling in an address makes a started machine appear.
  await store.write((tx) =>
    tx.machines.update(machine('aaa4', 'web', { privateIp: 'fdaa:0:1:a7b:0:4:0:2' })),
  );
  assert.deepEqual(ask('aaa4.vm.web.internal').data, ['fdaa:0:1:a7b:0:4:0:2']);
});

test('view: app, machine and Flycast deletions and creations', async (t) => {
  const { store, ask } = await seeded(t);
  // Deleting an app deletes its machines in the same transaction (as the apps service does).
  await store.write((tx) => {
    tx.machines.deleteWhere({ appId: 'app-db' });
    tx.apps.delete('app-db');
  });
  assert.equal(ask('db.internal').rcode, 'NXDOMAIN');
  assert.deepEqual(ask('_apps.internal', 'TXT').data, [['web']]);

  await store.write((tx) => tx.ipAssignments.delete(IP.secretFlycastIn1));
  assert.equal(ask('secret.flycast').rcode, 'NXDOMAIN');
  // Only private_v6 addresses with a network are Flycast; a public v6 is not.
  await store.write((tx) =>
    tx.ipAssignments.insert({ ...flycast('2001:db8::1', 'web', 1), type: 'v6', networkId: null }),
  );
  assert.deepEqual(ask('web.flycast').data, [IP.webFlycast]);

  await store.write((tx) => {
    tx.networks.insert(network(3));
    tx.apps.insert(app('fresh', 3));
    tx.machines.insert(machine('fff1', 'fresh', { privateIp: 'fdaa:0:3:a7b:0:1:0:2' }));
    tx.ipAssignments.insert(flycast('fdaa:0:3:0:1::1', 'fresh', 3));
  });
  assert.deepEqual(ask('fresh.internal', 'AAAA', 3).data, ['fdaa:0:3:a7b:0:1:0:2']);
  assert.deepEqual(ask('fresh.flycast', 'AAAA', 3).data, ['fdaa:0:3:0:1::1']);
  assert.equal(ask('fresh.internal', 'AAAA', 1).rcode, 'NXDOMAIN');
});

test('view: a machine seen before its app is picked up when the app arrives', (t) => {
  const view = new DnsView(unusedStore());
  t.after(() => view.close());
  view.apply({
    revision: 4,
    changes: [
      { collection: 'machines', key: 'mmm1', doc: machine('mmm1', 'late', { privateIp: IP.web1 }) },
      { collection: 'leases', key: 'mmm1', doc: { machineId: 'mmm1' } },
    ],
  });
  view.apply({
    revision: 5,
    changes: [
      { collection: 'apps', key: 'app-late', doc: app('late', 1) },
      { collection: 'networks', key: '1', doc: network(1) },
    ],
  });
  const result = resolve({ name: 'late.internal', type: 'AAAA' }, view.snapshot(), 1);
  assert.deepEqual(
    result.answers.map((answer) => answer.data),
    [IP.web1],
  );
  assert.equal(view.snapshot().revision, 5);
});

test('view: batches committed while the first read runs are replayed after it', async (t) => {
  const real = new SqliteStore({ path: ':memory:' });
  t.after(() => real.close());
  await real.write(seedTwoNetworks);
  // A store whose read returns what it saw, then lets a write commit before the caller gets the result:
  // what a slower store (etcd) can do.
  const racing: Store = {
    read: async <T>(fn: (tx: ReadTx) => T) => {
      const result = await real.read(fn);
      await real.write((tx) =>
        tx.machines.update(machine('aaa1', 'web', { state: 'stopped', privateIp: IP.web1 })),
      );
      return result;
    },
    write: (fn) => real.write(fn),
    watch: (listener) => real.watch(listener),
    close: () => real.close(),
  };
  const view = new DnsView(racing);
  await view.start();
  t.after(() => view.close());
  const result = resolve({ name: 'web.internal', type: 'AAAA' }, view.snapshot(), 1);
  assert.deepEqual(
    result.answers.map((answer) => answer.data),
    [IP.web2],
  );
});

test('view: close stops following the feed', async (t) => {
  const { store, view, ask } = await seeded(t);
  view.close();
  await store.write((tx) =>
    tx.machines.update(machine('aaa1', 'web', { state: 'stopped', privateIp: IP.web1 })),
  );
  assert.deepEqual(ask('web.internal').data, [IP.web1, IP.web2]);
});

/** For tests that feed the view by hand: any use of the store is a test bug. */
function unusedStore(): Store {
  const fail = () => {
    throw new Error('this test does not use the store');
  };
  return { read: fail, write: fail, watch: () => () => {}, close: () => {} };
}

import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { type DnsResolution, isLocalName, resolve, serviceAddress, splitTxt } from '../../src/dns/resolve.js';
import { DnsView } from '../../src/dns/view.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { app, IP, machine, network, seededView } from './fixtures.js';

async function seeded(t: TestContext) {
  const { store, view } = await seededView(t);
  const ask = (name: string, type = 'AAAA', callerNetwork: number | undefined = 1) =>
    resolve({ name, type }, view.snapshot(), callerNetwork);
  return { store, view, ask };
}

const data = (result: DnsResolution) => result.answers.map((answer) => answer.data);
const txtOf = (result: DnsResolution) => {
  assert.equal(result.rcode, 'NOERROR');
  assert.equal(result.answers.length, 1);
  return (result.answers[0]!.data as string[]).join('');
};
const assertNxdomain = (result: DnsResolution) => {
  assert.equal(result.rcode, 'NXDOMAIN');
  assert.deepEqual(result.answers, []);
  assert.equal(result.authorities[0]?.type, 'SOA');
};
const assertNodata = (result: DnsResolution) => {
  assert.equal(result.rcode, 'NOERROR');
  assert.deepEqual(result.answers, []);
  assert.equal(result.authorities[0]?.type, 'SOA');
};

test('resolve: <app>.internal and global.<app>.internal answer started machines with an address', async (t) => {
  const { ask } = await seeded(t);
  const result = ask('web.internal');
  assert.equal(result.rcode, 'NOERROR');
  assert.equal(result.authoritative, true);
  assert.deepEqual(data(result), [IP.web1, IP.web2]);
  assert.ok(result.answers.every((answer) => answer.ttl === 5 && answer.name === 'web.internal'));
  assert.deepEqual(data(ask('global.web.internal')), [IP.web1, IP.web2]);
  // Case-insensitive, trailing dot accepted; the answer carries the name as asked.
  const shouted = ask('WEB.Internal.');
  assert.deepEqual(data(shouted), [IP.web1, IP.web2]);
  assert.equal(shouted.answers[0]!.name, 'WEB.Internal');
  assert.deepEqual(data(ask('db.internal')), [IP.db1]);
});

test('resolve: <region>.<app>.internal', async (t) => {
  const { ask } = await seeded(t);
  assert.deepEqual(data(ask('iad.web.internal')), [IP.web1]);
  assert.deepEqual(data(ask('AMS.web.internal')), [IP.web2]);
  assertNodata(ask('ord.web.internal')); // only a stopped machine there
  assertNxdomain(ask('syd.web.internal')); // only a destroyed one
  assertNxdomain(ask('fra.web.internal'));
});

test('resolve: <machine_id>.vm.<app>.internal', async (t) => {
  const { ask } = await seeded(t);
  assert.deepEqual(data(ask('aaa1.vm.web.internal')), [IP.web1]);
  assertNodata(ask('aaa3.vm.web.internal')); // stopped
  assertNodata(ask('aaa4.vm.web.internal')); // started, no address yet
  assertNxdomain(ask('aaa5.vm.web.internal')); // destroyed
  assertNxdomain(ask('ddd1.vm.web.internal')); // another app's machine
  assertNxdomain(ask('zzz.vm.web.internal'));
});

test('resolve: <group>.process.<app>.internal, top<N>.nearest.of, kv._metadata', async (t) => {
  const { ask } = await seeded(t);
  assert.deepEqual(data(ask('worker.process.web.internal')), [IP.web2]);
  assert.deepEqual(data(ask('app.process.web.internal')), [IP.web1]);
  assertNxdomain(ask('cron.process.web.internal'));
  assert.deepEqual(data(ask('top1.nearest.of.web.internal')), [IP.web1]);
  assert.deepEqual(data(ask('top5.nearest.of.web.internal')), [IP.web1, IP.web2]);
  assertNxdomain(ask('top0.nearest.of.web.internal'));
  assertNxdomain(ask('topx.nearest.of.web.internal'));
  assertNxdomain(ask('top1.farthest.of.web.internal'));
  assert.deepEqual(data(ask('primary.role.kv._metadata.web.internal')), [IP.web2]);
  assertNxdomain(ask('replica.role.kv._metadata.web.internal'));
  assertNxdomain(ask('a.b.c.d.e.web.internal'));
});

test('resolve: vms, regions and their all. forms (TXT)', async (t) => {
  const { ask } = await seeded(t);
  assert.equal(txtOf(ask('vms.web.internal', 'TXT')), 'aaa1 iad,aaa2 ams');
  // all.: every machine with an address, stopped included; not aaa4 (no address) nor aaa5 (destroyed).
  assert.equal(txtOf(ask('all.vms.web.internal', 'TXT')), 'aaa1 iad,aaa2 ams,aaa3 ord');
  assert.equal(txtOf(ask('regions.web.internal', 'TXT')), 'ams,iad');
  assert.equal(txtOf(ask('all.regions.web.internal', 'TXT')), 'ams,iad,ord');
});

test('resolve: _apps, _instances, all._instances, _api, _peer', async (t) => {
  const { ask } = await seeded(t);
  assert.equal(txtOf(ask('_apps.internal', 'TXT')), 'db,web');
  assert.equal(txtOf(ask('_apps.internal', 'TXT', 2)), 'secret');
  assert.equal(
    txtOf(ask('_instances.internal', 'TXT')),
    [
      `instance=ddd1,app=db,ip=${IP.db1},region=iad`,
      `instance=aaa1,app=web,ip=${IP.web1},region=iad`,
      `instance=aaa2,app=web,ip=${IP.web2},region=ams`,
    ].join(';'),
  );
  assert.match(txtOf(ask('all._instances.internal', 'TXT')), /instance=aaa3,app=web,ip=[^,]+,region=ord/);
  assert.equal(
    txtOf(ask('_instances.internal', 'TXT', 2)),
    `instance=sss1,app=secret,ip=${IP.secret1},region=iad`,
  );
  assert.deepEqual(data(ask('_api.internal')), ['fdaa:0:1::3']);
  assert.deepEqual(data(ask('_api.internal', 'AAAA', 2)), ['fdaa:0:2::3']);
  assert.equal(serviceAddress(0x12345), 'fdaa:1:2345::3');
  assertNodata(ask('_peer.internal', 'TXT'));
  assertNxdomain(ask('laptop._peer.internal'));
  assertNxdomain(ask('x._apps.internal', 'TXT'));
});

test('resolve: every answer is scoped to the caller network', async (t) => {
  const { ask } = await seeded(t);
  // Network 2's app does not exist for network 1, and the reverse, under every form.
  assertNxdomain(ask('secret.internal'));
  assertNxdomain(ask('vms.secret.internal', 'TXT'));
  assertNxdomain(ask('sss1.vm.secret.internal'));
  assertNxdomain(ask('web.internal', 'AAAA', 2));
  assertNxdomain(ask('iad.db.internal', 'AAAA', 2));
  assert.doesNotMatch(txtOf(ask('_apps.internal', 'TXT')), /secret/);
  assert.doesNotMatch(txtOf(ask('all._instances.internal', 'TXT')), /secret|sss1/);
  assert.doesNotMatch(txtOf(ask('all._instances.internal', 'TXT', 2)), /web|db/);
});

test('resolve: <app>.flycast answers the address allocated in the caller network only', async (t) => {
  const { ask } = await seeded(t);
  assert.deepEqual(data(ask('web.flycast')), [IP.webFlycast]);
  // secret lives in network 2 but was exposed to network 1 (`--network net1`).
  assert.deepEqual(data(ask('secret.flycast')), [IP.secretFlycastIn1]);
  assert.deepEqual(data(ask('Secret.Flycast.')), [IP.secretFlycastIn1]);
  // ...so it is not reachable through that address from its own network, nor is web from network 2.
  assertNxdomain(ask('secret.flycast', 'AAAA', 2));
  assertNxdomain(ask('web.flycast', 'AAAA', 2));
  assertNxdomain(ask('db.flycast')); // no Flycast address at all
  assertNxdomain(ask('x.web.flycast'));
  assertNodata(ask('web.flycast', 'A'));
});

test('resolve: a name without a record of the asked type is NODATA, not NXDOMAIN', async (t) => {
  const { ask } = await seeded(t);
  assertNodata(ask('web.internal', 'A'));
  assertNodata(ask('web.internal', 'TXT'));
  assertNodata(ask('vms.web.internal', 'AAAA'));
  assertNodata(ask('_apps.internal', 'AAAA'));
  assertNodata(ask('web.internal', 'UNKNOWN_65'));
  // ANY gets whatever the name holds.
  assert.deepEqual(data(ask('web.internal', 'ANY')), [IP.web1, IP.web2]);
  // The zone apexes hold their SOA.
  const apex = ask('internal', 'SOA');
  assert.equal(apex.answers[0]?.type, 'SOA');
  assertNodata(ask('flycast', 'AAAA'));
});

test('resolve: callers outside a known 6PN network are refused; other names are not ours', async (t) => {
  const { view, ask } = await seeded(t);
  // Not through `ask`: its default parameter would turn an undefined network into network 1.
  const noNetwork = (name: string, type: string) => resolve({ name, type }, view.snapshot(), undefined);
  for (const result of [noNetwork('web.internal', 'AAAA'), ask('web.internal', 'AAAA', 99)]) {
    assert.equal(result.rcode, 'REFUSED');
    assert.equal(result.authoritative, false);
    assert.deepEqual(result.answers, []);
  }
  assert.equal(noNetwork('_apps.internal', 'TXT').rcode, 'REFUSED');
  assert.equal(noNetwork('web.flycast', 'AAAA').rcode, 'REFUSED');
  assert.equal(ask('example.com').rcode, 'REFUSED');
  assert.equal(isLocalName('web.internal.'), true);
  assert.equal(isLocalName('WEB.FLYCAST'), true);
  assert.equal(isLocalName('internal'), true);
  assert.equal(isLocalName('notinternal'), false);
  assert.equal(isLocalName('internal.example.com'), false);
});

test('resolve: TXT text is split into character strings of at most 255 bytes', async (t) => {
  assert.deepEqual(splitTxt(''), ['']);
  assert.deepEqual(splitTxt('abc'), ['abc']);
  const long = 'x'.repeat(600);
  assert.deepEqual(
    splitTxt(long).map((part) => part.length),
    [255, 255, 90],
  );
  // A multi-byte character is never cut in half.
  const parts = splitTxt(`${'a'.repeat(254)}é${'b'.repeat(10)}`);
  assert.deepEqual(
    parts.map((part) => Buffer.byteLength(part)),
    [254, 12],
  );

  const store = new SqliteStore({ path: ':memory:' });
  t.after(() => store.close());
  await store.write((tx) => {
    tx.networks.insert(network(7));
    tx.apps.insert(app('big', 7));
    for (let i = 0; i < 20; i++) {
      const id = `m${String(i).padStart(3, '0')}`;
      tx.machines.insert(machine(id, 'big', { privateIp: `fdaa:0:7:a7b:0:${i + 1}:0:2` }));
    }
  });
  const view = new DnsView(store);
  await view.start();
  const result = resolve({ name: '_instances.internal', type: 'TXT' }, view.snapshot(), 7);
  const strings = result.answers[0]!.data as string[];
  assert.ok(strings.length > 1);
  assert.ok(strings.every((part) => Buffer.byteLength(part) <= 255));
  const entries = strings.join('').split(';');
  assert.equal(entries.length, 20);
  assert.equal(entries[0], 'instance=m000,app=big,ip=fdaa:0:7:a7b:0:1:0:2,region=iad');
});

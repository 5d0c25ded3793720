import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import dnsPacket from 'dns-packet';
import { dnsForwards } from '../../src/config/config.js';
import { readResolvConf } from '../../src/dns/forward.js';
import { DnsServer, type DnsServerOptions } from '../../src/dns/server.js';
import { DnsView } from '../../src/dns/view.js';
import { networkIdOf } from '../../src/sixpn/address-plan.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { dataOf, type Endpoint, edns, query, rcodeOf, tcpExchange, udpQuery, udpRaw } from './client.js';
import { app, IP, machine, network, seededView } from './fixtures.js';

/**
 * Test stand-in for the 6PN rule: loopback has no network id in its address, so the tests decide which
 * network a loopback caller is on (`caller.network`; undefined = not on any 6PN network).
 */
function loopbackAsNetwork(caller: { network: number | undefined }) {
  return (address: string) => (address === '127.0.0.1' || address === '::1' ? caller.network : undefined);
}

async function setup(t: TestContext, options: Partial<DnsServerOptions> = {}) {
  const { store, view } = await seededView(t);
  const caller: { network: number | undefined } = { network: 1 };
  const server = new DnsServer({
    view,
    addresses: [
      { host: '127.0.0.1', port: 0 },
      { host: '::1', port: 0 },
    ],
    forwardTo: [],
    networkOf: loopbackAsNetwork(caller),
    ...options,
  });
  await server.start();
  t.after(() => server.close());
  const [v4, v6] = server.listening() as [Endpoint, Endpoint];
  return { store, view, server, caller, v4, v6 };
}

/**
 * Fake upstream resolver on loopback (UDP and TCP on one port). `mode`: answer `<name> A 192.0.2.1`,
 * stay silent, or answer over UDP with TC set (and in full over TCP).
 */
async function fakeUpstream(t: TestContext, mode: 'answer' | 'silent' | 'truncate' | 'flood-silent') {
  const seen: dnsPacket.DecodedPacket[] = [];
  const answerTo = (packet: dnsPacket.DecodedPacket, truncated: boolean) =>
    dnsPacket.encode({
      type: 'response',
      id: packet.id ?? 0,
      flags: dnsPacket.RECURSION_AVAILABLE | (truncated ? dnsPacket.TRUNCATED_RESPONSE : 0),
      questions: packet.questions ?? [],
      answers: truncated
        ? []
        : [{ name: packet.questions![0]!.name, type: 'A', ttl: 60, class: 'IN', data: '192.0.2.1' }],
    });
  const udp = dgram.createSocket('udp4');
  udp.on('message', (message, remote) => {
    const packet = dnsPacket.decode(message);
    seen.push(packet);
    if (mode === 'silent') return;
    // Names starting `flood` are never answered: they pile up as pending queries.
    if (mode === 'flood-silent' && packet.questions?.[0]?.name.startsWith('flood')) return;
    udp.send(answerTo(packet, mode === 'truncate'), remote.port, remote.address);
  });
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  const port = udp.address().port;
  const tcp = net.createServer((socket) => {
    socket.on('data', (chunk: Buffer) => {
      const packet = dnsPacket.decode(chunk.subarray(2));
      const reply = answerTo(packet, false);
      const length = Buffer.alloc(2);
      length.writeUInt16BE(reply.length);
      socket.end(Buffer.concat([length, reply]));
    });
  });
  await new Promise<void>((resolve) => tcp.listen(port, '127.0.0.1', resolve));
  t.after(() => {
    udp.close();
    tcp.close();
  });
  return { endpoint: { host: '127.0.0.1', port }, seen };
}

test('dns server: AAAA over UDP on 127.0.0.1 and [::1], with the query id and flags', async (t) => {
  const { v4, v6 } = await setup(t);
  assert.equal(v4.port > 0 && v6.port > 0, true);
  for (const endpoint of [v4, v6]) {
    const ask = query('web.internal', 'AAAA');
    const reply = await udpQuery(endpoint, ask);
    assert.equal(reply.id, ask.id);
    assert.equal(reply.type, 'response');
    assert.equal(rcodeOf(reply), 'NOERROR');
    assert.equal(reply.flag_aa, true);
    assert.equal(reply.flag_rd, true);
    assert.deepEqual(reply.questions, ask.questions);
    assert.deepEqual(dataOf(reply), [IP.web1, IP.web2]);
    assert.ok((reply.answers ?? []).every((answer) => (answer as { ttl: number }).ttl === 5));
  }
});

test('dns server: TXT, NXDOMAIN and NODATA', async (t) => {
  const { v4 } = await setup(t);
  assert.deepEqual(dataOf(await udpQuery(v4, query('_apps.internal', 'TXT'))), ['db,web']);
  assert.deepEqual(dataOf(await udpQuery(v4, query('vms.web.internal', 'TXT'))), ['aaa1 iad,aaa2 ams']);
  const missing = await udpQuery(v4, query('nope.internal', 'AAAA'));
  assert.equal(rcodeOf(missing), 'NXDOMAIN');
  assert.equal(missing.authorities?.[0]?.type, 'SOA');
  const noA = await udpQuery(v4, query('web.internal', 'A'));
  assert.equal(rcodeOf(noA), 'NOERROR');
  assert.deepEqual(noA.answers, []);
});

test('dns server: answers are scoped to the caller network; no network means REFUSED', async (t) => {
  const { v4, caller } = await setup(t);
  assert.equal(rcodeOf(await udpQuery(v4, query('secret.internal', 'AAAA'))), 'NXDOMAIN');
  caller.network = 2;
  assert.deepEqual(dataOf(await udpQuery(v4, query('secret.internal', 'AAAA'))), [IP.secret1]);
  assert.deepEqual(dataOf(await udpQuery(v4, query('_apps.internal', 'TXT'))), ['secret']);
  assert.equal(rcodeOf(await udpQuery(v4, query('web.internal', 'AAAA'))), 'NXDOMAIN');
  assert.equal(rcodeOf(await udpQuery(v4, query('secret.flycast', 'AAAA'))), 'NXDOMAIN');
  caller.network = 1;
  assert.deepEqual(dataOf(await udpQuery(v4, query('secret.flycast', 'AAAA'))), [IP.secretFlycastIn1]);
  caller.network = undefined;
  const refused = await udpQuery(v4, query('web.internal', 'AAAA'));
  assert.equal(rcodeOf(refused), 'REFUSED');
  assert.equal(refused.flag_aa, false);
  // No recursion for callers outside 6PN either: a listener exposed by mistake is not an open resolver.
  assert.equal(rcodeOf(await udpQuery(v4, query('example.com', 'A'))), 'REFUSED');
});

test('dns server: TCP with several queries on one connection, split frames, idle timeout', async (t) => {
  const { v4, v6 } = await setup(t, { tcpIdleTimeoutMs: 300 });
  const asks = [
    query('web.internal', 'AAAA'),
    query('_apps.internal', 'TXT'),
    query('nope.internal', 'AAAA'),
  ];
  for (const endpoint of [v4, v6]) {
    const replies = (
      await tcpExchange(
        endpoint,
        asks.map((ask) => dnsPacket.encode(ask)),
        3,
      )
    ).map((r) => dnsPacket.decode(r));
    const byId = new Map(replies.map((reply) => [reply.id, reply]));
    assert.deepEqual(dataOf(byId.get(asks[0]!.id)!), [IP.web1, IP.web2]);
    assert.deepEqual(dataOf(byId.get(asks[1]!.id)!), ['db,web']);
    assert.equal(rcodeOf(byId.get(asks[2]!.id)!), 'NXDOMAIN');
  }
  const dribbled = await tcpExchange(v4, [dnsPacket.encode(asks[0]!), dnsPacket.encode(asks[1]!)], 2, {
    dribble: true,
  });
  assert.equal(dribbled.length, 2);

  // An idle connection is closed by the server.
  const closed = await new Promise<boolean>((resolve) => {
    const socket = net.connect(v4);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, 2000);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
    socket.on('error', () => {});
  });
  assert.equal(closed, true);
});

test('dns server: UDP answers too big for the client are truncated (TC); TCP carries them', async (t) => {
  const { store, v4 } = await setup(t);
  await store.write((tx) => {
    tx.apps.insert(app('big', 1));
    for (let i = 0; i < 20; i++) {
      tx.machines.insert(
        machine(`b${String(i).padStart(3, '0')}`, 'big', { privateIp: `fdaa:0:1:a7b:1:${i + 1}:0:2` }),
      );
    }
  });
  // 20 AAAA records with compressed names are about 590 bytes: over 512 without EDNS.
  const classic = await udpQuery(v4, query('big.internal', 'AAAA'));
  assert.equal(classic.flag_tc, true);
  assert.deepEqual(classic.answers, []);
  assert.equal(classic.questions?.[0]?.name, 'big.internal');
  // With EDNS offering 1232 bytes it fits, and the reply carries an OPT record.
  const extended = await udpQuery(v4, query('big.internal', 'AAAA', { additionals: [edns(1232)] }));
  assert.equal(extended.flag_tc, false);
  assert.equal(extended.answers?.length, 20);
  assert.equal(extended.additionals?.[0]?.type, 'OPT');
  // EDNS offering less than 512 is treated as 512.
  const small = await udpQuery(v4, query('big.internal', 'AAAA', { additionals: [edns(200)] }));
  assert.equal(small.flag_tc, true);
  const [overTcp] = await tcpExchange(v4, [dnsPacket.encode(query('big.internal', 'AAAA'))], 1);
  const decoded = dnsPacket.decode(overTcp!);
  assert.equal(decoded.flag_tc, false);
  assert.equal(decoded.answers?.length, 20);
});

test('dns server: other names go to the upstream (a fake on loopback) with the client id kept', async (t) => {
  const upstream = await fakeUpstream(t, 'answer');
  const { v4, v6 } = await setup(t, { forwardTo: [upstream.endpoint] });
  for (const endpoint of [v4, v6]) {
    const ask = query('Example.COM', 'A');
    const reply = await udpQuery(endpoint, ask);
    assert.equal(reply.id, ask.id);
    assert.equal(rcodeOf(reply), 'NOERROR');
    assert.deepEqual(dataOf(reply), ['192.0.2.1']);
  }
  assert.equal(upstream.seen.length, 2);
  assert.equal(upstream.seen[0]!.questions?.[0]?.name, 'Example.COM');
  // Over TCP the query is relayed over UDP all the same.
  const ask = query('example.org', 'A');
  const [overTcp] = await tcpExchange(v4, [dnsPacket.encode(ask)], 1);
  const decoded = dnsPacket.decode(overTcp!);
  assert.equal(decoded.id, ask.id);
  assert.deepEqual(dataOf(decoded), ['192.0.2.1']);
});

test('dns server: a truncated upstream reply is fetched again over TCP for a TCP client', async (t) => {
  const upstream = await fakeUpstream(t, 'truncate');
  const { v4 } = await setup(t, { forwardTo: [upstream.endpoint] });
  // A UDP client gets the truncated reply and retries over TCP itself...
  assert.equal((await udpQuery(v4, query('example.com', 'A'))).flag_tc, true);
  // ...and that TCP query gets the full answer.
  const ask = query('example.com', 'A');
  const [reply] = await tcpExchange(v4, [dnsPacket.encode(ask)], 1);
  const decoded = dnsPacket.decode(reply!);
  assert.equal(decoded.id, ask.id);
  assert.equal(decoded.flag_tc, false);
  assert.deepEqual(dataOf(decoded), ['192.0.2.1']);
});

test('dns server: SERVFAIL when the upstream does not answer or there is none', async (t) => {
  const silent = await fakeUpstream(t, 'silent');
  const { v4 } = await setup(t, { forwardTo: [silent.endpoint], forwardTimeoutMs: 150 });
  const started = Date.now();
  const reply = await udpQuery(v4, query('example.com', 'A'));
  assert.equal(rcodeOf(reply), 'SERVFAIL');
  assert.ok(Date.now() - started < 1500);
  assert.equal(silent.seen.length, 1);

  const none = await setup(t, { forwardTo: [] });
  assert.equal(rcodeOf(await udpQuery(none.v4, query('example.com', 'A'))), 'SERVFAIL');
});

test('dns server: a flood from one network leaves the other networks their forwarding', async (t) => {
  const upstream = await fakeUpstream(t, 'flood-silent');
  // 127.0.0.1 is network 1, ::1 network 2. Without a share per network, the 16 slots in all would be
  // taken by network 1's flood and network 2 would get SERVFAIL.
  const networks: Record<string, number> = { '127.0.0.1': 1, '::1': 2 };
  const { v4, v6 } = await setup(t, {
    forwardTo: [upstream.endpoint],
    networkOf: (address) => networks[address],
    forwardTimeoutMs: 1500,
    forwardMaxPending: 16,
    forwardPendingPerNetwork: 8,
  });
  const flood = Array.from({ length: 40 }, (_, i) => udpQuery(v4, query(`flood${i}.example`, 'A'), 3000));
  await new Promise((resolve) => setTimeout(resolve, 100));
  const other = await udpQuery(v6, query('example.com', 'A'));
  assert.equal(rcodeOf(other), 'NOERROR');
  assert.deepEqual(dataOf(other), ['192.0.2.1']);
  // The flooding network itself: past its share, SERVFAIL at once, not after the timeout.
  const replies = await Promise.all(flood);
  assert.ok(replies.every((r) => rcodeOf(r) === 'SERVFAIL'));
  const relayed = upstream.seen.filter((p) => p.questions?.[0]?.name.startsWith('flood')).length;
  assert.equal(relayed, 8, 'only its share of the flood reached the upstream');
});

test('dns server: with forwarding off (egress off), other names are REFUSED and never relayed', async (t) => {
  const upstream = await fakeUpstream(t, 'answer');
  const off = await setup(t, { forwardTo: [upstream.endpoint], forward: false });
  assert.equal(rcodeOf(await udpQuery(off.v4, query('example.com', 'A'))), 'REFUSED');
  const [overTcp] = await tcpExchange(off.v4, [dnsPacket.encode(query('example.org', 'A'))], 1);
  assert.equal(rcodeOf(dnsPacket.decode(overTcp!)), 'REFUSED');
  assert.equal(upstream.seen.length, 0);
  // .internal names are still answered.
  assert.equal(rcodeOf(await udpQuery(off.v4, query('web.internal', 'AAAA'))), 'NOERROR');
  // The positive control: the same upstream, forwarding on.
  const on = await setup(t, { forwardTo: [upstream.endpoint], forward: true });
  assert.deepEqual(dataOf(await udpQuery(on.v4, query('example.com', 'A'))), ['192.0.2.1']);
  assert.equal(upstream.seen.length, 1);
});

test('dns forwarding follows egress unless set to always or never', () => {
  const with_ = (forward: 'egress' | 'always' | 'never', egress: boolean) =>
    dnsForwards({ dns: { forward, pendingPerNetwork: 1 }, network: { egress } });
  assert.equal(with_('egress', false), false);
  assert.equal(with_('egress', true), true);
  assert.equal(with_('always', false), true);
  assert.equal(with_('never', true), false);
});

test('dns server: malformed packets are dropped or FORMERR, and the server keeps serving', async (t) => {
  const { v4 } = await setup(t);
  // Shorter than a header: nothing to answer to.
  assert.equal(await udpRaw(v4, Buffer.from([1, 2, 3, 4, 5]), 300), undefined);
  // A header that promises a question that is not there: FORMERR with the same id.
  const broken = Buffer.from([0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x05, 0x61]);
  const formerr = await udpRaw(v4, broken);
  assert.ok(formerr);
  assert.equal(formerr.readUInt16BE(0), 0xabcd);
  assert.equal(rcodeOf(dnsPacket.decode(formerr)), 'FORMERR');
  // A response is never answered (no reflection loops).
  const response = dnsPacket.encode({ ...query('web.internal', 'AAAA'), type: 'response' });
  assert.equal(await udpRaw(v4, response, 300), undefined);
  // Two questions: FORMERR. Another opcode (NOTIFY): NOTIMP.
  const two = dnsPacket.encode(
    query('web.internal', 'AAAA', {
      questions: [
        { name: 'web.internal', type: 'AAAA' },
        { name: 'db.internal', type: 'AAAA' },
      ],
    }),
  );
  assert.equal(rcodeOf(dnsPacket.decode((await udpRaw(v4, two))!)), 'FORMERR');
  const notify = dnsPacket.encode(query('web.internal', 'SOA', { flags: 4 << 11 }));
  assert.equal(rcodeOf(dnsPacket.decode((await udpRaw(v4, notify))!)), 'NOTIMP');
  // Random garbage of every length up to 64 bytes: whatever comes back, the server survives.
  for (let length = 0; length < 64; length++) {
    const garbage = Buffer.from(Array.from({ length }, (_, i) => (i * 73 + length * 31) & 0xff));
    garbage[2] = garbage.length > 2 ? garbage[2]! & 0x7f : 0;
    await udpRaw(v4, garbage, 50);
  }
  // Over TCP a malformed frame gets FORMERR and the connection stays usable.
  const ask = query('web.internal', 'AAAA');
  const replies = await tcpExchange(v4, [broken, dnsPacket.encode(ask)], 2);
  assert.equal(rcodeOf(dnsPacket.decode(replies[0]!)), 'FORMERR');
  assert.deepEqual(dataOf(dnsPacket.decode(replies[1]!)), [IP.web1, IP.web2]);
  assert.deepEqual(dataOf(await udpQuery(v4, query('web.internal', 'AAAA'))), [IP.web1, IP.web2]);
});

test('dns server: answers follow store writes through the change feed, without a restart', async (t) => {
  const store = new SqliteStore({ path: ':memory:' });
  t.after(() => store.close());
  const view = new DnsView(store);
  await view.start();
  t.after(() => view.close());
  const server = new DnsServer({
    view,
    addresses: [{ host: '127.0.0.1', port: 0 }],
    forwardTo: [],
    networkOf: loopbackAsNetwork({ network: 5 }),
  });
  await server.start();
  t.after(() => server.close());
  const [endpoint] = server.listening() as [Endpoint];
  const ask = async () => udpQuery(endpoint, query('api.internal', 'AAAA'));

  // Before the network exists the caller is on no known network.
  assert.equal(rcodeOf(await ask()), 'REFUSED');
  await store.write((tx) => {
    tx.networks.insert(network(5));
    tx.apps.insert(app('api', 5));
    tx.machines.insert(machine('m1', 'api', { state: 'created', privateIp: 'fdaa:0:5:a7b:0:1:0:2' }));
  });
  const created = await ask();
  assert.equal(rcodeOf(created), 'NOERROR');
  assert.deepEqual(created.answers, []);
  await store.write((tx) =>
    tx.machines.update(machine('m1', 'api', { state: 'started', privateIp: 'fdaa:0:5:a7b:0:1:0:2' })),
  );
  assert.deepEqual(dataOf(await ask()), ['fdaa:0:5:a7b:0:1:0:2']);
  await store.write((tx) =>
    tx.machines.update(machine('m1', 'api', { state: 'stopped', privateIp: 'fdaa:0:5:a7b:0:1:0:2' })),
  );
  assert.deepEqual(dataOf(await ask()), []);
  await store.write((tx) => {
    tx.machines.delete('m1');
    tx.apps.delete('app-api');
  });
  assert.equal(rcodeOf(await ask()), 'NXDOMAIN');
});

test('dns server: start and close are safe to repeat; a closed server does not restart', async (t) => {
  const { server } = await setup(t);
  await server.start();
  // A network created later: one more address, served like the others.
  const added = await server.addAddress({ host: '127.0.0.1', port: 0 });
  assert.equal(server.listening().length, 3);
  assert.deepEqual(dataOf(await udpQuery(added, query('db.internal', 'AAAA'))), [IP.db1]);
  const [answer] = await tcpExchange(added, [dnsPacket.encode(query('db.internal', 'AAAA'))], 1);
  assert.deepEqual(dataOf(dnsPacket.decode(answer!)), [IP.db1]);
  // Binding a port already taken fails without leaving anything half-open.
  await assert.rejects(server.addAddress(added), /EADDRINUSE/);
  assert.equal(server.listening().length, 3);
  await server.close();
  await server.close();
  await assert.rejects(server.start(), /closed/);
  await assert.rejects(server.addAddress({ host: '127.0.0.1', port: 0 }), /not running/);
  assert.throws(
    () =>
      new DnsServer({
        view: { snapshot: () => ({}) as never },
        addresses: [{ host: 'localhost', port: 53 }],
      }),
    /not an IP address/,
  );
});

test('dns server: the 6PN rule and resolv.conf parsing', (t) => {
  assert.equal(networkIdOf('fdaa:0:18:a7b:7d:f066:b83b:2'), 0x18);
  assert.equal(networkIdOf('fdaa:2:45b::3'), 0x2045b);
  assert.equal(networkIdOf('FDAA:9:D844:0:1::11%br0'), 0x9d844);
  assert.equal(networkIdOf('fd00:0:18::2'), undefined);
  assert.equal(networkIdOf('fdaa::3'), undefined);
  assert.equal(networkIdOf('127.0.0.1'), undefined);
  assert.equal(networkIdOf('::ffff:127.0.0.1'), undefined);

  const dir = mkdtempSync(join(tmpdir(), 'hangar-dns-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'resolv.conf');
  writeFileSync(
    file,
    '# comment\nsearch example.com\nnameserver 10.0.0.53\nnameserver  fe80::1%eth0\nnameserver bogus\n',
  );
  assert.deepEqual(readResolvConf(file), [
    { host: '10.0.0.53', port: 53 },
    { host: 'fe80::1%eth0', port: 53 },
  ]);
  assert.deepEqual(readResolvConf(join(dir, 'missing')), []);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  buildRuleset,
  type DesiredNetState,
  deleteRulesetText,
  type FlycastEntry,
  flycastBlock,
  rulesetDelta,
  rulesetState,
} from '../../src/net/ruleset.js';
import type { PortRange } from '../../src/net/service-ports.js';
import { runCommand } from '../../src/shared/run.js';
import {
  type Attachment,
  planAttachment,
  planNetwork,
  serviceAddress,
} from '../../src/sixpn/address-plan.js';
import { DEFAULT_PRIVATE_V4_RANGE, ipv4At, parseIpv4Range } from '../../src/sixpn/ipv4.js';
import { flycastAddress } from '../../src/sixpn/ipv6.js';

const HOST = '0a7b007d';
const V4 = parseIpv4Range(DEFAULT_PRIVATE_V4_RANGE);

/** `networks` networks with `perNetwork` machines each, numbered from 1, and no Flycast address. */
function desiredState(networks: number, perNetwork: number, egress = false): DesiredNetState {
  const plans = Array.from({ length: networks }, (_, i) => planNetwork(i + 1, HOST));
  const attachments: Attachment[] = [];
  for (const network of plans) {
    for (let m = 0; m < perNetwork; m++) {
      const machineNumber = attachments.length + 1;
      attachments.push(
        planAttachment({
          machineId: machineNumber.toString(16).padStart(14, '0'),
          machineNumber,
          networkId: network.id,
          hostId: HOST,
          ipv4: ipv4At(V4, machineNumber - 1),
        }),
      );
    }
  }
  return { networks: plans, attachments, flycast: [], egress };
}

/** The `n`th Flycast address of a network, as the store allocates it, serving HTTP on port 80. */
const flycast = (networkId: number, n: number, ports: PortRange[] = [tcp(80)]): FlycastEntry => ({
  networkId,
  address: flycastAddress(networkId, n),
  ports,
});
const tcp = (start: number, end = start): PortRange => ({ protocol: 'tcp', start, end });
const udp = (start: number, end = start): PortRange => ({ protocol: 'udp', start, end });

/** `state` with one Flycast address in each of its networks. */
const withFlycast = (state: DesiredNetState): DesiredNetState => ({
  ...state,
  flycast: state.networks.map((n) => flycast(n.id, 1)),
});

/** The lines that are not set elements: rules, chains, set headers. */
const structure = (text: string) =>
  text.split('\n').filter((line) => !/^\s+"hg[nv][0-9a-f]+" \./.test(line) && !line.startsWith('#'));

test('ruleset: both tables are replaced in one transaction', () => {
  const text = buildRuleset(desiredState(2, 2));
  const head = text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .slice(0, 4);
  // Create-then-delete makes the delete succeed on a host that has no table yet.
  assert.deepEqual(head, [
    'table bridge hangar {}',
    'delete table bridge hangar',
    'table inet hangar {}',
    'delete table inet hangar',
  ]);
  assert.equal(text.match(/^table bridge hangar \{$/gm)?.length, 1);
  assert.equal(text.match(/^table inet hangar \{$/gm)?.length, 1);
  assert.ok(!/flush ruleset/.test(text), 'never touches other tables');
  assert.equal(
    deleteRulesetText(),
    'table bridge hangar {}\ndelete table bridge hangar\ntable inet hangar {}\ndelete table inet hangar\n',
  );
});

test('ruleset: each port is bound to its MAC and its addresses (anti-spoofing)', () => {
  const text = buildRuleset(desiredState(2, 2));
  for (const line of [
    '"hgv1" . 02:fd:00:00:00:01',
    '"hgv4" . 02:fd:00:00:00:04',
    '"hgv1" . fdaa:0:1:a7b:7d:0:1:2',
    '"hgv1" . fe80::fd:ff:fe00:1',
    '"hgv3" . fdaa:0:2:a7b:7d:0:3:2',
  ]) {
    assert.ok(text.includes(line), line);
  }
  assert.match(text, /iifname "hgv\*" jump from_machine/);
  assert.match(text, /iifname \. ether saddr != @port_macs counter drop/);
  assert.match(
    text,
    /iifname \. ip6 saddr @port_addrs accept\n.*\n\s+counter drop comment "spoofed source address"/,
  );
  assert.match(text, /nd-router-advert, nd-redirect/);
});

test("ruleset: a machine's neighbour advertisements may only claim its own addresses", () => {
  const text = buildRuleset(desiredState(2, 2));
  // The 6PN address and the link-local of each port, as the 128-bit integers the target is read as.
  for (const line of [
    '"hgv1" . 0xfdaa000000010a7b007d000000010002',
    '"hgv1" . 0xfe8000000000000000fd00fffe000001',
    '"hgv3" . 0xfdaa000000020a7b007d000000030002',
  ]) {
    assert.ok(text.includes(line), line);
  }
  assert.ok(!text.includes('"hgv1" . 0xfdaa000000010a7b007d000000020002'), "no port may claim a peer's");
  assert.match(text, /set na_targets \{\n\s+typeof iifname \. @th,64,128\n/);
  // After the MAC check (so the port is the sender's own) and before any accept.
  assert.match(
    text,
    /counter drop comment "router messages"\n\s+icmpv6 type nd-neighbor-advert iifname \. @th,64,128 != @na_targets counter drop comment "forged neighbour advertisement"\n\s+iifname \. ip6 saddr @port_addrs accept/,
  );
  // No machines: the set is declared without elements (nft refuses an empty element list).
  assert.match(buildRuleset(desiredState(1, 0)), /set na_targets \{\n\s+typeof iifname \. @th,64,128\n\s+\}/);
});

test('ruleset: machines reach the host only for DNS on their own ::3 and fdaa::3', () => {
  const text = buildRuleset(desiredState(2, 1));
  for (const bridge of ['hgn1', 'hgn2']) {
    const n = bridge.slice(3);
    for (const proto of ['udp', 'tcp']) {
      assert.ok(text.includes(`"${bridge}" . fdaa:0:${n}::3 . ${proto} . 53`));
      assert.ok(text.includes(`"${bridge}" . fdaa::3 . ${proto} . 53`));
    }
  }
  assert.ok(!text.includes('"hgn1" . fdaa:0:2::3'), "no bridge may reach another network's ::3");
  assert.match(text, /iifname "hgn\*" jump machine_to_host/);
  // The only other way in before the drop is the Flycast set (next test).
  assert.match(
    text,
    /iifname \. ip6 daddr \. meta l4proto \. th dport @services accept\n\s+iifname \. ip6 daddr \. meta l4proto \. th dport @flycast accept\n\s+counter drop/,
  );
});

test('ruleset: conntrack lets through only the machine side of flows the host opened', () => {
  const text = buildRuleset(desiredState(1, 1));
  const chain = /chain machine_to_host \{\n([\s\S]*?)\n {2}\}/.exec(text)![1]!;
  const established = chain.split('\n').filter((line) => line.includes('ct state'));
  // A flow the machine opens is original-direction: it never matches, and each of its packets meets
  // the port checks. Without `ct direction reply`, a mid-stream pickup would be a way to any socket.
  assert.deepEqual(established, ['    ct direction reply ct state established,related accept']);
  assert.match(chain, /counter drop comment "machine to host"$/);
});

test("ruleset: machines reach their own network's Flycast addresses on the service ports only", () => {
  const state = desiredState(2, 1);
  const text = buildRuleset({
    ...state,
    flycast: [
      flycast(1, 1, [tcp(80), tcp(443), udp(5000, 5010)]),
      flycast(2, 0x10002, [tcp(8000, 8010)]),
      // Written another way and listed twice: its ports join the first entry's, merged (80-81).
      { networkId: 1, address: 'fdaa:0:1:0:1:0:0:1', ports: [tcp(81), tcp(443)] },
      // Allocated, but no machine serves anything: no element, the address is closed.
      flycast(1, 2, []),
      // Network 9 has no bridge on this host (no app here): nothing to open, not an error.
      flycast(9, 1),
    ],
  });
  assert.equal(flycastBlock(1), 'fdaa:0:1:0:1::/80');
  const elements = [
    '"hgn1" . fdaa:0:1:0:1::1 . tcp . 443',
    '"hgn1" . fdaa:0:1:0:1::1 . tcp . 80-81',
    '"hgn1" . fdaa:0:1:0:1::1 . udp . 5000-5010',
    '"hgn2" . fdaa:0:2:0:1:0:1:2 . tcp . 8000-8010',
  ];
  assert.ok(
    text.includes(
      `  set flycast {\n    type ifname . ipv6_addr . inet_proto . inet_service\n    flags interval\n    elements = {\n      ${elements.join(',\n      ')}\n    }\n  }`,
    ),
    text,
  );
  assert.ok(!text.includes('fdaa:0:1:0:1::2'), 'an address nothing serves on opens nothing');
  assert.ok(!text.includes('fdaa:0:9:'), 'a network without a bridge here opens nothing');
  assert.ok(!text.includes('"hgn1" . fdaa:0:2:'), "no bridge may reach another network's Flycast address");
  assert.match(text, /^\s+iifname \. ip6 daddr \. meta l4proto \. th dport @flycast accept$/m);
  assert.match(text, /# Hangar 6PN isolation: 2 networks, 2 machines, 2 Flycast addresses/);
  assert.match(
    buildRuleset(state),
    /set flycast \{\n\s+type ifname \. ipv6_addr \. inet_proto \. inet_service\n\s+flags interval\n\s+\}/,
    'none: an empty set',
  );
  for (const bad of [tcp(0), tcp(65_536), tcp(90, 80), { protocol: 'icmp', start: 1, end: 1 }, tcp(1.5)]) {
    assert.throws(
      () => buildRuleset({ ...state, flycast: [flycast(1, 1, [bad as PortRange])] }),
      /is not a port range/,
      JSON.stringify(bad),
    );
  }
});

test("ruleset: a Flycast address outside its network's block is refused", () => {
  const state = desiredState(2, 1);
  const [a1] = state.attachments as [Attachment];
  const refused = (entry: Omit<FlycastEntry, 'ports'>) => () =>
    buildRuleset({ ...state, flycast: [flycast(1, 1), { ...entry, ports: [tcp(80)] }] });
  // Another network's Flycast address, its machine, its ::3, a 6PN address outside 0:1, fdaa::3.
  for (const address of [flycastAddress(2, 1), a1.address, serviceAddress(1), 'fdaa:0:1:0:2::1', 'fdaa::3']) {
    assert.throws(
      refused({ networkId: 1, address }),
      /is not in network 1's block fdaa:0:1:0:1::\/80/,
      address,
    );
  }
  for (const address of ['1.2.3.4', 'fdaa:0:1:0:1::1 } accept', 'FDAA:0:1:0:1::1', 'fdaa:::1']) {
    assert.throws(refused({ networkId: 1, address }), /not an IPv6 address/, address);
  }
});

test('ruleset: forwarding only within one bridge; out of the host only with egress, as policies allow', () => {
  const off = buildRuleset(desiredState(2, 1), { localNetworks: ['192.0.2.0/24'] });
  assert.ok(off.includes('"hgn1" . "hgn1"') && off.includes('"hgn2" . "hgn2"'));
  assert.ok(!off.includes('"hgn1" . "hgn2"'));
  assert.match(
    off,
    /chain leaving_network \{\n\s+iifname \. oifname @same_bridge accept\n\s+oifname "hgn\*" counter drop comment "cross-network"\n\s+ip6 daddr fdaa::\/16 counter drop comment "cross-network"\n\s+counter drop comment "egress off"/,
  );
  assert.ok(!off.includes('masquerade') && !off.includes('egress_policy'), 'egress off: no way out');
  assert.match(
    off,
    /chain prerouting \{\n\s+type filter hook prerouting priority filter; policy accept;\n\s+iifname "hgn\*" ip daddr != 10\.213\.0\.1 ip daddr 10\.213\.0\.0\/16 counter drop comment "to a machine's private IPv4"\n/,
  );
  assert.ok(
    !off.includes('ct direction reply ct state established,related accept\n    counter drop comment "into'),
  );

  const on = buildRuleset(desiredState(2, 1, true), { localNetworks: ['192.0.2.0/24', '2001:db8:1::/64'] });
  // The local networks: the fixed private ranges and the host's own subnets, disjoint.
  assert.match(
    on,
    /set local4 \{\n\s+type ipv4_addr\n\s+flags interval\n\s+elements = \{\n\s+0\.0\.0\.0\/8,\n\s+10\.0\.0\.0\/8,/,
  );
  assert.ok(on.includes('192.0.2.0/24,') && on.includes('2001:db8:1::/64'));
  assert.ok(!on.includes('fd00::/8'), 'inside fc00::/7');
  assert.match(
    on,
    /ip daddr @local_ok4 jump egress_policy\n\s+ip6 daddr @local_ok6 jump egress_policy\n\s+ip daddr @local4 counter drop comment "host-local network"\n\s+ip6 daddr @local6 counter drop comment "host-local network"\n\s+jump egress_policy\n\s+counter drop comment "egress off"/,
  );
  // Both machines have the default policy: everything else, IPv4 and IPv6, from their own addresses.
  const [m1, m2] = desiredState(2, 1, true).attachments;
  for (const m of [m1!, m2!]) {
    assert.ok(on.includes(`${m.ipv4} . 0.0.0.0/0`) && on.includes(`${m.address} . ::/0`), m.machineId);
  }
  assert.match(
    on,
    /ct direction reply ct state established,related accept\n\s+counter drop comment "into a network from outside"/,
  );
  assert.match(
    on,
    /type nat hook postrouting priority srcnat; policy accept;\n\s+iifname "hgn\*" oifname != "hgn\*" masquerade/,
  );

  // Policies: one machine off, the other an allow-list; the operator's local networks.
  const state = desiredState(2, 1, true);
  const text = buildRuleset(
    {
      ...state,
      egressPolicies: new Map([
        [m1!.machineId, { mode: 'off' as const, allow: [] }],
        [
          m2!.machineId,
          {
            mode: 'allow' as const,
            allow: [
              { cidr: '198.51.100.0/24', ports: [{ start: 443, end: 443 }] },
              { cidr: '2001:db8::/32' },
            ],
          },
        ],
      ]),
      egressLocal: ['192.168.7.0/24'],
    },
    { localNetworks: [] },
  );
  assert.ok(!text.includes(`${m1!.ipv4} . `) && !text.includes(`${m1!.address} . `), 'off: no element');
  assert.ok(text.includes(`${m2!.ipv4} . 198.51.100.0/24 . tcp . 443`));
  assert.ok(text.includes(`${m2!.ipv4} . 198.51.100.0/24 . udp . 443`));
  assert.ok(text.includes(`${m2!.address} . 2001:db8::/32`));
  assert.ok(!text.includes('0.0.0.0/0'));
  assert.match(text, /set local_ok4 \{[^}]*elements = \{\n\s+192\.168\.7\.0\/24\n/);
});

test('ruleset: a machine speaks IPv4 and ARP only as itself, and only to the gateway', () => {
  const state = desiredState(2, 2);
  const text = buildRuleset(state);
  for (const a of state.attachments) {
    assert.ok(text.includes(`"${a.veth}" . ${a.ipv4}`), `port_ipv4 has ${a.veth}`);
    const bridgeMac = state.networks.find((n) => n.bridge === a.bridge)!.mac;
    assert.ok(text.includes(`"${a.veth}" . ${bridgeMac}`), `port_gateway has ${a.veth}`);
  }
  assert.match(text, /ether type arp jump arp_from_machine\n\s+ether type ip jump ipv4_from_machine\n/);
  assert.match(
    text,
    /arp operation request arp daddr ip != 10\.213\.0\.1 counter drop comment "ARP beyond the gateway"/,
  );
  assert.match(text, /iifname \. ether daddr != @port_gateway counter drop comment "IPv4 past the gateway"/);
  // A machine without an address (recorded before there were any) has no IPv4 at all.
  const { ipv4: _none, ...bare } = state.attachments[0]!;
  const without = buildRuleset({ ...state, attachments: [bare, ...state.attachments.slice(1)] });
  assert.ok(!without.includes(`"${bare.veth}" . 10.213.`));
  // An address outside the range, or one given twice, is a bug upstream: never written.
  const stray = { ...state.attachments[1]!, ipv4: '192.168.1.5' };
  assert.throws(
    () => buildRuleset({ ...state, attachments: [state.attachments[0]!, stray] }),
    /not a machine address/,
  );
  const twice = { ...state.attachments[1]!, ipv4: state.attachments[0]!.ipv4! };
  assert.throws(
    () => buildRuleset({ ...state, attachments: [state.attachments[0]!, twice] }),
    /given to two machines/,
  );
  // Another range moves the gateway and the drop rule with it.
  const other = buildRuleset({ ...desiredState(1, 0), privateV4Range: '172.30.8.0/22' });
  assert.match(other, /arp daddr ip != 172\.30\.8\.1 /);
  assert.match(other, /ip daddr != 172\.30\.8\.1 ip daddr 172\.30\.8\.0\/22 counter drop/);
});

test('ruleset: the same state always gives the same text, whatever the order', () => {
  const state = withFlycast(desiredState(5, 3));
  const shuffled: DesiredNetState = {
    ...state,
    networks: [...state.networks].reverse(),
    flycast: [...state.flycast].reverse(),
    attachments: [...state.attachments].sort((a, b) => b.address.localeCompare(a.address)),
  };
  assert.equal(buildRuleset(shuffled), buildRuleset(state));
});

test('ruleset: an empty state is valid and still has the drops', () => {
  const text = buildRuleset({ networks: [], attachments: [], flycast: [], egress: false });
  assert.ok(!text.includes('elements'));
  assert.match(text, /counter drop comment "spoofed MAC"/);
});

test('ruleset: inconsistent or malformed input is refused, never written', () => {
  const state = desiredState(2, 1);
  const [a1] = state.attachments as [Attachment];
  assert.throws(() => buildRuleset({ ...state, networks: [state.networks[0]!] }), /not in the desired state/);
  assert.throws(
    () => buildRuleset({ ...state, networks: [...state.networks, state.networks[0]!] }),
    /listed twice/,
  );
  assert.throws(
    () => buildRuleset({ ...state, attachments: [a1, { ...a1, veth: 'hgv99', machineNumber: 99 }] }),
    /given to two machines/,
  );
  assert.throws(
    () => buildRuleset({ ...state, attachments: [{ ...a1, veth: 'hgv1" accept #' }] }),
    /interface name/,
  );
  assert.throws(
    () => buildRuleset({ ...state, attachments: [{ ...a1, bridge: 'hgn2' }] }),
    /not network 1's/,
  );
  assert.throws(
    () => buildRuleset({ ...state, attachments: [{ ...a1, address: '1.2.3.4' }] }),
    /not an IPv6/,
  );
  assert.throws(() => buildRuleset({ ...state, attachments: [{ ...a1, mac: 'zz' }] }), /not a MAC/);
  assert.throws(
    () => buildRuleset({ ...state, egress: true }, { localNetworks: ['10.0.0.0/8 }'] }),
    /not a CIDR/,
  );
});

test('ruleset: size is O(networks + machines), the rules themselves are constant', () => {
  const small = buildRuleset(desiredState(1, 1)).split('\n').length;
  const medium = buildRuleset(desiredState(100, 1)).split('\n').length;
  const large = buildRuleset(desiredState(1000, 1)).split('\n').length;
  // Per network: 4 service elements + 1 same_bridge; per machine: 1 MAC + 2 addresses + 2 NA targets
  // + its IPv4 address + its gateway's MAC.
  assert.equal(medium - small, 99 * 12);
  assert.equal(large - medium, 900 * 12);
  assert.deepEqual(
    structure(buildRuleset(desiredState(1000, 2))),
    structure(buildRuleset(desiredState(1, 1))),
  );
});

test('ruleset: a delta adds and deletes only the elements that changed', () => {
  const base = withFlycast(desiredState(3, 2));
  const before = rulesetState(base);
  assert.equal(rulesetDelta(before, rulesetState(base)), '', 'same state: nothing to do');

  // One more machine in network 2: its MAC, its two addresses (also as NA targets) and its IPv4 address
  // with its gateway's MAC, nothing else.
  const extra = planAttachment({
    machineId: '0000000000ffff',
    machineNumber: 0xffff,
    networkId: 2,
    hostId: HOST,
    ipv4: '10.213.9.9',
  });
  const added = rulesetDelta(before, rulesetState({ ...base, attachments: [...base.attachments, extra] }));
  assert.equal(
    added,
    [
      'add element bridge hangar port_macs { "hgvffff" . 02:fd:00:00:ff:ff }',
      'add element bridge hangar port_addrs { "hgvffff" . fdaa:0:2:a7b:7d:0:ffff:2, "hgvffff" . fe80::fd:ff:fe00:ffff }',
      'add element bridge hangar port_ipv4 { "hgvffff" . 10.213.9.9 }',
      'add element bridge hangar port_gateway { "hgvffff" . 0a:fd:00:00:00:02 }',
      'add element bridge hangar na_targets { "hgvffff" . 0xfdaa000000020a7b007d0000ffff0002, "hgvffff" . 0xfe8000000000000000fd00fffe00ffff }',
      '',
    ].join('\n'),
  );

  // A Flycast address allocated in network 2, then released: one element each way.
  const allocated = { ...base, flycast: [...base.flycast, flycast(2, 2)] };
  const element = '{ "hgn2" . fdaa:0:2:0:1::2 . tcp . 80 }';
  assert.equal(rulesetDelta(before, rulesetState(allocated)), `add element inet hangar flycast ${element}\n`);
  assert.equal(
    rulesetDelta(rulesetState(allocated), before),
    `delete element inet hangar flycast ${element}\n`,
  );

  // Network 3 and its machines go: deletes in all six sets. Its Flycast entry may stay in the store
  // (the app lives elsewhere); without the bridge it is ignored, so its element goes too.
  const smaller = { ...base, networks: base.networks.slice(0, 2), attachments: base.attachments.slice(0, 4) };
  const removed = rulesetDelta(before, rulesetState(smaller))!;
  assert.deepEqual(
    removed
      .trim()
      .split('\n')
      .map((line) => line.split(' {')[0]),
    [
      'delete element bridge hangar port_macs',
      'delete element bridge hangar port_addrs',
      'delete element bridge hangar port_ipv4',
      'delete element bridge hangar port_gateway',
      'delete element bridge hangar na_targets',
      'delete element inet hangar services',
      'delete element inet hangar flycast',
      'delete element inet hangar same_bridge',
    ],
  );
  assert.ok(removed.includes('"hgn3" . fdaa:0:3::3 . udp . 53') && !removed.includes('add element'));
  assert.ok(removed.includes('"hgn3" . fdaa:0:3:0:1::1 . tcp . 80'));

  // A machine's services change: the address's ports follow, as element deletes and adds.
  const widened = {
    ...base,
    flycast: base.flycast.map((f) => (f.networkId === 1 ? { ...f, ports: [tcp(80, 81), udp(53)] } : f)),
  };
  assert.equal(
    rulesetDelta(before, rulesetState(widened)),
    [
      'delete element inet hangar flycast { "hgn1" . fdaa:0:1:0:1::1 . tcp . 80 }',
      'add element inet hangar flycast { "hgn1" . fdaa:0:1:0:1::1 . tcp . 80-81, "hgn1" . fdaa:0:1:0:1::1 . udp . 53 }',
      '',
    ].join('\n'),
  );

  // Egress changes rules, not only elements: no delta, a full replace.
  assert.equal(rulesetDelta(before, rulesetState({ ...base, egress: true })), undefined);
  // A policy or a local network changes only elements.
  const on = rulesetState({ ...base, egress: true }, { localNetworks: ['192.0.2.0/24'] });
  const first = base.attachments[0]!;
  const offOne = rulesetState(
    {
      ...base,
      egress: true,
      egressPolicies: new Map([[first.machineId, { mode: 'off' as const, allow: [] }]]),
    },
    { localNetworks: ['192.0.2.0/24', '198.18.0.0/15'] },
  );
  assert.equal(
    rulesetDelta(on, offOne),
    [
      'add element inet hangar local4 { 198.18.0.0/15 }',
      `delete element inet hangar egress_any4 { ${first.ipv4} . 0.0.0.0/0 }`,
      `delete element inet hangar egress_any6 { ${first.address} . ::/0 }`,
      '',
    ].join('\n'),
  );
});

test('ruleset: nft accepts the text and the deltas (checked in a throwaway network namespace)', {
  skip: process.getuid?.() === 0 ? false : 'needs root for nft -c',
}, async () => {
  const grown = withFlycast(desiredState(4, 2));
  const widened = {
    ...grown,
    flycast: grown.flycast.map((f) => ({ ...f, ports: [tcp(79, 81), tcp(8000, 8080), udp(53)] })),
  };
  const shrunk = { ...grown, networks: grown.networks.slice(1), attachments: grown.attachments.slice(2) };
  // A full rule set followed by a delta, checked as one transaction: the delta's deletes must name
  // elements the full text created.
  const delta = rulesetDelta(rulesetState(grown), rulesetState(shrunk))!;
  const growBack = rulesetDelta(rulesetState(shrunk), rulesetState(grown))!;
  for (const text of [
    buildRuleset({ networks: [], attachments: [], flycast: [], egress: false }),
    buildRuleset(desiredState(3, 2, false)),
    buildRuleset(withFlycast(desiredState(1000, 1, true)), { localNetworks: ['192.0.2.0/24', 'fd00::/64'] }),
    // Allow-lists whose destinations and ports overlap: made disjoint, or nft refuses them.
    buildRuleset({
      ...desiredState(2, 1, true),
      egressPolicies: new Map([
        [
          desiredState(2, 1, true).attachments[0]!.machineId,
          {
            mode: 'allow' as const,
            allow: [
              { cidr: '198.51.100.0/24', ports: [{ start: 400, end: 500 }] },
              { cidr: '198.51.100.4/32', ports: [{ start: 450, end: 600 }] },
              { cidr: '198.51.100.0/24', ports: [{ start: 443, end: 443 }] },
              { cidr: '203.0.113.0/24' },
              { cidr: '203.0.113.128/25' },
              { cidr: '203.0.113.7/32', ports: [{ start: 22, end: 22 }] },
              { cidr: '2001:db8::/32' },
              { cidr: '2001:db8:1::/48', ports: [{ start: 53, end: 53 }] },
            ],
          },
        ],
      ]),
      egressLocal: ['192.168.0.0/16', '192.168.1.0/24', 'fd00::/8'],
    }),
    buildRuleset(grown) + delta,
    buildRuleset(shrunk) + growBack,
    // Ranges replacing single ports they overlap, in one transaction (deletes first).
    buildRuleset(grown) + rulesetDelta(rulesetState(grown), rulesetState(widened))!,
  ]) {
    // unshare -n: a fresh namespace, so the check never sees or touches the host's rule set.
    const result = await runCommand('unshare', ['-n', 'nft', '-c', '-f', '-'], {
      input: text,
      timeoutMs: 30_000,
    });
    assert.equal(result.code, 0, result.stderr);
  }
});

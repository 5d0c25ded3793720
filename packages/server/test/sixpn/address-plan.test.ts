import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  bridgeName,
  gatewayAddress,
  hostBlock,
  linkLocalOf,
  MAX_ID,
  machineAddress,
  machineMac,
  machineNumberOfVeth,
  networkIdOf,
  networkIdOfBridge,
  networkPrefix,
  parseHostId,
  pendingVethName,
  planAttachment,
  planNetwork,
  sameNetwork,
  serviceAddress,
  vethName,
} from '../../src/sixpn/address-plan.js';

const HOST = '0a7b007d';

test('address plan: Fly layout fdaa:<net>:<host>:<machine>:2 and its /112', () => {
  // The seed example of fly-semantics §4.1: network 0:18, host a7b:7d, machine f066:b83b.
  assert.equal(machineAddress(0x18, HOST, 0xf066b83b), 'fdaa:0:18:a7b:7d:f066:b83b:2');
  assert.equal(machineAddress(0x2045b, '00010002', 1), 'fdaa:2:45b:1:2:0:1:2');
  assert.equal(networkPrefix(0x18), 'fdaa:0:18::/48');
  assert.equal(networkPrefix(MAX_ID), 'fdaa:ffff:ffff::/48');
  assert.equal(serviceAddress(0x9d844), 'fdaa:9:d844::3');
  assert.equal(hostBlock(0x18, HOST), 'fdaa:0:18:a7b:7d::/80');
  assert.equal(gatewayAddress(0x18, HOST), 'fdaa:0:18:a7b:7d::1');
});

test('address plan: the network of an address, and same-network checks', () => {
  assert.equal(networkIdOf('fdaa:0:18:a7b:7d:f066:b83b:2'), 0x18);
  assert.equal(networkIdOf('fdaa:9:d844::3'), 0x9d844);
  assert.equal(networkIdOf('fdaa:ffff:ffff::1/80'), MAX_ID);
  assert.equal(networkIdOf('fdaa::3'), undefined, 'the resolver address belongs to no network');
  assert.equal(networkIdOf('fd00::1'), undefined);
  assert.equal(networkIdOf('10.0.0.1'), undefined);
  assert.equal(networkIdOf('not an address'), undefined);
  for (const id of [1, 0x18, 0x10000, 0x12345678, MAX_ID]) {
    assert.equal(networkIdOf(machineAddress(id, HOST, 7)), id);
    assert.equal(networkIdOf(serviceAddress(id)), id);
    assert.equal(networkIdOf(gatewayAddress(id, HOST)), id);
  }
  assert.ok(sameNetwork('fdaa:0:18:a7b:7d:0:1:2', 'fdaa:0:18:ffff:1:0:9:2'), 'other host, same network');
  assert.ok(sameNetwork(machineAddress(5, HOST, 1), serviceAddress(5)));
  // Groups 2 and 3 both count: 0:18 and 18:0 and 1:18 are three networks.
  assert.ok(!sameNetwork('fdaa:0:18::2', 'fdaa:18:0::2'));
  assert.ok(!sameNetwork('fdaa:0:18::2', 'fdaa:1:18::2'));
  assert.ok(!sameNetwork('fdaa::3', 'fdaa::3'), 'no network, so not the same one');
  assert.ok(!sameNetwork('fd00:0:18::2', 'fd00:0:18::3'));
});

test('address plan: reserved and out-of-range numbers are refused', () => {
  assert.throws(() => networkPrefix(0), /network id 0 is reserved/);
  assert.throws(() => networkPrefix(MAX_ID + 1), /network id must be an integer/);
  assert.throws(() => networkPrefix(1.5), /network id must be an integer/);
  assert.throws(() => machineAddress(1, HOST, 0), /machine number 0 is reserved/);
  assert.throws(() => machineAddress(1, '00000000', 1), /host id 0 is reserved/);
  assert.throws(() => machineAddress(1, '00000001', 1), /host id 1 is reserved/, 'Flycast host part 0:1');
  assert.throws(() => parseHostId('a7b7d'), /8 hex digits/);
  assert.equal(parseHostId('FFFFFFFF'), MAX_ID);
});

test('address plan: interface names fit in 15 characters and map back to their numbers', () => {
  assert.equal(bridgeName(0x18), 'hgn18');
  assert.equal(bridgeName(MAX_ID), 'hgnffffffff');
  assert.equal(vethName(1), 'hgv1');
  assert.equal(vethName(MAX_ID), 'hgvffffffff');
  assert.equal(pendingVethName(0xabc), 'hgwabc');
  for (const name of [bridgeName(MAX_ID), vethName(MAX_ID), pendingVethName(MAX_ID)]) {
    assert.ok(name.length <= 15, name);
  }
  assert.equal(networkIdOfBridge('hgn18'), 0x18);
  assert.equal(networkIdOfBridge('hgv18'), undefined);
  assert.equal(networkIdOfBridge('hgn'), undefined);
  assert.equal(networkIdOfBridge('hgn123456789'), undefined, 'more than 32 bits');
  assert.equal(networkIdOfBridge('docker0'), undefined);
  assert.equal(machineNumberOfVeth('hgvff'), 255);
  assert.equal(machineNumberOfVeth('hgwff'), 255);
  assert.equal(machineNumberOfVeth('hgnff'), undefined);
});

test('address plan: MACs and the EUI-64 link-local address the kernel derives', () => {
  assert.equal(machineMac(1), '02:fd:00:00:00:01');
  assert.equal(machineMac(0xf066b83b), '02:fd:f0:66:b8:3b');
  // What Linux gave a veth with MAC 02:fd:00:00:00:01 (checked by hand): fe80::fd:ff:fe00:1.
  assert.equal(linkLocalOf('02:fd:00:00:00:01'), 'fe80::fd:ff:fe00:1');
  assert.equal(linkLocalOf('00:11:22:33:44:55'), 'fe80::211:22ff:fe33:4455');
  assert.throws(() => linkLocalOf('02:fd:00'), /not a MAC/);
});

test('address plan: a network and an attachment, planned together', () => {
  const network = planNetwork(0x18, HOST);
  assert.deepEqual(network, {
    id: 0x18,
    bridge: 'hgn18',
    mac: '0a:fd:00:00:00:18',
    prefix: 'fdaa:0:18::/48',
    hostBlock: 'fdaa:0:18:a7b:7d::/80',
    gateway: 'fdaa:0:18:a7b:7d::1',
    serviceAddress: 'fdaa:0:18::3',
  });
  const attachment = planAttachment({
    machineId: '1857156b526dd8',
    machineNumber: 3,
    networkId: 0x18,
    hostId: HOST,
  });
  assert.deepEqual(attachment, {
    machineId: '1857156b526dd8',
    machineNumber: 3,
    networkId: 0x18,
    bridge: 'hgn18',
    veth: 'hgv3',
    mac: '02:fd:00:00:00:03',
    address: 'fdaa:0:18:a7b:7d:0:3:2',
    linkLocal: 'fe80::fd:ff:fe00:3',
    gateway: network.gateway,
    hostBlock: network.hostBlock,
  });
});

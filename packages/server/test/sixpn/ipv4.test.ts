import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DEFAULT_PRIVATE_V4_RANGE,
  formatIpv4,
  inIpv4Range,
  ipv4At,
  ipv4Capacity,
  ipv4Gateway,
  isMachineIpv4,
  nextFreeIpv4,
  parseIpv4,
  parseIpv4Range,
} from '../../src/sixpn/ipv4.js';

test('ipv4 plan: parse and format round trip, malformed text refused', () => {
  for (const text of ['0.0.0.0', '10.213.0.2', '255.255.255.255', '198.51.100.7']) {
    assert.equal(formatIpv4(parseIpv4(text)!), text);
  }
  for (const text of ['10.0.0', '10.0.0.256', '10.0.0.01', '10.0.0.1.2', 'a.b.c.d', '', '1e1.0.0.0']) {
    assert.equal(parseIpv4(text), undefined, text);
  }
});

test('ipv4 plan: the range, its gateway and its machine addresses', () => {
  const range = parseIpv4Range(DEFAULT_PRIVATE_V4_RANGE);
  assert.equal(range.cidr, '10.213.0.0/16');
  assert.equal(ipv4Gateway(range), '10.213.0.1');
  assert.equal(ipv4Capacity(range), 65_533);
  assert.equal(ipv4At(range, 0), '10.213.0.2');
  assert.equal(ipv4At(range, 65_532), '10.213.255.254');
  assert.throws(() => ipv4At(range, 65_533), /outside/);
  assert.ok(isMachineIpv4(range, '10.213.0.2'));
  assert.ok(!isMachineIpv4(range, '10.213.0.1'), 'the gateway is no machine');
  assert.ok(!isMachineIpv4(range, '10.213.255.255'), 'nor the broadcast address');
  assert.ok(!isMachineIpv4(range, '10.214.0.2'));
  assert.ok(inIpv4Range(range, '10.213.0.1'));
  assert.ok(!inIpv4Range(range, '10.212.255.255'));
});

test('ipv4 plan: bad ranges are refused with what to write', () => {
  assert.throws(() => parseIpv4Range('10.213.0.1/16'), /host bits set; write 10.213.0.0\/16/);
  assert.throws(() => parseIpv4Range('10.0.0.0/30'), /prefix length must be 8 to 28/);
  assert.throws(() => parseIpv4Range('10.0.0.0/7'), /prefix length/);
  assert.throws(() => parseIpv4Range('10.0.0.0'), /not an IPv4 range/);
  assert.throws(() => parseIpv4Range('fd00::/64'), /not an IPv4 range/);
  assert.equal(parseIpv4Range('192.168.77.0/28').cidr, '192.168.77.0/28');
});

test('ipv4 plan: allocation goes round the range, skipping addresses in use, before reusing one', () => {
  const range = parseIpv4Range('10.9.0.0/28'); // 13 machine addresses
  const inUse = new Set<string>();
  const handed: string[] = [];
  for (let cursor = 0; cursor < 13; cursor++) {
    const address = nextFreeIpv4(range, cursor, inUse)!;
    handed.push(address);
    inUse.add(address);
  }
  assert.equal(new Set(handed).size, 13);
  assert.equal(nextFreeIpv4(range, 13, inUse), undefined, 'full');
  // Two released: the cursor, past the end, comes round to the first of them, not to the most recent.
  inUse.delete('10.9.0.9');
  inUse.delete('10.9.0.4');
  assert.equal(nextFreeIpv4(range, 13, inUse), '10.9.0.4');
  assert.equal(nextFreeIpv4(range, 20, inUse), '10.9.0.9');
});

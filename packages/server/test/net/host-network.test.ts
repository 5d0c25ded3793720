import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { acquireHostNetworkLock, HostLockHeldError } from '../../src/net/host-lock.js';
import { desiredNetState } from '../../src/net/host-network.js';
import { bridgeName, vethName } from '../../src/sixpn/address-plan.js';
import type { AppRecord, IpAssignmentRecord, MachineRecord } from '../../src/store/records.js';

const HOST = '0a0b0c0d';

const app = (id: string, networkId: number) => ({ id, networkId }) as AppRecord;
const machine = (id: string, appId: string, fields: Partial<MachineRecord>) =>
  ({ id, appId, hostId: HOST, state: 'started', config: {}, ...fields }) as MachineRecord;
const ip = (address: string, type: IpAssignmentRecord['type'], networkId: number | null, appId = 'a') =>
  ({ ip: address, type, networkId, appId }) as IpAssignmentRecord;
/** A machine config with these services, as the store keeps it (only what the rules read). */
const serving = (...services: { protocol: 'tcp' | 'udp'; ports: object[] }[]) =>
  ({ services: services.map((s) => ({ internal_port: 8080, ...s })) }) as unknown as MachineRecord['config'];

test('desired state: a bridge per network with apps, a veth per live numbered machine of this host', () => {
  const desired = desiredNetState(
    {
      apps: [app('a', 7), app('b', 3), app('c', 7)],
      machines: [
        machine('m1', 'a', { machineNumber: 1 }),
        machine('m2', 'b', { machineNumber: 2, state: 'stopped' }),
        machine('m3', 'a', { machineNumber: 3, state: 'destroyed' }),
        machine('m4', 'a', {}), // recorded before private networks: no number yet
        machine('m5', 'a', { machineNumber: 5, hostId: 'ffff0000' }),
        machine('m6', 'gone', { machineNumber: 6 }),
      ],
      ips: [
        ip('fdaa:0:3:0:1::1', 'private_v6', 3),
        ip('2001:db8::1', 'v6', null),
        ip('fdaa:0:7:0:1::1', 'private_v6', 7),
      ],
    },
    HOST,
    true,
  );
  assert.deepEqual(
    desired.networks.map((n) => n.bridge),
    [bridgeName(3), bridgeName(7)],
    'each network once, in id order',
  );
  assert.deepEqual(
    desired.attachments.map((a) => [a.machineId, a.veth, a.bridge]),
    [
      ['m1', vethName(1), bridgeName(7)],
      ['m2', vethName(2), bridgeName(3)],
    ],
    'stopped machines keep their place; destroyed, unnumbered, foreign and orphaned ones have none',
  );
  assert.deepEqual(desired.flycast, [
    { networkId: 3, address: 'fdaa:0:3:0:1::1', ports: [] },
    { networkId: 7, address: 'fdaa:0:7:0:1::1', ports: [] },
  ]);
  assert.equal(desired.egress, true);
});

test('desired state: private IPv4 addresses in the range, each machine with its app’s egress policy', () => {
  const allow = { mode: 'allow' as const, allow: [{ cidr: '198.51.100.0/24' }] };
  const desired = desiredNetState(
    {
      apps: [{ ...app('a', 7), egress: allow }, app('b', 7)],
      machines: [
        machine('m1', 'a', { machineNumber: 1, privateIpv4: '10.213.0.2' }),
        machine('m2', 'b', { machineNumber: 2, privateIpv4: '10.99.0.2' }), // outside: replaced at start
        machine('m3', 'b', { machineNumber: 3 }), // recorded before private IPv4: none yet
      ],
      ips: [],
    },
    HOST,
    true,
    '10.213.0.0/16',
    ['192.168.7.0/24'],
  );
  assert.deepEqual(
    desired.attachments.map((a) => [a.machineId, a.ipv4]),
    [
      ['m1', '10.213.0.2'],
      ['m2', undefined],
      ['m3', undefined],
    ],
  );
  assert.deepEqual([...(desired.egressPolicies ?? new Map())], [['m1', allow]], 'b has none: the default');
  assert.deepEqual(desired.egressLocal, ['192.168.7.0/24']);
  assert.equal(desired.privateV4Range, '10.213.0.0/16');
});

test("desired state: a Flycast address opens exactly its app's service ports", () => {
  const desired = desiredNetState(
    {
      apps: [app('a', 7), app('b', 7)],
      machines: [
        machine('m1', 'a', {
          machineNumber: 1,
          config: serving(
            { protocol: 'tcp', ports: [{ port: 80 }, { port: 443 }] },
            { protocol: 'udp', ports: [{ start_port: 5000, end_port: 5010 }] },
          ),
        }),
        // Stopped machines count (the proxy starts them); overlapping and adjacent ports merge.
        machine('m2', 'a', {
          machineNumber: 2,
          state: 'stopped',
          config: serving({ protocol: 'tcp', ports: [{ port: 81 }, { start_port: 440, end_port: 443 }] }),
        }),
        // A destroyed machine's services are gone; another app's are not this address's.
        machine('m3', 'a', {
          machineNumber: 3,
          state: 'destroyed',
          config: serving({ protocol: 'tcp', ports: [{ port: 22 }] }),
        }),
        machine('m4', 'b', {
          machineNumber: 4,
          config: serving({ protocol: 'tcp', ports: [{ port: 5432 }] }),
        }),
        // A service without external ports exposes nothing.
        machine('m5', 'a', { machineNumber: 5, config: serving({ protocol: 'tcp', ports: [] }) }),
      ],
      ips: [ip('fdaa:0:7:0:1::1', 'private_v6', 7, 'a'), ip('fdaa:0:7:0:1::2', 'private_v6', 7, 'c')],
    },
    HOST,
    false,
  );
  assert.deepEqual(desired.flycast, [
    {
      networkId: 7,
      address: 'fdaa:0:7:0:1::1',
      ports: [
        { protocol: 'tcp', start: 80, end: 81 },
        { protocol: 'tcp', start: 440, end: 443 },
        { protocol: 'udp', start: 5000, end: 5010 },
      ],
    },
    { networkId: 7, address: 'fdaa:0:7:0:1::2', ports: [] },
  ]);
});

function lockPath(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'network.lock');
}

test('host lock: one owner, a clear error for the second, released for the next', async (t) => {
  const path = lockPath(t);
  const first = await acquireHostNetworkLock({ path });
  assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} `));
  await assert.rejects(acquireHostNetworkLock({ path }), (error: unknown) => {
    assert.ok(error instanceof HostLockHeldError);
    assert.match(error.message, new RegExp(`pid ${process.pid}.*network mode "off"`));
    return true;
  });
  // An owner may lend it (a test restarting hangard): the borrower's release leaves it held.
  (await acquireHostNetworkLock({ path, held: first })).release();
  assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} `));
  // A waiter gets it once the owner lets go.
  const waiting = acquireHostNetworkLock({ path, waitMs: 5_000 });
  setTimeout(() => first.release(), 300);
  const second = await waiting;
  first.release(); // a second release of a lock that is no longer ours leaves the new owner's alone
  assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} `));
  second.release();
  assert.throws(() => readFileSync(path), /ENOENT/);
});

test('host lock: the lock of a process that died is taken over', async (t) => {
  const path = lockPath(t);
  const dead = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid!;
  writeFileSync(path, `${dead} someone-elses-token\n`);
  const lock = await acquireHostNetworkLock({ path });
  assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} `));
  lock.release();
});

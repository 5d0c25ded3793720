import type { TestContext } from 'node:test';
import { DnsView } from '../../src/dns/view.js';
import { normalizeMachineConfig } from '../../src/shared/machine-config.js';
import type {
  AppRecord,
  IpAssignmentRecord,
  MachineRecord,
  MachineState,
  NetworkRecord,
} from '../../src/store/records.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import type { WriteTx } from '../../src/store/store.js';

/** Store records for DNS tests: only the fields DNS reads vary, the rest are fixed placeholders. */

const AT = '2026-01-01T00:00:00.000Z';

export const network = (id: number): NetworkRecord => ({
  id,
  orgId: 'org1',
  name: `net${id}`,
  createdAt: AT,
});

export const app = (name: string, networkId: number): AppRecord => ({
  id: `app-${name}`,
  name,
  orgId: 'org1',
  networkId,
  status: 'deployed',
  internalNumericId: 1,
  secretsVersion: 0,
  createdAt: AT,
  updatedAt: AT,
});

export interface MachineFields {
  state?: MachineState;
  region?: string;
  privateIp?: string | null;
  metadata?: Record<string, string>;
}

export const machine = (id: string, appName: string, fields: MachineFields = {}): MachineRecord => ({
  id,
  appId: `app-${appName}`,
  name: `name-${id}`,
  region: fields.region ?? 'iad',
  hostId: 'host1',
  state: fields.state ?? 'started',
  instanceId: '01HEPA330HZ37A78TK080NAK1M',
  config: normalizeMachineConfig({ image: 'registry.example/app:1', metadata: fields.metadata ?? {} }),
  imageRef: null,
  privateIp: fields.privateIp === undefined ? null : fields.privateIp,
  cordoned: false,
  createdAt: AT,
  updatedAt: AT,
});

export const flycast = (ip: string, appName: string, networkId: number): IpAssignmentRecord => ({
  ip,
  appId: `app-${appName}`,
  type: 'private_v6',
  region: 'iad',
  networkId,
  serviceName: null,
  shared: false,
  createdAt: AT,
});

/**
 * Two networks. Network 1 holds `web` (machines in several states) and `db`; network 2 holds `secret`,
 * which has a Flycast address allocated in network 1 (exposed to it) and none in its own.
 */
export const IP = {
  web1: 'fdaa:0:1:a7b:0:1:0:2',
  web2: 'fdaa:0:1:a7b:0:2:0:2',
  web3: 'fdaa:0:1:a7b:0:3:0:2',
  db1: 'fdaa:0:1:a7b:0:9:0:2',
  secret1: 'fdaa:0:2:a7b:0:1:0:2',
  webFlycast: 'fdaa:0:1:0:1::1',
  secretFlycastIn1: 'fdaa:0:1:0:1::2',
};

export function seedTwoNetworks(tx: WriteTx): void {
  tx.networks.insert(network(1));
  tx.networks.insert(network(2));
  tx.apps.insert(app('web', 1));
  tx.apps.insert(app('db', 1));
  tx.apps.insert(app('secret', 2));
  tx.machines.insert(machine('aaa1', 'web', { region: 'iad', privateIp: IP.web1 }));
  tx.machines.insert(
    machine('aaa2', 'web', {
      region: 'ams',
      privateIp: IP.web2,
      metadata: { fly_process_group: 'worker', role: 'primary' },
    }),
  );
  tx.machines.insert(machine('aaa3', 'web', { region: 'ord', privateIp: IP.web3, state: 'stopped' }));
  // Started but not yet given a 6PN address: its names exist, with nothing to answer.
  tx.machines.insert(machine('aaa4', 'web', { region: 'iad', privateIp: null }));
  tx.machines.insert(machine('aaa5', 'web', { region: 'syd', privateIp: null, state: 'destroyed' }));
  tx.machines.insert(machine('ddd1', 'db', { region: 'iad', privateIp: IP.db1 }));
  tx.machines.insert(machine('sss1', 'secret', { region: 'iad', privateIp: IP.secret1 }));
  tx.ipAssignments.insert(flycast(IP.webFlycast, 'web', 1));
  tx.ipAssignments.insert(flycast(IP.secretFlycastIn1, 'secret', 1));
}

/** An in-memory store seeded with seedTwoNetworks and a started view of it, both closed after the test. */
export async function seededView(t: TestContext): Promise<{ store: SqliteStore; view: DnsView }> {
  const store = new SqliteStore({ path: ':memory:' });
  t.after(() => store.close());
  await store.write(seedTwoNetworks);
  const view = new DnsView(store);
  await view.start();
  t.after(() => view.close());
  return { store, view };
}

// The Hangar side of bench/dns: a DnsServer over a DnsView of an in-memory SqliteStore holding the
// bench's records, on 127.0.0.1 with a free port. Started by run.mjs (through tsx, or on the build);
// prints `{"port":N}` once it answers, and exits cleanly on SIGTERM.
//
//   BENCH_DNS_DATA=<dataset.json> BENCH_DNS_CODE=<packages/server/src|dist> BENCH_DNS_EXT=<ts|js>
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const dataset = JSON.parse(readFileSync(process.env.BENCH_DNS_DATA, 'utf8'));
const code = process.env.BENCH_DNS_CODE;
const ext = process.env.BENCH_DNS_EXT;
// The types name the source modules, so that the bench type-check notices when one moves.
/** @type {typeof import('../../packages/server/src/store/sqlite/sqlite-store.ts')} */
const { SqliteStore } = await import(join(code, `store/sqlite/sqlite-store.${ext}`));
/** @type {typeof import('../../packages/server/src/dns/view.ts')} */
const { DnsView } = await import(join(code, `dns/view.${ext}`));
/** @type {typeof import('../../packages/server/src/dns/server.ts')} */
const { DnsServer } = await import(join(code, `dns/server.${ext}`));
/** @type {typeof import('../../packages/server/src/shared/machine-config.ts')} */
const { normalizeMachineConfig } = await import(join(code, `shared/machine-config.${ext}`));

const AT = '2026-01-01T00:00:00.000Z';
const store = new SqliteStore({ path: ':memory:' });
await store.write((tx) => {
  tx.networks.insert({ id: dataset.networkId, orgId: 'bench', name: 'bench', createdAt: AT });
  for (const [n, app] of dataset.apps.entries()) {
    tx.apps.insert({
      id: `app-${app.name}`,
      name: app.name,
      orgId: 'bench',
      networkId: dataset.networkId,
      status: 'deployed',
      internalNumericId: n + 1,
      secretsVersion: 0,
      createdAt: AT,
      updatedAt: AT,
    });
    for (const machine of app.machines) {
      tx.machines.insert({
        id: machine.id,
        appId: `app-${app.name}`,
        name: machine.id,
        region: dataset.region,
        hostId: 'bench',
        state: 'started',
        instanceId: '01HEPA330HZ37A78TK080NAK1M',
        config: normalizeMachineConfig({
          image: 'registry.example/bench:1',
          metadata: { fly_process_group: 'app' },
        }),
        imageRef: null,
        privateIp: machine.ip,
        cordoned: false,
        createdAt: AT,
        updatedAt: AT,
      });
    }
  }
});

const view = new DnsView(store);
await view.start();
const server = new DnsServer({
  view,
  addresses: [{ host: '127.0.0.1', port: 0 }],
  forwardTo: [],
  // Bench stand-in for the 6PN rule: loopback carries no network id, so every caller is on the bench's.
  networkOf: () => dataset.networkId,
});
await server.start();
process.stdout.write(`${JSON.stringify({ port: server.listening()[0].port })}\n`);

process.once('SIGTERM', async () => {
  await server.close();
  view.close();
  store.close();
  process.exit(0);
});

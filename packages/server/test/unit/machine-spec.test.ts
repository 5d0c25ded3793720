import assert from 'node:assert/strict';
import test from 'node:test';
import { machineSpec, restartSettings, stopSettings } from '../../src/machines/machine-spec.js';
import { MachineConfigSchema, normalizeMachineConfig } from '../../src/shared/machine-config.js';
import { signalName } from '../../src/shared/signals.js';
import type { AppRecord, MachineRecord } from '../../src/store/records.js';

const AT = '2026-01-01T00:00:00.000Z';
const app: AppRecord = {
  id: 'app1',
  name: 'acme',
  orgId: 'org1',
  networkId: 7,
  status: 'deployed',
  internalNumericId: 3,
  secretsVersion: 1,
  createdAt: AT,
  updatedAt: AT,
};

function machine(config: unknown, fields: Partial<MachineRecord> = {}): MachineRecord {
  return {
    id: 'm1',
    appId: app.id,
    name: 'one',
    region: 'iad',
    hostId: 'h1',
    state: 'created',
    instanceId: 'v1',
    config: normalizeMachineConfig(MachineConfigSchema.parse(config)),
    imageRef: null,
    machineNumber: 9,
    privateIp: 'fdaa:0:7:0:2:0:9:2',
    cordoned: false,
    createdAt: AT,
    updatedAt: AT,
    ...fields,
  };
}

test('machine config: defaults from one table are filled in and echoed; size presets expand', () => {
  const plain = normalizeMachineConfig(MachineConfigSchema.parse({ image: 'img:1' }));
  assert.deepEqual(plain.guest, { cpu_kind: 'shared', cpus: 1, memory_mb: 256 });
  assert.equal(plain.restart.policy, 'on-failure');
  const sized = normalizeMachineConfig(MachineConfigSchema.parse({ image: 'img:1', size: 'performance-2x' }));
  assert.deepEqual(sized.guest, { cpu_kind: 'performance', cpus: 2, memory_mb: 4096 });
  assert.equal('size' in sized, false);
  const service = normalizeMachineConfig(
    MachineConfigSchema.parse({
      image: 'img:1',
      services: [{ protocol: 'tcp', internal_port: 8080, autostop: 'off' }],
    }),
  ).services?.[0];
  assert.equal(service?.autostop, false);
  assert.equal(service?.autostart, true);
});

test('signals: one normaliser for names, short names, numbers and numeric strings', () => {
  assert.equal(signalName('SIGTERM'), 'SIGTERM');
  assert.equal(signalName('term'), 'SIGTERM');
  assert.equal(signalName(9), 'SIGKILL');
  assert.equal(signalName('3'), 'SIGQUIT');
  assert.equal(signalName('SIGNOPE'), undefined);
  const config = normalizeMachineConfig(
    MachineConfigSchema.parse({ image: 'i', stop_config: { signal: 'quit' } }),
  );
  assert.equal(config.stop_config?.signal, 'SIGQUIT');
  assert.equal(MachineConfigSchema.safeParse({ image: 'i', stop_config: { signal: 'nope' } }).success, false);
});

test('machine spec: resources in bytes, command, env precedence, files, mounts, network place', () => {
  const secrets = new Map([
    ['SHARED', 'from-secret'],
    ['CERT', Buffer.from('pem').toString('base64')],
  ]);
  const m = machine({
    image: 'img:1',
    guest: { cpus: 2, memory_mb: 512 },
    init: { cmd: ['serve', '--port', '8080'] },
    env: { SHARED: 'from-env', PLAIN: 'p' },
    metadata: { fly_process_group: 'worker' },
    stop_config: { signal: 'SIGTERM', timeout: '30s' },
    files: [
      { guest_path: '/etc/cert.pem', secret_name: 'CERT' },
      { guest_path: '/etc/motd', raw_value: Buffer.from('hi').toString('base64'), mode: 0o600 },
    ],
    mounts: [{ volume: 'vol_1', path: '/data' }],
  });
  const spec = machineSpec({ app, machine: m, image: 'img:1', secrets });
  assert.equal('config' in spec, false, 'the runtime never receives the Fly config');
  assert.equal(spec.cpus, 2);
  assert.equal(spec.memoryBytes, 512 * 1024 * 1024);
  assert.deepEqual(spec.command, { cmd: ['serve', '--port', '8080'] });
  assert.equal(spec.stopSignal, 'SIGTERM');
  assert.equal(spec.env.SHARED, 'from-secret', 'secrets win over env');
  assert.equal(spec.env.PLAIN, 'p');
  assert.equal(spec.env.PRIMARY_REGION, 'iad');
  assert.equal(spec.env.FLY_PROCESS_GROUP, 'worker');
  assert.equal(spec.env.FLY_VM_MEMORY_MB, '512');
  assert.equal(spec.env.FLY_PRIVATE_IP, m.privateIp);
  assert.deepEqual(
    spec.files.map((f) => [f.guestPath, f.content.toString(), f.mode]),
    [
      ['/etc/cert.pem', 'pem', 0o400],
      ['/etc/motd', 'hi', 0o600],
    ],
  );
  assert.deepEqual(spec.mounts, [{ volumeId: 'vol_1', path: '/data' }]);
  assert.deepEqual(spec.network, { networkId: 7, machineNumber: 9 });
  assert.deepEqual(stopSettings(m.config), { signal: 'SIGTERM', timeoutMs: 30_000 });
});

test('machine spec: skip_secrets leaves secrets out of env; a missing file secret is the caller to fix', () => {
  const secrets = new Map([['TOKEN', 'x']]);
  const skipped = machineSpec({
    app,
    machine: machine({ image: 'i' }, { skipSecrets: true }),
    image: 'i',
    secrets,
  });
  assert.equal(skipped.env.TOKEN, undefined);
  const plain = machineSpec({ app, machine: machine({ image: 'i' }), image: 'i', secrets });
  assert.equal(plain.env.TOKEN, 'x', 'positive control: without skip_secrets the secret is there');
  assert.throws(
    () =>
      machineSpec({
        app,
        machine: machine({ image: 'i', files: [{ guest_path: '/x', secret_name: 'NOPE' }] }),
        image: 'i',
        secrets,
      }),
    (error: Error & { code?: string }) =>
      error.code === 'failed_precondition' && /needs secret NOPE/.test(error.message),
  );
});

test('machine spec: defaults when the config is silent', () => {
  const m = machine({ image: 'i' }, { machineNumber: undefined, privateIp: null });
  const spec = machineSpec({ app, machine: m, image: 'i', secrets: new Map() });
  assert.equal(spec.memoryBytes, 256 * 1024 * 1024);
  assert.equal(spec.cpus, 1);
  assert.equal(spec.stopSignal, undefined, 'unset: the image STOPSIGNAL decides, then SIGINT');
  assert.equal(spec.env.FLY_PROCESS_GROUP, 'app');
  assert.equal(spec.env.FLY_PRIVATE_IP, undefined);
  assert.equal(spec.network, null);
  assert.deepEqual(stopSettings(m.config), { signal: undefined, timeoutMs: 5_000 });
  assert.deepEqual(restartSettings(m.config), { policy: 'on-failure', maxRetries: 10 });
});

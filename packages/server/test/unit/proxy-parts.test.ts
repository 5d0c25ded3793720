import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bucketOf, pickLeastLoaded, preferRegions } from '../../src/proxy/balancer.js';
import { requestHeaders, responseHeaders } from '../../src/proxy/headers.js';
import { proxyHeader } from '../../src/proxy/proxy-protocol.js';
import { parseReplayHeader, parseReplayJson, replayFailed, replaySource } from '../../src/proxy/replay.js';
import { RouteTable } from '../../src/proxy/route-table.js';
import {
  concurrencyOf,
  httpPortsOf,
  httpServiceFor,
  isWakeExempt,
  portsOf,
  serviceFor,
} from '../../src/proxy/services.js';
import { isHostname, isUnder, normalizeHostname } from '../../src/shared/certificates.js';
import {
  MachineConfigSchema,
  type NormalizedService,
  normalizeMachineConfig,
} from '../../src/shared/machine-config.js';
import type { AppRecord, IpAssignmentRecord, MachineRecord } from '../../src/store/records.js';

const c = (load: number, soft = 2, hard = 4, region = 'local') => ({ load, soft, hard, region });

test('balancer: the three buckets, least loaded first, ties at random', () => {
  assert.equal(bucketOf(c(0)), 0);
  assert.equal(bucketOf(c(2)), 1);
  assert.equal(bucketOf(c(4)), 2);
  const below = c(1);
  // Below soft always wins over at-or-above soft.
  assert.equal(pickLeastLoaded([c(3), below, c(2)]), below);
  const least = c(0);
  assert.equal(pickLeastLoaded([c(1), least]), least);
  // Only at-or-above soft left: the least loaded of them; at hard nothing.
  const soft = c(2);
  assert.equal(pickLeastLoaded([c(3), soft, c(4)]), soft);
  assert.equal(pickLeastLoaded([c(4), c(5)]), undefined);
  assert.equal(pickLeastLoaded([]), undefined);
  // Ties: the random number decides.
  const a = c(0);
  const b = c(0);
  assert.equal(
    pickLeastLoaded([a, b], () => 0),
    a,
  );
  assert.equal(
    pickLeastLoaded([a, b], () => 0.99),
    b,
  );
  // Infinity as hard limit (Fly's default) never excludes.
  assert.equal(bucketOf({ load: 1000, soft: 20, hard: Number.POSITIVE_INFINITY }), 1);
});

test('balancer: fly-prefer-region keeps the first region that can take the request', () => {
  const ams = c(0, 2, 4, 'ams');
  const fra = c(0, 2, 4, 'fra');
  const full = c(4, 2, 4, 'ord');
  assert.deepEqual(preferRegions([ams, fra, full], ['ord', 'fra']), [fra]);
  assert.deepEqual(preferRegions([ams, fra], ['syd']), [ams, fra]);
});

const service = (input: unknown): NormalizedService => {
  const config = normalizeMachineConfig(MachineConfigSchema.parse({ image: 'x:1', services: [input] }));
  return config.services![0]!;
};

test('services: ports, handlers, concurrency defaults, wake exemptions', () => {
  const web = service({
    protocol: 'tcp',
    internal_port: 8080,
    ports: [
      { port: 80, handlers: ['http'] },
      { port: 443, handlers: ['tls', 'http'] },
      { start_port: 9000, end_port: 9002, handlers: ['http'] },
      { port: 5432 },
    ],
    wake_exempt: { paths: ['/healthz'], user_agents: ['UptimeBot'] },
  });
  // TLS and raw TCP ports are not served as plain HTTP.
  assert.deepEqual(httpPortsOf(web), [80, 9000, 9001, 9002]);
  assert.equal(httpServiceFor([web], 80), web);
  assert.equal(httpServiceFor([web], 9001), web);
  assert.equal(httpServiceFor([web], 443), undefined);
  assert.equal(httpServiceFor([web], 5432), undefined);
  assert.deepEqual(concurrencyOf(web), { type: 'connections', soft: 20, hard: Number.POSITIVE_INFINITY });
  assert.deepEqual(
    concurrencyOf(
      service({
        protocol: 'tcp',
        internal_port: 1,
        concurrency: { type: 'requests', soft_limit: 5, hard_limit: 9 },
      }),
    ),
    { type: 'requests', soft: 5, hard: 9 },
  );
  assert.equal(isWakeExempt(web, '/healthz', undefined), true);
  assert.equal(isWakeExempt(web, '/', 'Mozilla/5.0 (compatible; UptimeBot/2.0)'), true);
  assert.equal(isWakeExempt(web, '/', 'curl/8'), false);
});

test('the schema refuses autostop without autostart', () => {
  const parsed = MachineConfigSchema.safeParse({
    image: 'x:1',
    services: [{ protocol: 'tcp', internal_port: 8080, autostart: false, autostop: 'suspend' }],
  });
  assert.equal(parsed.success, false);
  assert.match(String(parsed.error?.issues[0]?.message), /autostop without autostart/);
  for (const autostop of [false, 'off']) {
    assert.ok(
      MachineConfigSchema.safeParse({
        image: 'x:1',
        services: [{ protocol: 'tcp', internal_port: 8080, autostart: false, autostop }],
      }).success,
    );
  }
});

test('headers: what the proxy adds towards the app and back', () => {
  const out = requestHeaders(
    {
      host: 'a.hangar.localhost',
      connection: 'keep-alive, x-private',
      'x-private': 'dropped',
      'x-forwarded-for': '198.51.100.1',
      'fly-force-instance-id': 'abc',
    },
    { clientIp: '203.0.113.9', listenerPort: 80, region: 'fra', requestId: 'R1', httpVersion: '1.1' },
  );
  assert.equal(out.connection, undefined);
  assert.equal(out['x-private'], undefined);
  assert.equal(out['fly-force-instance-id'], undefined);
  assert.equal(out.host, 'a.hangar.localhost');
  assert.equal(out['x-forwarded-for'], '198.51.100.1, 203.0.113.9');
  assert.equal(out['fly-client-ip'], '203.0.113.9');
  assert.equal(out['fly-forwarded-port'], '80');
  assert.equal(out['x-forwarded-port'], '80');
  assert.equal(out['fly-region'], 'fra');
  assert.equal(out.via, '1.1 hangar');
  const back = responseHeaders(
    { 'transfer-encoding': 'chunked', via: '1.1 app' },
    { requestId: 'R1', httpVersion: '1.1' },
  );
  assert.equal(back['transfer-encoding'], undefined);
  assert.equal(back.via, '1.1 app, 1.1 hangar');
  assert.equal(back['fly-request-id'], 'R1');
  assert.equal(back.server, 'Hangar');
});

test('route table from records: public apps, Flycast bindings, machines, deletions', () => {
  const now = new Date(0).toISOString();
  const app: AppRecord = {
    id: 'app1',
    name: 'Web',
    orgId: 'org1',
    networkId: 7,
    status: 'deployed',
    internalNumericId: 1,
    secretsVersion: 0,
    createdAt: now,
    updatedAt: now,
  };
  const config = normalizeMachineConfig(
    MachineConfigSchema.parse({
      image: 'x:1',
      services: [{ protocol: 'tcp', internal_port: 8080, ports: [{ port: 80, handlers: ['http'] }] }],
      stop_config: { timeout: '7s' },
    }),
  );
  const machine: MachineRecord = {
    id: 'm1',
    appId: 'app1',
    name: 'm1',
    region: 'local',
    hostId: 'h',
    state: 'started',
    instanceId: 'v1',
    config,
    imageRef: null,
    privateIp: 'fdaa:0:7:a:b:0:1:2',
    cordoned: false,
    createdAt: now,
    updatedAt: now,
  };
  const ip = (
    address: string,
    type: IpAssignmentRecord['type'],
    networkId: number | null,
  ): IpAssignmentRecord => ({
    ip: address,
    appId: 'app1',
    type,
    region: 'local',
    networkId,
    serviceName: null,
    shared: false,
    createdAt: now,
  });
  const table = new RouteTable();
  let changes = 0;
  table.onChange(() => changes++);
  // The machine arrives before its app: it is kept and found once the app comes.
  table.apply({ revision: 1, changes: [{ collection: 'machines', key: 'm1', doc: machine }] });
  table.apply({ revision: 2, changes: [{ collection: 'apps', key: 'app1', doc: app }] });
  assert.equal(table.appByName('web')?.machines.get('m1')?.stopTimeoutMs, 7000);
  assert.equal(table.appByName('WEB')?.isPublic, false);
  table.apply({
    revision: 3,
    changes: [
      { collection: 'ipAssignments', key: '127.0.0.1', doc: ip('127.0.0.1', 'shared_v4', null) },
      { collection: 'ipAssignments', key: 'fdaa:0:7:0:1::1', doc: ip('fdaa:0:7:0:1::1', 'private_v6', 7) },
    ],
  });
  assert.equal(table.appByName('web')?.isPublic, true);
  assert.deepEqual(table.flycast('fdaa:0:7:0:1::1'), { ip: 'fdaa:0:7:0:1::1', appId: 'app1', networkId: 7 });
  assert.deepEqual(table.flycastBindings(), [{ ip: 'fdaa:0:7:0:1::1', port: 80, appId: 'app1' }]);
  // Other collections do not notify.
  const before = changes;
  table.apply({ revision: 4, changes: [{ collection: 'tokens', key: 't', doc: {} }] });
  assert.equal(changes, before);
  // A destroyed machine leaves; so do released addresses.
  table.apply({
    revision: 5,
    changes: [
      { collection: 'machines', key: 'm1', doc: { ...machine, state: 'destroyed' } },
      { collection: 'ipAssignments', key: '127.0.0.1', doc: undefined },
    ],
  });
  assert.equal(table.machine('m1'), undefined);
  assert.equal(table.appByName('web')?.isPublic, false);
  assert.deepEqual(table.flycastBindings(), []);
  assert.equal(table.revision, 5);
});

test('fly-replay: header and JSON forms, quoting, errors', () => {
  assert.deepEqual(
    parseReplayHeader('app=Customer-A;state=abc;elsewhere=true;timeout=800ms;fallback=prefer_self'),
    {
      app: 'customer-a',
      regions: [],
      elsewhere: true,
      state: 'abc',
      timeoutMs: 800,
      fallback: 'prefer_self',
    },
  );
  assert.deepEqual(parseReplayHeader('region="ams,fra"; instance=abc123 ;state="a;b=c"'), {
    regions: ['ams', 'fra'],
    elsewhere: false,
    instance: 'abc123',
    state: 'a;b=c',
  });
  assert.deepEqual(parseReplayJson('{"app":"x","prefer_instance":"m1","region":["iad","ord"]}'), {
    app: 'x',
    preferInstance: 'm1',
    regions: ['iad', 'ord'],
    elsewhere: false,
  });
  for (const bad of [
    '',
    'app',
    'timeout=soon',
    'fallback=elsewhere',
    'elsewhere=yes',
    'state="open',
    'instance=a;prefer_instance=b',
  ]) {
    assert.throws(
      () => parseReplayHeader(bad),
      (error: unknown) => (error as { code: string }).code === 'PA03',
      bad,
    );
  }
  assert.throws(
    () => parseReplayJson('[1]'),
    (error: unknown) => (error as { code: string }).code === 'PA03',
  );
  assert.equal(
    replaySource({ instance: 'm1', region: 'fra', nowMs: 1.5, state: 'x y' }),
    'instance=m1;region=fra;t=1500;state="x y"',
  );
  assert.equal(
    replayFailed({ app: 'b', regions: [], source: 'm1', reason: 'timeout', elapsedMs: 12.4 }),
    'app=b;replay_source=m1;reason=timeout;elapsed_ms=12',
  );
});

test('handlers: what the proxy does with each port entry', () => {
  const svc = service({
    protocol: 'tcp',
    internal_port: 8080,
    ports: [
      { port: 80, handlers: ['http'], force_https: true },
      { port: 443, handlers: ['tls', 'http'] },
      { port: 5000, handlers: [] },
      { port: 5001, handlers: ['proxy_proto'] },
      { port: 5002, handlers: ['tls', 'proxy_proto'], proxy_proto_options: { version: 'v2' } },
      { port: 5432, handlers: ['pg_tls'] },
    ],
  });
  assert.deepEqual(serviceFor([svc], 80)?.handling, {
    tls: false,
    http: true,
    proxyProto: undefined,
    forceHttps: true,
    unsupported: undefined,
  });
  assert.equal(serviceFor([svc], 443)?.handling.tls, true);
  assert.equal(serviceFor([svc], 5000)?.handling.http, false);
  assert.equal(serviceFor([svc], 5001)?.handling.proxyProto, 'v1');
  assert.equal(serviceFor([svc], 5002)?.handling.proxyProto, 'v2');
  assert.equal(serviceFor([svc], 5432)?.handling.unsupported, 'pg_tls');
  assert.equal(
    serviceFor([svc], 443, (h) => !h.tls),
    undefined,
  );
  assert.equal(serviceFor([svc], 6000), undefined);
  assert.deepEqual(portsOf(svc), [80, 443, 5000, 5001, 5002, 5432]);
});

test('PROXY protocol headers, version 1 and 2', () => {
  const v1 = proxyHeader(
    'v1',
    { address: '::ffff:192.0.2.1', port: 4000 },
    { address: '::ffff:192.0.2.9', port: 443 },
  );
  assert.equal(v1.toString(), 'PROXY TCP4 192.0.2.1 192.0.2.9 4000 443\r\n');
  const v1six = proxyHeader('v1', { address: 'fdaa::1', port: 4000 }, { address: 'fdaa:0:1::2', port: 80 });
  assert.equal(v1six.toString(), 'PROXY TCP6 fdaa::1 fdaa:0:1::2 4000 80\r\n');
  const v2 = proxyHeader('v2', { address: '192.0.2.1', port: 4000 }, { address: '192.0.2.9', port: 443 });
  assert.equal(
    v2.toString('hex'),
    `0d0a0d0a000d0a515549540a` + `21` + `11` + `000c` + `c0000201` + `c0000209` + `0fa0` + `01bb`,
  );
  const v2six = proxyHeader('v2', { address: 'fdaa::1', port: 1 }, { address: '::1', port: 2 });
  assert.equal(v2six[13], 0x21);
  assert.equal(v2six.readUInt16BE(14), 36);
  assert.equal(v2six.subarray(16, 32).toString('hex'), 'fdaa0000000000000000000000000001');
  assert.equal(v2six.subarray(32, 48).toString('hex'), '00000000000000000000000000000001');
});

test('certificate names: hostnames, the platform namespace', () => {
  for (const good of ['www.example.com', 'a-b.example.co.uk', 'x.y']) assert.ok(isHostname(good), good);
  for (const bad of [
    'localhost',
    '192.0.2.1',
    '-a.example.com',
    'a..b',
    '*.example.com',
    'a_b.example.com',
  ]) {
    assert.ok(!isHostname(bad), bad);
  }
  assert.ok(isUnder('app.hangar.localhost', 'hangar.localhost'));
  assert.ok(isUnder('hangar.localhost', 'hangar.localhost'));
  assert.ok(!isUnder('evilhangar.localhost', 'hangar.localhost'));
  assert.equal(normalizeHostname(' WWW.Example.COM. '), 'www.example.com');
});

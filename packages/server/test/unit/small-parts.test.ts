import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ApiRateLimits } from '../../src/api/rate-limits.js';
import type { Principal } from '../../src/auth/tokens.js';
import { mintToken, tokenIdOf, tokensFromHeader, verifyToken } from '../../src/auth/tokens.js';
import { resolveConfig } from '../../src/config/config.js';
import { DEFAULT_RATE_LIMITS } from '../../src/config/rate-limits.js';
import { Vault } from '../../src/secrets/vault.js';
import { durationToMs, parseGoDuration, queryDurationToMs } from '../../src/shared/duration.js';
import { KeyedQueue } from '../../src/shared/keyed-queue.js';
import { RateLimiter } from '../../src/shared/rate-limiter.js';
import { addressInPrefix, flycastAddress, formatIpv6, parseIpv6 } from '../../src/sixpn/ipv6.js';

function tempDir(t: import('node:test').TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-unit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('durations: Go strings and nanosecond integers', () => {
  assert.equal(parseGoDuration('1h2m3.5s'), 3_723_500);
  assert.equal(parseGoDuration('500ms'), 500);
  assert.equal(parseGoDuration('10us'), 0.01);
  assert.equal(parseGoDuration('0'), 0);
  assert.equal(parseGoDuration('5 s'), undefined);
  assert.equal(parseGoDuration('s'), undefined);
  assert.equal(durationToMs(5_000_000_000, 'timeout'), 5000);
  assert.throws(
    () => durationToMs('later', 'stop_config.timeout'),
    /stop_config\.timeout: expected a duration/,
  );
  assert.throws(() => durationToMs(-1, 'x'), /expected a duration/);
  assert.equal(queryDurationToMs('30', 'timeout'), 30_000);
  assert.equal(queryDurationToMs('1m', 'timeout'), 60_000);
  assert.throws(() => queryDurationToMs('soon', 'timeout'), /timeout: expected seconds/);
});

test('ipv6: parse, format and the address plans', () => {
  assert.deepEqual(parseIpv6('fdaa:0:18::3'), [0xfdaa, 0, 0x18, 0, 0, 0, 0, 3]);
  assert.equal(parseIpv6('1::2::3'), undefined);
  assert.equal(parseIpv6('fdaa:zz::1'), undefined);
  assert.equal(parseIpv6('1:2:3:4:5:6:7'), undefined);
  assert.equal(formatIpv6([0xfdaa, 0, 0x18, 0xa7b, 0x7d, 0xf066, 0xb83b, 2]), 'fdaa:0:18:a7b:7d:f066:b83b:2');
  assert.equal(formatIpv6([1, 0, 0, 2, 0, 0, 0, 3]), '1:0:0:2::3', 'the longest zero run is compressed');
  assert.equal(formatIpv6([0, 0, 0, 0, 0, 0, 0, 0]), '::');
  assert.equal(flycastAddress(0x2045b, 17), 'fdaa:2:45b:0:1::11');
  assert.equal(addressInPrefix('2001:db8:1::/64', 70000), '2001:db8:1::1:1170');
  assert.throws(() => addressInPrefix('2001:db8::/128', 1), /prefix/);
});

test('rate limiter: burst, refill, retry-after', () => {
  let now = 0;
  const limiter = new RateLimiter(() => now);
  const limit = { perSecond: 1, burst: 3 };
  assert.deepEqual(
    [0, 1, 2, 3].map(() => limiter.take('k', limit)),
    [0, 0, 0, 1],
  );
  now += 1000;
  assert.equal(limiter.take('k', limit), 0, 'one token back after a second');
  assert.equal(limiter.take('other', limit), 0, 'keys are independent');
  assert.equal(limiter.take('slow', { perSecond: 0.1, burst: 1 }), 0);
  assert.equal(limiter.take('slow', { perSecond: 0.1, burst: 1 }), 10);
});

test('keyed queue: one task at a time per key, keys in parallel, failures do not block', async () => {
  const queue = new KeyedQueue();
  const log: string[] = [];
  const task =
    (name: string, ms: number, fail = false) =>
    async () => {
      log.push(`start ${name}`);
      await new Promise((resolve) => setTimeout(resolve, ms));
      log.push(`end ${name}`);
      if (fail) throw new Error(name);
    };
  const results = await Promise.allSettled([
    queue.run('m1', task('a', 20, true)),
    queue.run('m1', task('b', 1)),
    queue.run('m2', task('c', 5)),
  ]);
  assert.deepEqual(
    results.map((r) => r.status),
    ['rejected', 'fulfilled', 'fulfilled'],
  );
  assert.ok(log.indexOf('end a') < log.indexOf('start b'), 'b waits for a on the same key');
  assert.ok(log.indexOf('start c') < log.indexOf('end a'), 'c runs beside a');
  await queue.drain();
});

test('vault: seals, binds to the context, keeps its key file private', (t) => {
  const dir = tempDir(t);
  const keyFile = join(dir, 'secrets.key');
  const vault = Vault.open(keyFile);
  assert.equal(statSync(keyFile).mode & 0o777, 0o600);
  const sealed = vault.seal('hunter2', 'app1/PASSWORD');
  assert.ok(!sealed.includes('hunter2') && !Buffer.from(sealed, 'base64').includes('hunter2'));
  assert.notEqual(vault.seal('hunter2', 'app1/PASSWORD'), sealed, 'a fresh nonce every time');
  assert.equal(vault.unseal(sealed, 'app1/PASSWORD'), 'hunter2');
  assert.throws(() => vault.unseal(sealed, 'app2/PASSWORD'), 'a sealed value moved elsewhere does not open');
  assert.equal(Vault.open(keyFile).unseal(sealed, 'app1/PASSWORD'), 'hunter2', 'the key persists');
  assert.equal(vault.digest('a'), vault.digest('a'));
  assert.notEqual(vault.digest('a'), vault.digest('b'));
  writeFileSync(join(dir, 'short.key'), 'too short');
  assert.throws(() => Vault.open(join(dir, 'short.key')), /damaged/);
  assert.equal(readFileSync(keyFile).length, 32);
});

test('tokens: format, header parsing, constant-time verification, expiry', () => {
  const minted = mintToken();
  assert.match(minted.token, /^hg1_[a-z0-9]{16}_[A-Za-z0-9_-]{43}$/);
  assert.equal(tokenIdOf(minted.token), minted.id);
  assert.equal(tokenIdOf('fm2_abc'), undefined);
  assert.deepEqual(tokensFromHeader(`FlyV1 a, b ,c`), ['a', 'b', 'c']);
  assert.deepEqual(tokensFromHeader('bearer x'), ['x']);
  assert.deepEqual(tokensFromHeader('Token x'), []);
  const record = {
    id: minted.id,
    type: 'org' as const,
    orgId: 'o',
    appId: null,
    name: 'n',
    secretHash: minted.secretHash,
    createdAt: '',
    expiresAt: '2026-01-01T00:00:00Z',
  };
  assert.equal(verifyToken(minted.token, record, Date.parse('2025-12-31T00:00:00Z'))?.orgId, 'o');
  assert.equal(verifyToken(minted.token, record, Date.parse('2026-01-02T00:00:00Z')), undefined, 'expired');
  assert.equal(verifyToken(mintToken().token, record, 0), undefined, 'another secret');
});

test('config: layers and strict validation', (t) => {
  const dataDir = tempDir(t);
  const file = join(dataDir, 'config.json');
  writeFileSync(
    file,
    JSON.stringify({ region: 'ams', rateLimits: { machineAction: { perSecond: 2, burst: 5 } } }),
  );
  const config = resolveConfig({ file, env: { HANGAR_DATA_DIR: dataDir, HANGAR_API_LISTEN: '[::1]:9000' } });
  assert.equal(config.region, 'ams');
  assert.deepEqual(config.listen, { host: '::1', port: 9000 });
  assert.deepEqual(config.rateLimits.machineAction, { perSecond: 2, burst: 5 });
  assert.equal(config.rateLimits.machineRead.burst, 10, 'unset keys keep their defaults');
  assert.match(config.hostId, /^[0-9a-f]{8}$/);
  assert.equal(
    resolveConfig({ env: { HANGAR_DATA_DIR: dataDir } }).hostId,
    config.hostId,
    'the host id is kept',
  );

  writeFileSync(file, JSON.stringify({ regoin: 'typo' }));
  assert.throws(() => resolveConfig({ file, env: { HANGAR_DATA_DIR: dataDir } }), /Unrecognized key/);
  writeFileSync(file, '{not json');
  assert.throws(() => resolveConfig({ file, env: {} }), /not valid JSON/);
  assert.throws(
    () => resolveConfig({ env: { HANGAR_DATA_DIR: dataDir, HANGAR_API_LISTEN: 'nowhere' } }),
    /host:port/,
  );
  assert.throws(
    () => resolveConfig({ env: { HANGAR_DATA_DIR: dataDir }, overrides: { region: 'US East' } }),
    /region/,
  );
  const network = resolveConfig({
    env: { HANGAR_DATA_DIR: dataDir, HANGAR_NETWORK: 'required', HANGAR_EGRESS: 'on' },
  });
  assert.deepEqual(network.network, {
    mode: 'required',
    egress: true,
    egressLocal: [],
    privateV4Range: '10.213.0.0/16',
  });
  assert.throws(
    () =>
      resolveConfig({
        env: { HANGAR_DATA_DIR: dataDir },
        overrides: { network: { privateV4Range: '10.213.0.1/16' } },
      }),
    /network\.privateV4Range/,
  );
  assert.throws(
    () => resolveConfig({ env: { HANGAR_DATA_DIR: dataDir, HANGAR_EGRESS: 'yes' } }),
    /HANGAR_EGRESS must be "on" or "off"/,
  );
  assert.throws(
    () => resolveConfig({ env: { HANGAR_DATA_DIR: dataDir, HANGAR_NETWORK: 'maybe' } }),
    /network\.mode/,
  );
  // Host ids 0 and 1 would collide with the service and Flycast blocks of every network.
  writeFileSync(join(dataDir, 'host-id'), '00000001\n');
  assert.throws(() => resolveConfig({ env: { HANGAR_DATA_DIR: dataDir } }), /not a usable host id/);
});

test('api rate limits: buckets belong to one org, so another org cannot drain them', () => {
  const limits = new ApiRateLimits({ ...DEFAULT_RATE_LIMITS, machineAction: { perSecond: 1, burst: 1 } });
  const principal = (orgId: string): Principal => ({
    tokenId: 't',
    type: 'org',
    orgId,
    appId: null,
    name: 'n',
  });
  limits.charge(principal('intruder'), 'machine_action', 'secrets.set', 'acme');
  assert.throws(
    () => limits.charge(principal('intruder'), 'machine_action', 'secrets.set', 'acme'),
    /rate limit/,
  );
  limits.charge(principal('owner'), 'machine_action', 'secrets.set', 'acme');
});

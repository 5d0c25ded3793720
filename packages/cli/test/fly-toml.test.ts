// fly.toml parsing and validation, and the MachineConfigs a deploy sends, from the shapes users bring.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import './helpers.js';

// Loaded after helpers.js, which maps @hangar/sdk to its source (see there).
const { parseFlyToml, machineConfigs, FlyTomlError, splitCommand, parseDurationMs, parseSizeMb } =
  await import('../src/fly-toml/index.js');

const fixture = (name: string) =>
  readFileSync(new URL(`./fixtures/fly-toml/${name}`, import.meta.url), 'utf8');

/** The FlyTomlError that parsing `text` throws. */
function failure(text: string): InstanceType<typeof FlyTomlError> {
  try {
    parseFlyToml(text);
  } catch (err) {
    assert.ok(err instanceof FlyTomlError, `expected a FlyTomlError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the file to be refused');
}

test('web and worker groups: each gets its command, guest, services, checks, mount and restart', () => {
  const { config, warnings } = parseFlyToml(fixture('web-worker.toml'));
  assert.deepEqual(warnings, []);
  assert.equal(config.app, 'storefront');
  assert.equal(config.build.image, '127.0.0.1:4281/storefront/storefront:v3');
  assert.equal(config.deploy.strategy, 'rolling');
  assert.equal(config.deploy.maxUnavailable, 1);
  assert.equal(config.deploy.waitTimeoutMs, 90_000);
  assert.deepEqual(config.deploy.releaseCommand, ['/srv/bin/migrate', '--all']);

  const configs = machineConfigs(config, 'img:1');
  assert.deepEqual([...configs.keys()], ['web', 'worker']);
  const web = configs.get('web');
  const worker = configs.get('worker');
  assert.ok(web && worker);
  assert.deepEqual(web.env, {
    MODE: 'production',
    LISTEN_PORT: '4000',
    VERBOSE: 'false',
    PRIMARY_REGION: 'local',
  });
  assert.deepEqual(web.init, { cmd: ['/srv/bin/web', '--port', '4000'] });
  assert.deepEqual(worker.init, { cmd: ['/srv/bin/worker', '--queue', 'default queue'] });
  assert.deepEqual(web.guest, { cpu_kind: 'shared', cpus: 1, memory_mb: 512 });
  assert.deepEqual(worker.guest, { cpu_kind: 'shared', cpus: 2, memory_mb: 1024 });
  assert.deepEqual(web.stop_config, { signal: 'SIGTERM', timeout: '20s' });
  assert.deepEqual(web.metadata, { fly_platform_version: 'v2', fly_process_group: 'web' });

  // [http_service] becomes one service with ports 80 (http) and 443 (tls + http).
  assert.deepEqual(web.services, [
    {
      protocol: 'tcp',
      internal_port: 4000,
      ports: [
        { port: 80, handlers: ['http'], force_https: true },
        { port: 443, handlers: ['tls', 'http'] },
      ],
      autostop: 'suspend',
      autostart: true,
      min_machines_running: 1,
      concurrency: { type: 'requests', soft_limit: 30, hard_limit: 50 },
      checks: [
        { type: 'http', interval: '10s', timeout: '1s', grace_period: '3s', method: 'GET', path: '/healthz' },
      ],
    },
  ]);
  assert.equal(worker.services, undefined);
  assert.equal(web.checks, undefined);
  assert.deepEqual(worker.checks, { queue: { type: 'tcp', port: 9100, interval: '20s', timeout: '3s' } });
  assert.deepEqual(worker.mounts, [{ name: 'storefront_data', path: '/var/data' }]);
  assert.equal(web.mounts, undefined);
  assert.equal(config.mounts[0]?.initialSizeGb, 3);
  assert.deepEqual(worker.restart, { policy: 'on-failure', max_retries: 3 });
  assert.equal(web.restart, undefined);
});

test('a private service with a Dockerfile: one app group, defaults filled in', () => {
  const { config } = parseFlyToml(fixture('private-flycast.toml'));
  assert.equal(config.build.dockerfile, 'Dockerfile');
  assert.equal(config.deploy.strategy, 'rolling');
  assert.equal(config.deploy.maxUnavailable, 0.33);
  const configs = machineConfigs(config, 'built:1');
  assert.deepEqual([...configs.keys()], ['app']);
  const app = configs.get('app');
  assert.equal(app?.init, undefined, 'the image runs its own command');
  assert.deepEqual(app?.guest, { cpu_kind: 'shared', cpus: 1, memory_mb: 256 });
  assert.equal(app?.services?.[0]?.autostop, 'stop');
  assert.equal(app?.services?.[0]?.internal_port, 8081);
  assert.deepEqual(app?.services?.[0]?.ports?.[0], { port: 80, handlers: ['http'], force_https: false });
});

test('[[services]] by hand: port ranges, tcp and http checks, statics, experimental cmd, unknown sections', () => {
  const { config, warnings } = parseFlyToml(fixture('services.toml'));
  const app = machineConfigs(config, 'gw:1').get('app');
  assert.ok(app);
  assert.deepEqual(app.services?.[0], {
    protocol: 'tcp',
    internal_port: 5432,
    ports: [{ start_port: 15432, end_port: 15433 }],
    autostop: 'stop',
    autostart: true,
    // A bare number is milliseconds, as flyctl reads it.
    checks: [{ type: 'tcp', interval: '5s', timeout: '2s' }],
  });
  assert.deepEqual(app.services?.[1]?.checks, [
    {
      type: 'http',
      method: 'GET',
      path: '/ready',
      protocol: 'http',
      headers: [{ name: 'X-Probe', values: ['hangar'] }],
    },
  ]);
  assert.deepEqual(app.services?.[1]?.autostop, 'off');
  assert.deepEqual(app.statics, [{ guest_path: '/srv/public', url_prefix: '/static' }]);
  assert.deepEqual(app.init, { cmd: ['/bin/gateway', '--serve'] });
  assert.deepEqual(warnings, ['fly.toml line 37: some_future_section: not used by Hangar, ignored']);
});

test('errors name the line and the key', () => {
  const cases: Array<[string, RegExp]> = [
    [
      'app = "x"\n[http_service]\n  internal_port = "eighty"\n',
      /^fly\.toml line 3: http_service\.internal_port: must be a whole number between 1 and 65535, got "eighty"$/,
    ],
    [
      'app = "x"\n\n[http_service]\nauto_stop_machines = "sometimes"\n',
      /^fly\.toml line 4: http_service\.auto_stop_machines: must be "off", "stop" or "suspend"/,
    ],
    [
      '[deploy]\nstrategy = "yolo"\n',
      /^fly\.toml line 2: deploy\.strategy: must be one of rolling, immediate, canary, bluegreen, got "yolo"$/,
    ],
    [
      '[deploy]\nmax_unavailable = 1.5\n',
      /^fly\.toml line 2: deploy\.max_unavailable: must be a whole number of machines/,
    ],
    ['kill_timeout = "10m"\n', /^fly\.toml line 1: kill_timeout: must be at most 300s/],
    ['kill_signal = "SIGWHAT"\n', /^fly\.toml line 1: kill_signal: must be one of/],
    [
      '[env]\nA = "1"\nFLY_REGION = "x"\n',
      /^fly\.toml line 3: env\.FLY_REGION: names starting with FLY_ are reserved/,
    ],
    [
      '[processes]\nweb = "a"\n\n[[vm]]\nmemory = "1gb"\nprocesses = ["wrker"]\n',
      /^fly\.toml line 6: vm\[0\]\.processes: names process group "wrker", which \[processes\] does not define$/,
    ],
    [
      '[[mounts]]\nsource = "data"\ndestination = "/"\n',
      /^fly\.toml line 3: mounts\[0\]\.destination: must be an absolute path other than \/$/,
    ],
    [
      '[[mounts]]\nsource = "data"\ndestination = "/data"\n\n[deploy]\nstrategy = "canary"\n',
      /^fly\.toml line 6: deploy\.strategy: "canary" cannot be used with \[\[mounts\]\]/,
    ],
    ['[checks.db]\nport = 5432\n', /^fly\.toml line 1: checks\.db\.type: is required/],
    [
      '[[services]]\ninternal_port = 80\n[[services.ports]]\nport = 80\nhandlers = ["gopher"]\n',
      /^fly\.toml line 5: services\[0\]\.ports\[0\]\.handlers: unknown handler "gopher"$/,
    ],
    ['[[vm]]\nmemory = "lots"\n', /^fly\.toml line 2: vm\[0\]\.memory: must be a size such as "512mb"/],
    [
      '[http_service]\n  [[http_service.checks]]\n  interval = "soon"\n',
      /^fly\.toml line 3: http_service\.checks\[0\]\.interval: must be a duration/,
    ],
    [
      '[processes]\nweb = "/bin/web \'unclosed"\n',
      /^fly\.toml line 2: processes\.web: has an unclosed quote$/,
    ],
    ['app = "Bad_Name"\n', /^fly\.toml line 1: app: is not valid: "Bad_Name"$/],
  ];
  for (const [text, expected] of cases) {
    const err = failure(text);
    assert.match(err.message, expected, text);
  }
  // A hint comes with the errors that have an obvious fix.
  assert.match(failure('[http_service]\nauto_stop_machines = "on"\n').hint ?? '', /true and false/);
});

test('TOML syntax errors name their line', () => {
  const err = failure('app = "x"\n[http_service]\ninternal_port = = 8080\n');
  assert.equal(err.lineNumber, 3);
  assert.match(err.message, /^fly\.toml line 3: not valid TOML: /);
  const dupe = failure('app = "x"\napp = "y"\n');
  assert.equal(dupe.lineNumber, 2);
});

test('helpers: command splitting, durations and sizes', () => {
  assert.deepEqual(splitCommand(`/bin/sh -c "echo 'hi there'" a\\ b`), [
    '/bin/sh',
    '-c',
    "echo 'hi there'",
    'a b',
  ]);
  assert.equal(splitCommand('"open'), undefined);
  assert.equal(parseDurationMs('1m30s'), 90_000);
  assert.equal(parseDurationMs('250ms'), 250);
  assert.equal(parseDurationMs(5, 1000), 5000);
  assert.equal(parseDurationMs('5 seconds'), undefined);
  assert.equal(parseSizeMb('1gb', 'mb'), 1024);
  assert.equal(parseSizeMb('512MB', 'gb'), 512);
  assert.equal(parseSizeMb(2, 'gb'), 2048);
});

test('autostop without autostart is warned about (machines would stay down)', () => {
  const { warnings } = parseFlyToml(
    'app = "x"\n[http_service]\ninternal_port = 8080\nauto_stop_machines = "stop"\nauto_start_machines = false\n',
  );
  assert.deepEqual(warnings, [
    'fly.toml line 5: http_service.auto_start_machines: false while auto_stop_machines is on: machines stopped when idle will not start again on the next request',
  ]);
});

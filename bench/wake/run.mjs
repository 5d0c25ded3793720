#!/usr/bin/env node
// First-request latency through hangard's proxy for a suspended and for a stopped machine (the proxy
// wakes it and holds the request until it is ready), next to the floor measured in the same run: the same
// image's container resumed with the bare OCI runtime (`resume` of a paused container) and run from a
// prepared bundle (`run -d`) to its first answer, without hangard.
//
//   node bench/wake/run.mjs [--runs 20] [--json]
//
// Needs root and what hangard needs (crun or runc, umoci, skopeo, docker-registry, tini, busybox-static,
// iproute2, nftables). See bench/wake/README.md for the method and what each figure means.
import { request } from 'node:http';
import { cpus, loadavg } from 'node:os';
import {
  enterSandbox,
  exitUnlessRoot,
  MachineHost,
  now,
  record,
  summarizeAll,
} from '../lib/machine-host.mjs';
import { daemonKind, freePort, parseFlags, positive, serverCode, tableLines } from '../lib/server.mjs';

const APP = 'wake';
const TARGET_SUSPENDED = 1.5;
const TARGET_STOPPED = 2;

const HELP = `Usage: node bench/wake/run.mjs [options]   (as root)

  --runs N             wakes of each kind (from suspended, from stopped), each next to one floor sample
                       of its kind (default 20; one more unrecorded warm-up cycle runs first)
  --probe-timeout SEC  give up on a first answer after SEC seconds (default 10)
  --daemon KIND        auto | dist | tsx (default auto: dist when it is built and newer than src)
  --json               print one JSON document (figures, verdicts, samples) instead of the table
  -h, --help           show this help
`;

const flags = parseFlags(
  {
    runs: { type: 'string', default: '20' },
    'probe-timeout': { type: 'string', default: '10' },
    daemon: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
  },
  HELP,
);
const options = {
  runs: Math.floor(positive('runs', flags.runs)),
  probeTimeoutMs: positive('probe-timeout', flags['probe-timeout']) * 1000,
  daemon: daemonKind(flags.daemon),
  json: flags.json,
};
exitUnlessRoot();

// Everything from here on runs in the bench's own network and mount namespaces (machine-host.mjs).
await enterSandbox();
const host = new MachineHost({ name: 'wake', quiet: options.json });

/**
 * One GET through the proxy on a new connection; resolves when the whole answer is in, with the time
 * from the request's start, its status and its `fly-wake` header.
 */
function proxyGet(proxyPort, timeoutMs) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const req = request(
      {
        host: '127.0.0.1',
        port: proxyPort,
        path: '/',
        headers: { host: `${APP}.hangar.localhost` },
        agent: false,
      },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            ms: now() - t0,
            status: res.statusCode,
            wake: res.headers['fly-wake'],
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(timeoutMs, () =>
      req.destroy(new Error(`no answer through the proxy within ${timeoutMs} ms`)),
    );
    req.on('error', reject);
    req.end();
  });
}

/** `from=stopped;start=1;boot=40;ready=3;first_byte=1` → numbers. */
function parseWake(header) {
  const out = {};
  for (const part of String(header ?? '').split(';')) {
    const [key, value] = part.split('=');
    if (key && value !== undefined && key !== 'from') out[key] = Number(value);
  }
  return out;
}

async function main() {
  host.preflight();
  const code = serverCode(options.daemon);
  const machineInfo = `${cpus().length}× ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}`;
  host.log(`bench: ${machineInfo}; ${options.runs} wakes of each kind, data in ${host.tempDir}`);
  const choice = await host.detectRuntime(code);
  const runtime = `${choice.binary}${choice.hideUnifiedCgroup ? ' (cgroup2 hidden in a private mount namespace)' : ''}`;
  const proxyPort = await freePort();
  const { registry } = await host.startHangard(code, {
    proxyPort,
    // The bench stops and suspends the machine itself; autostop never runs during the run.
    proxy: { idleStopMs: 3_600_000, autostopIntervalMs: 3_600_000, wakeTimeoutMs: 30_000 },
  });
  host.log(`bench: hangard (${code.kind}) API on :${host.target.port}, proxy on :${proxyPort}; ${runtime}`);
  await host.createApp(APP);
  await host.api('POST', `/v1/apps/${APP}/ip_assignments`, { type: 'shared_v4' });
  await host.buildImage();
  const image = await host.pushImage(registry, APP);

  const base = `/v1/apps/${APP}/machines`;
  const machine = await host.api('POST', base, {
    name: 'wake-bench',
    config: {
      image,
      guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 128 },
      restart: { policy: 'no' },
      stop_config: { signal: 'SIGTERM', timeout: '10s' },
      services: [
        {
          protocol: 'tcp',
          internal_port: 8080,
          ports: [{ port: 80, handlers: ['http'] }],
          autostart: true,
          autostop: 'off',
        },
      ],
    },
  });
  const one = `${base}/${machine.id}`;
  await host.api('GET', `${one}/wait?state=started&timeout=60`);
  const first = await proxyGet(proxyPort, options.probeTimeoutMs);
  if (first.status !== 200)
    throw new Error(`the proxy answered ${first.status}: ${first.body.slice(0, 300)}`);

  // The floor: the same image, unpacked with the machine's mapping, in a namespace of its own.
  await host.setupFloor(host.machineMapping(machine.id));
  const floor = await host.prepareFloor('w');
  const helper = await host.startHelper(floor.netns);
  await host.floorRun(floor);
  await host.probeFirstAnswer(helper, 'floor after run', options.probeTimeoutMs);

  const hangard = {};
  const bare = {};
  const expectState = async (state) => {
    const now = await host.api('GET', one);
    if (now.state !== state) throw new Error(`machine ${machine.id} is ${now.state}, not ${state}`);
  };

  const hangardCycle = async (samples) => {
    // A request to the started machine, on a new connection: the proxy hop alone.
    let answer = await proxyGet(proxyPort, options.probeTimeoutMs);
    if (answer.status !== 200) throw new Error(`started: the proxy answered ${answer.status}`);
    record(samples, 'started', answer.ms);

    await host.api('POST', `${one}/suspend`);
    await expectState('suspended');
    answer = await proxyGet(proxyPort, options.probeTimeoutMs + 30_000);
    if (answer.status !== 200)
      throw new Error(`suspended: the proxy answered ${answer.status}: ${answer.body}`);
    if (!answer.wake?.startsWith('from=suspended'))
      throw new Error(`no wake from suspended (${answer.wake})`);
    record(samples, 'suspended', answer.ms);
    for (const [k, v] of Object.entries(parseWake(answer.wake))) record(samples, `suspended.${k}`, v);

    await host.api('POST', `${one}/stop`, {});
    await expectState('stopped');
    answer = await proxyGet(proxyPort, options.probeTimeoutMs + 30_000);
    if (answer.status !== 200)
      throw new Error(`stopped: the proxy answered ${answer.status}: ${answer.body}`);
    if (!answer.wake?.startsWith('from=stopped')) throw new Error(`no wake from stopped (${answer.wake})`);
    record(samples, 'stopped', answer.ms);
    for (const [k, v] of Object.entries(parseWake(answer.wake))) record(samples, `stopped.${k}`, v);
  };

  const floorCycle = async (samples) => {
    await host.oci(['pause', floor.id]);
    let probe = host.probeFirstAnswer(helper, 'floor after resume', options.probeTimeoutMs);
    let t = now();
    await host.oci(['resume', floor.id]);
    record(samples, 'suspended', (await probe).at - t);

    await host.floorStop(floor);
    probe = host.probeFirstAnswer(helper, 'floor after run', options.probeTimeoutMs);
    t = now();
    await host.floorRun(floor);
    record(samples, 'stopped', (await probe).at - t);
  };

  // Warm-up, not recorded: both sides' code paths, page cache and the proxy's first wake.
  await hangardCycle({});
  await floorCycle({});
  for (let i = 0; i < options.runs; i++) {
    await hangardCycle(hangard);
    await floorCycle(bare);
    if ((i + 1) % 5 === 0 || i + 1 === options.runs) host.log(`bench: ${i + 1}/${options.runs} cycles`);
  }
  await host.stopHelper(helper);
  await host.floorStop(floor);
  await host.removeFloor(floor);

  const h = summarizeAll(hangard);
  const f = summarizeAll(bare);
  const verdict = (kind, target) => {
    const ratio = h[kind].median / f[kind].median;
    return { rule: `median ≤ ${target}× the floor's`, ratio, pass: ratio <= target };
  };
  const report = {
    host: machineInfo,
    runtime,
    daemon: code.kind,
    runs: options.runs,
    load: loadavg(),
    hangard: h,
    floor: f,
    targets: {
      suspended: verdict('suspended', TARGET_SUSPENDED),
      stopped: verdict('stopped', TARGET_STOPPED),
    },
    samples: { hangard, floor: bare },
  };
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(table(report));
}

function table({ hangard: h, floor: f, targets, runs, runtime, daemon, load }) {
  const ms = (v) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(1));
  const rows = [
    [
      'wake from suspended → answer',
      'suspended',
      'resume → first answer',
      `≤${TARGET_SUSPENDED}×`,
      targets.suspended,
    ],
    ['  fly-wake start (queue)', 'suspended.start'],
    ['  fly-wake boot (resume)', 'suspended.boot'],
    ['  fly-wake ready', 'suspended.ready'],
    ['  fly-wake first_byte', 'suspended.first_byte'],
    [
      'wake from stopped → answer',
      'stopped',
      'run -d (prepared bundle) → first answer',
      `≤${TARGET_STOPPED}×`,
      targets.stopped,
    ],
    ['  fly-wake start (queue)', 'stopped.start'],
    ['  fly-wake boot (start)', 'stopped.boot'],
    ['  fly-wake ready', 'stopped.ready'],
    ['  fly-wake first_byte', 'stopped.first_byte'],
    ['started machine → answer (new conn)', 'started'],
  ];
  const header = [
    "through hangard's proxy",
    'median',
    'p90',
    'min',
    'floor: the bare runtime',
    'median',
    'p90',
    'min',
    'ratio',
    'target',
  ];
  const lines = rows.map(([name, key, floorName = '', target = '', verdict]) => {
    const a = h[key];
    const b = floorName ? f[key] : undefined;
    return [
      name,
      ms(a?.median),
      ms(a?.p90),
      ms(a?.min),
      floorName,
      ms(b?.median),
      ms(b?.p90),
      ms(b?.min),
      b ? `${(a.median / b.median).toFixed(2)}×` : '',
      verdict ? `${target}: ${verdict.pass ? 'PASS' : 'MISS'}` : '',
    ];
  });
  return [
    '',
    `hangard (${daemon}) wakes through its proxy vs the bare runtime, ${runtime}; ms, ${runs} wakes of each kind; load ${load.map((l) => l.toFixed(1)).join(' ')}`,
    '',
    ...tableLines(header, lines, new Set([0, 4, 9])),
    '',
    `target wake from suspended within ${TARGET_SUSPENDED}× the bare resume: ${targets.suspended.ratio.toFixed(2)}× → ${targets.suspended.pass ? 'PASS' : 'MISS'}`,
    `target wake from stopped within ${TARGET_STOPPED}× the bare run from a prepared bundle: ${targets.stopped.ratio.toFixed(2)}× → ${targets.stopped.pass ? 'PASS' : 'MISS'}`,
    'hangard is timed from the request sent to the answer read (a new connection to the proxy each time);',
    'the floor from the runtime command spawned to the first 200 seen from inside the namespace (polled every ~1 ms).',
    '',
  ].join('\n');
}

await host.runMain(main);

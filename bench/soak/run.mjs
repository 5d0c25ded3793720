#!/usr/bin/env node
// A soak of the proxy with autostop and autostart: many apps, each with one machine that autostop stops
// or suspends after a short idle period, and traffic in bursts with pauses long enough for autostop to
// take the machines down, so that machines cycle between asleep and awake for minutes. It reports every
// request the proxy accepted that failed (none should), the documented 503s with Retry-After (caps) on
// their own, the wake and autostop cycles, and hangard's memory over time.
//
//   node bench/soak/run.mjs [--minutes 3] [--apps 12] [--json]
//
// Needs root and what hangard needs. See bench/soak/README.md.
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { enterSandbox, exitUnlessRoot, MachineHost, now, sleep, summarize } from '../lib/machine-host.mjs';
import { daemonKind, freePort, parseFlags, positive, serverCode } from '../lib/server.mjs';

const IDLE_TIMEOUT_SEC = 2;
const AUTOSTOP_INTERVAL_MS = 500;
const REQUEST_TIMEOUT_MS = 65_000;
/** Post-collection heap in the last third within this share of the first third: no growth. */
const HEAP_GROWTH_LIMIT = 0.1;

const HELP = `Usage: node bench/soak/run.mjs [options]   (as root)

  --minutes M          how long the traffic runs (default 3; 0.25 is the smoke test's tiny mode)
  --apps N             apps, one machine each; half autostop to stopped, half to suspended (default 12)
  --parallel N         requests in flight per app during a burst (default 3)
  --daemon KIND        auto | dist | tsx (default auto: dist when it is built and newer than src)
  --json               print one JSON document instead of the table
  -h, --help           show this help
`;

const flags = parseFlags(
  {
    minutes: { type: 'string', default: '3' },
    apps: { type: 'string', default: '12' },
    parallel: { type: 'string', default: '3' },
    daemon: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
  },
  HELP,
);
const options = {
  durationMs: positive('minutes', flags.minutes, { max: 24 * 60 }) * 60_000,
  apps: Math.floor(positive('apps', flags.apps, { max: 100, integer: true })),
  parallel: Math.floor(positive('parallel', flags.parallel, { max: 64, integer: true })),
  daemon: daemonKind(flags.daemon),
  json: flags.json,
};
exitUnlessRoot();

// Everything from here on runs in the bench's own network and mount namespaces (machine-host.mjs).
await enterSandbox();
const host = new MachineHost({ name: 'soak', quiet: options.json });
const random = (min, max) => min + Math.random() * (max - min);

/** What happened to the requests, by outcome. */
const tally = {
  sent: 0,
  ok: 0,
  /** 503 with Retry-After: a documented cap (hard limit, held requests) was hit. */
  capped: 0,
  failed: 0,
  /** The proxy's listener refused the connection: never accepted. */
  notAccepted: 0,
  failures: /** @type {Record<string, number>} */ ({}),
  wakes: /** @type {Record<string, number[]>} */ ({}),
  latency: /** @type {number[]} */ ([]),
};

function fail(kind) {
  tally.failed++;
  tally.failures[kind] = (tally.failures[kind] ?? 0) + 1;
}

function get(proxyPort, app, agent) {
  return new Promise((resolve) => {
    const t0 = now();
    tally.sent++;
    let connected = false;
    const req = request(
      { host: '127.0.0.1', port: proxyPort, path: '/', headers: { host: `${app}.hangar.localhost` }, agent },
      (res) => {
        res.resume();
        res.on('error', () => {
          fail('response reset');
          resolve();
        });
        res.on('end', () => {
          const ms = now() - t0;
          const status = res.statusCode ?? 0;
          if (status === 200) {
            tally.ok++;
            tally.latency.push(ms);
            const wake = /^from=(\w+);/.exec(String(res.headers['fly-wake'] ?? ''));
            if (wake) {
              tally.wakes[wake[1]] ??= [];
              tally.wakes[wake[1]].push(ms);
            }
          } else if (status === 503 && res.headers['retry-after'] !== undefined) {
            tally.capped++;
            tally.failures[`503 ${res.headers['x-hangar-proxy-error'] ?? ''} (Retry-After)`] =
              (tally.failures[`503 ${res.headers['x-hangar-proxy-error'] ?? ''} (Retry-After)`] ?? 0) + 1;
          } else {
            fail(`${status} ${res.headers['x-hangar-proxy-error'] ?? ''}`.trim());
          }
          resolve();
        });
      },
    );
    req.on('socket', (socket) => {
      if (!socket.connecting) connected = true;
      else socket.once('connect', () => (connected = true));
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('timeout')));
    req.on('error', (error) => {
      if (!connected && /** @type {NodeJS.ErrnoException} */ (error).code === 'ECONNREFUSED')
        tally.notAccepted++;
      else fail(/** @type {NodeJS.ErrnoException} */ (error).code ?? error.message);
      resolve();
    });
    req.end();
  });
}

/**
 * One app's traffic until `end`: bursts of requests (`parallel` at a time, keep-alive within the burst),
 * then a pause: mostly long enough for autostop to take the machine down (so the next burst wakes it),
 * sometimes around the idle period (a request may race the autostop), sometimes short (it stays up).
 */
async function appTraffic(proxyPort, app, end) {
  while (Date.now() < end && !host.aborted) {
    const agent = new Agent({ keepAlive: true, maxSockets: options.parallel });
    const rounds = Math.round(random(3, 12));
    for (let i = 0; i < rounds && Date.now() < end; i++) {
      await Promise.all(Array.from({ length: options.parallel }, () => get(proxyPort, app, agent)));
      await sleep(random(10, 150));
    }
    agent.destroy();
    const roll = Math.random();
    const idleMs = IDLE_TIMEOUT_SEC * 1000;
    const pause =
      roll < 0.7
        ? random(idleMs + 2 * AUTOSTOP_INTERVAL_MS + 500, 2 * idleMs + 3000)
        : roll < 0.85
          ? random(idleMs - 300, idleMs + AUTOSTOP_INTERVAL_MS + 300)
          : random(100, 1000);
    await sleep(Math.min(pause, Math.max(0, end - Date.now())));
  }
}

/** hangard's /metrics, summed by metric name and one label. */
async function metrics(apiPort) {
  const text = await fetch(`http://127.0.0.1:${apiPort}/metrics`).then((r) => r.text());
  const sum = (name, label) => {
    const out = {};
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`)) continue;
      const value = Number(line.slice(line.lastIndexOf(' ') + 1));
      const key = new RegExp(`${label}="([^"]*)"`).exec(line)?.[1] ?? '';
      out[key] = (out[key] ?? 0) + value;
    }
    return out;
  };
  return {
    wakes: sum('hangar_proxy_wakes_total', 'from'),
    wakeFailures: sum('hangar_proxy_wake_failures_total', 'app'),
    autostops: sum('hangar_proxy_autostops_total', 'mode'),
  };
}

/** Least-squares slope of y over x. */
function slope(points) {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  const num = points.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0);
  const den = points.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
  return den === 0 ? 0 : num / den;
}

async function main() {
  host.preflight();
  const code = serverCode(options.daemon);
  const machineInfo = `${cpus().length}× ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}`;
  host.log(
    `bench: ${machineInfo}; ${options.apps} apps for ${(options.durationMs / 60_000).toFixed(2)} min, data in ${host.tempDir}`,
  );
  await host.detectRuntime(code);
  const memoryFile = join(host.tempDir, 'memory.jsonl');
  const sampleMs = options.durationMs < 120_000 ? 2_000 : 10_000;
  code.nodeArgs = [
    ...code.nodeArgs,
    '--expose-gc',
    '--import',
    fileURLToPath(new URL('./memory-probe.mjs', import.meta.url)),
  ];
  process.env.HANGAR_BENCH_MEMORY_FILE = memoryFile;
  process.env.HANGAR_BENCH_MEMORY_INTERVAL_MS = String(sampleMs);
  const proxyPort = await freePort();
  const { registry } = await host.startHangard(code, {
    proxyPort,
    proxy: { autostopIntervalMs: AUTOSTOP_INTERVAL_MS, wakeTimeoutMs: 60_000 },
    // Many small machines on a 2-core host: admission would refuse them at the defaults.
    extra: { capacity: { memoryOvercommit: 64, cpuOvercommit: 64 } },
  });
  host.log(`bench: hangard (${code.kind}) API on :${host.target.port}, proxy on :${proxyPort}`);
  await host.buildImage();
  const apps = [];
  for (let i = 0; i < options.apps; i++) {
    const app = `soak-${i}`;
    await host.createApp(app);
    await host.api('POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    const image = await host.pushImage(registry, app);
    const machine = await host.api('POST', `/v1/apps/${app}/machines`, {
      name: `${app}-m`,
      config: {
        image,
        guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 128 },
        restart: { policy: 'no' },
        stop_config: { signal: 'SIGTERM', timeout: '5s' },
        services: [
          {
            protocol: 'tcp',
            internal_port: 8080,
            ports: [{ port: 80, handlers: ['http'] }],
            autostart: true,
            autostop: i % 2 === 0 ? 'stop' : 'suspend',
            idle_timeout: `${IDLE_TIMEOUT_SEC}s`,
            concurrency: { type: 'requests', soft_limit: 20, hard_limit: 40 },
          },
        ],
      },
    });
    await host.api('GET', `/v1/apps/${app}/machines/${machine.id}/wait?state=started&timeout=60`);
    apps.push(app);
  }
  host.log(`bench: ${apps.length} apps up; traffic for ${(options.durationMs / 1000).toFixed(0)} s`);
  const startedAt = Date.now();
  const end = startedAt + options.durationMs;
  const progress = setInterval(
    () =>
      host.log(
        `bench: ${((Date.now() - startedAt) / 1000).toFixed(0)} s: ${tally.sent} sent, ${tally.ok} ok, ${tally.failed} failed, ${tally.capped} capped`,
      ),
    30_000,
  );
  try {
    await Promise.all(apps.map((app) => appTraffic(proxyPort, app, end)));
  } finally {
    clearInterval(progress);
  }
  const counted = await metrics(host.target.port);
  // One more memory sample after the traffic, then read them all.
  await sleep(sampleMs + 500);
  const samples = readFileSync(memoryFile, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line))
    .filter((s) => s.at >= startedAt);
  const mb = (bytes) => bytes / 1024 / 1024;
  const third = Math.max(1, Math.floor(samples.length / 3));
  const mean = (list, field) => list.reduce((a, s) => a + mb(s[field]), 0) / Math.max(1, list.length);
  const first = samples.slice(0, third);
  const last = samples.slice(-third);
  const memory = {
    samples: samples.length,
    everyMs: sampleMs,
    heapFirstMb: mean(first, 'heapUsed'),
    heapLastMb: mean(last, 'heapUsed'),
    rssFirstMb: mean(first, 'rss'),
    rssLastMb: mean(last, 'rss'),
    heapSlopeMbPerMin: slope(samples.map((s) => [(s.at - startedAt) / 60_000, mb(s.heapUsed)])),
    rssSlopeMbPerMin: slope(samples.map((s) => [(s.at - startedAt) / 60_000, mb(s.rss)])),
  };
  const heapGrowth = memory.heapLastMb / memory.heapFirstMb - 1;
  const report = {
    host: machineInfo,
    daemon: code.kind,
    load: loadavg(),
    minutes: options.durationMs / 60_000,
    apps: options.apps,
    requests: {
      sent: tally.sent,
      ok: tally.ok,
      failed: tally.failed,
      capped: tally.capped,
      notAccepted: tally.notAccepted,
      byOutcome: tally.failures,
    },
    latency: summarize(tally.latency),
    wakeLatency: Object.fromEntries(Object.entries(tally.wakes).map(([k, v]) => [k, summarize(v)])),
    cycles: counted,
    memory,
    verdicts: {
      noFailures: tally.failed === 0,
      noHeapGrowth: samples.length >= 3 && heapGrowth <= HEAP_GROWTH_LIMIT,
      heapGrowth,
    },
    memorySamples: samples,
  };
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(table(report));
}

function table(r) {
  const ms = (v) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(1));
  const total = (o) => Object.values(o).reduce((a, b) => a + b, 0);
  const rows = [
    ['requests sent', String(r.requests.sent)],
    ['  answered 200', String(r.requests.ok)],
    ['  failed (accepted by the proxy, then 5xx/4xx, reset or timeout)', String(r.requests.failed)],
    ['  503 with Retry-After (a documented cap was hit)', String(r.requests.capped)],
    ['  not accepted (the proxy refused the connection)', String(r.requests.notAccepted)],
    ...Object.entries(r.requests.byOutcome).map(([k, v]) => [`    ${k}`, String(v)]),
    [
      'latency of 200s p50 / p99 / max (ms)',
      `${ms(r.latency?.median)} / ${ms(r.latency?.p99)} / ${ms(r.latency?.max)}`,
    ],
    ...Object.entries(r.wakeLatency).map(([k, s]) => [
      `  requests held through a wake from ${k}: n, p50 / p99 / max (ms)`,
      `${s.n}, ${ms(s.median)} / ${ms(s.p99)} / ${ms(s.max)}`,
    ]),
    ['wakes (hangar_proxy_wakes_total)', `${total(r.cycles.wakes)} ${JSON.stringify(r.cycles.wakes)}`],
    ['wake failures', String(total(r.cycles.wakeFailures))],
    [
      'autostops (hangar_proxy_autostops_total)',
      `${total(r.cycles.autostops)} ${JSON.stringify(r.cycles.autostops)}`,
    ],
    [
      `hangard heap after full GC, first / last third (MB; ${r.memory.samples} samples)`,
      `${ms(r.memory.heapFirstMb)} / ${ms(r.memory.heapLastMb)} (${(r.verdicts.heapGrowth * 100).toFixed(1)}%, ${r.memory.heapSlopeMbPerMin.toFixed(2)} MB/min)`,
    ],
    [
      'hangard RSS, first / last third (MB)',
      `${ms(r.memory.rssFirstMb)} / ${ms(r.memory.rssLastMb)} (${r.memory.rssSlopeMbPerMin.toFixed(2)} MB/min)`,
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return [
    '',
    `soak: ${r.apps} apps × 1 machine (half autostop to stopped, half to suspended, idle ${IDLE_TIMEOUT_SEC} s), ${r.minutes.toFixed(2)} min, hangard (${r.daemon}); load ${r.load.map((l) => l.toFixed(1)).join(' ')}`,
    '',
    ...rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`),
    '',
    `verdict: failed requests among those accepted: ${r.requests.failed} → ${r.verdicts.noFailures ? 'PASS' : 'FAIL'}`,
    `verdict: heap growth last third vs first ≤ ${HEAP_GROWTH_LIMIT * 100}%: ${(r.verdicts.heapGrowth * 100).toFixed(1)}% → ${r.verdicts.noHeapGrowth ? 'PASS' : 'MISS'}`,
    '',
  ].join('\n');
}

await host.runMain(main);

#!/usr/bin/env node
// The proxy hop: the same keep-alive load (1 and 64 connections, wrk) straight to a machine, through
// hangard's proxy, and through HAProxy (Debian's package) pointed at the same machine's address and port,
// in the same run; added p50/p99 latency (proxy minus direct) and requests per second of both proxies,
// and their ratio.
//
//   node bench/proxy/run.mjs [--duration 5] [--rounds 3] [--json]
//
// Needs root, wrk and haproxy (scripts/install.sh installs them), and what hangard needs. See
// bench/proxy/README.md for the method and what each figure means.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  enterSandbox,
  exitUnlessRoot,
  MachineHost,
  runChecked,
  sleep,
  summarize,
} from '../lib/machine-host.mjs';
import { daemonKind, freePort, parseFlags, positive, serverCode, tableLines } from '../lib/server.mjs';

const APP = 'proxy';
const HOST_HEADER = `${APP}.hangar.localhost`;
const TARGET_ADDED_P50 = 2;
const TARGET_THROUGHPUT = 0.5;
const ORIGIN_PORT = 8080;
/** The CPU the proxy under test is pinned to, and the one wrk runs on. */
const PROXY_CPU = 1;
const LOAD_CPU = 0;

const HELP = `Usage: node bench/proxy/run.mjs [options]   (as root)

  --duration SEC       seconds of load per measurement (whole seconds, default 5)
  --rounds N           rounds; each measures direct, hangard and HAProxy at each connection count, and the
                       figures are the medians over rounds (default 3)
  --connections LIST   connection counts (default 1,64)
  --cpu-prof           write a CPU profile of hangard during the hangard runs (node --cpu-prof; the file's
                       path is printed) and print its 15 hottest functions
  --daemon KIND        auto | dist | tsx (default auto: dist when it is built and newer than src)
  --json               print one JSON document instead of the table
  -h, --help           show this help
`;

const flags = parseFlags(
  {
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '1,64' },
    'cpu-prof': { type: 'boolean', default: false },
    daemon: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
  },
  HELP,
);
const options = {
  durationSec: Math.max(1, Math.round(positive('duration', flags.duration))),
  rounds: Math.floor(positive('rounds', flags.rounds)),
  connections: flags.connections
    .split(',')
    .map((c) => Math.floor(positive('connections', c, { integer: true }))),
  cpuProf: flags['cpu-prof'],
  daemon: daemonKind(flags.daemon),
  json: flags.json,
};
exitUnlessRoot();

// Everything from here on runs in the bench's own network and mount namespaces (machine-host.mjs).
await enterSandbox();
const host = new MachineHost({ name: 'proxy', quiet: options.json });

/** The origin: HAProxy itself inside the machine, answering `ok` from its own config, keep-alive, 1 thread. */
const ORIGIN_CONFIG = `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend origin
  bind :::${ORIGIN_PORT} v4v6
  http-request return status 200 content-type text/plain string "ok"
`;

/** The binary and every library it loads, at the same paths, so that it runs in the image. */
async function copyWithLibraries(rootfs, binary) {
  const ldd = await runChecked('ldd', [binary]);
  const files = [binary];
  for (const line of ldd.split('\n')) {
    const match = /(\/\S+) \(0x/.exec(line);
    if (match) files.push(match[1]);
  }
  for (const file of files) {
    const target = join(rootfs, file);
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(file, target);
  }
}

/** wrk's `--latency` output: requests/s and the 50/90/99th percentiles in µs. */
function parseWrk(text) {
  const micros = (value) => {
    const m = /^([\d.]+)(us|ms|s)$/.exec(value);
    if (!m) return Number.NaN;
    return Number(m[1]) * { us: 1, ms: 1000, s: 1_000_000 }[m[2]];
  };
  const percentile = (p) => micros(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(text)?.[1] ?? '');
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const socketErrors = /Socket errors: (.*)$/m.exec(text);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? Number.NaN),
    p50: percentile(50),
    p90: percentile(90),
    p99: percentile(99),
    requests: Number(/(\d+) requests in/.exec(text)?.[1] ?? 0),
    non2xx: errors ? Number(errors[1]) : 0,
    socketErrors: socketErrors?.[1] ?? '',
  };
}

async function wrk(url, connections, headers = []) {
  const args = ['-c', LOAD_CPU, 'wrk', '-t1', `-c${connections}`, `-d${options.durationSec}s`, '--latency'];
  for (const header of headers) args.push('-H', header);
  const out = await runChecked('taskset', [...args.map(String), url], {
    timeoutMs: (options.durationSec + 30) * 1000,
  });
  const result = parseWrk(out);
  if (!Number.isFinite(result.rps) || result.requests === 0)
    throw new Error(`wrk printed no figures:\n${out}`);
  if (result.non2xx > 0 || result.socketErrors) {
    throw new Error(
      `wrk saw failures against ${url}: ${result.non2xx} non-2xx, socket errors ${result.socketErrors}`,
    );
  }
  return result;
}

async function startHaproxy(upstream) {
  const port = await freePort();
  const dir = join(host.tempDir, 'haproxy');
  mkdirSync(dir, { recursive: true });
  const config = join(dir, 'haproxy.cfg');
  // One thread, keep-alive both ways, upstream connections reused: the configuration that gives HAProxy
  // the same advantages as hangard's pool for `concurrency.type = requests`.
  writeFileSync(
    config,
    `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend bench
  bind 127.0.0.1:${port}
  default_backend machine
backend machine
  server m1 ${upstream.includes(':') ? `[${upstream}]` : upstream}:${ORIGIN_PORT} maxconn 1000
`,
  );
  await runChecked('haproxy', ['-c', '-q', '-f', config]);
  const child = spawn('taskset', ['-c', String(PROXY_CPU), 'haproxy', '-db', '-f', config], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  host.children.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`haproxy exited: ${stderr}`);
    const ok = await fetch(`http://127.0.0.1:${port}/`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { port, child };
    await sleep(25);
  }
  throw new Error(`haproxy did not answer on 127.0.0.1:${port}: ${stderr}`);
}

/** The hottest functions of a .cpuprofile, by self time. */
function hottest(file, count) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const self = new Map();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const dt = profile.timeDeltas;
  const total = dt.reduce((a, b) => a + b, 0);
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    const f = node.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules|packages|node:)/, '$1')}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0));
  });
  return [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, us]) => ({ name, share: us / total }));
}

async function main() {
  host.preflight(['wrk', 'haproxy', 'taskset', 'ldd']);
  const code = serverCode(options.daemon);
  const machineInfo = `${cpus().length}× ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}`;
  host.log(
    `bench: ${machineInfo}; ${options.rounds} rounds of ${options.durationSec} s, data in ${host.tempDir}`,
  );
  await host.detectRuntime(code);
  const proxyPort = await freePort();
  // Outside the run's temp dir, which cleanup removes: the profile is kept for a closer look.
  const profDir = join(tmpdir(), `hangard-proxy-cpu-prof-${process.pid}`);
  if (options.cpuProf) {
    // The profile is written when hangard exits: cleanup stops it with SIGTERM first.
    mkdirSync(profDir, { recursive: true });
    code.nodeArgs = [...code.nodeArgs, '--cpu-prof', '--cpu-prof-dir', profDir];
  }
  const { registry } = await host.startHangard(code, {
    proxyPort,
    proxy: { idleStopMs: 3_600_000, autostopIntervalMs: 3_600_000 },
  });
  // The proxy under test on its own CPU, all its threads: the same placement as HAProxy's.
  await runChecked('taskset', ['-a', '-p', '-c', String(PROXY_CPU), String(host.hangardPid)]);
  host.log(`bench: hangard (${code.kind}) API on :${host.target.port}, proxy on :${proxyPort}`);
  await host.createApp(APP);
  await host.api('POST', `/v1/apps/${APP}/ip_assignments`, { type: 'shared_v4' });
  await host.buildImage({
    cmd: ['/usr/sbin/haproxy', '-db', '-f', '/etc/origin.cfg'],
    prepareRootfs: async (rootfs) => {
      await copyWithLibraries(rootfs, '/usr/sbin/haproxy');
      mkdirSync(join(rootfs, 'etc'), { recursive: true });
      writeFileSync(join(rootfs, 'etc/origin.cfg'), ORIGIN_CONFIG);
    },
  });
  const image = await host.pushImage(registry, APP);
  const machine = await host.api('POST', `/v1/apps/${APP}/machines`, {
    name: 'origin',
    config: {
      image,
      guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 256 },
      restart: { policy: 'no' },
      services: [
        {
          protocol: 'tcp',
          internal_port: ORIGIN_PORT,
          ports: [{ port: 80, handlers: ['http'] }],
          autostart: true,
          autostop: 'off',
          // Pooled keep-alive connections to the machine, and limits far above the load.
          concurrency: { type: 'requests', soft_limit: 1000, hard_limit: 2000 },
        },
      ],
    },
  });
  await host.api('GET', `/v1/apps/${APP}/machines/${machine.id}/wait?state=started&timeout=60`);
  const { private_ip: address } = await host.api('GET', `/v1/apps/${APP}/machines/${machine.id}`);
  const direct = `http://[${address}]:${ORIGIN_PORT}/`;
  for (let i = 0; ; i++) {
    const ok = await fetch(direct).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 400) throw new Error(`the origin in machine ${machine.id} never answered on ${direct}`);
    await sleep(25);
  }
  const haproxy = await startHaproxy(address);
  host.log(`bench: origin machine ${machine.id} at [${address}]:${ORIGIN_PORT}; HAProxy on :${haproxy.port}`);

  const targets = {
    direct: { url: direct, headers: [] },
    hangar: { url: `http://127.0.0.1:${proxyPort}/`, headers: [`Host: ${HOST_HEADER}`] },
    haproxy: { url: `http://127.0.0.1:${haproxy.port}/`, headers: [] },
  };
  // Warm-up: JIT, pools, caches (not recorded).
  for (const target of Object.values(targets)) {
    await wrk(target.url, 8, target.headers).catch((error) => {
      throw new Error(`warm-up: ${error.message}`);
    });
  }
  const runs = {};
  for (let round = 0; round < options.rounds; round++) {
    for (const c of options.connections) {
      for (const [name, target] of Object.entries(targets)) {
        const result = await wrk(target.url, c, target.headers);
        runs[`${name}/${c}`] ??= [];
        runs[`${name}/${c}`].push(result);
      }
    }
    host.log(`bench: round ${round + 1}/${options.rounds} done`);
  }
  const med = (key, field) => summarize(runs[key].map((r) => r[field])).median;
  const figures = {};
  for (const c of options.connections) {
    const row = {};
    for (const name of Object.keys(targets)) {
      row[name] = {
        rps: med(`${name}/${c}`, 'rps'),
        p50: med(`${name}/${c}`, 'p50'),
        p99: med(`${name}/${c}`, 'p99'),
      };
    }
    for (const name of ['hangar', 'haproxy']) {
      row[name].addedP50 = row[name].p50 - row.direct.p50;
      row[name].addedP99 = row[name].p99 - row.direct.p99;
    }
    row.ratio = {
      addedP50: row.hangar.addedP50 / row.haproxy.addedP50,
      addedP99: row.hangar.addedP99 / row.haproxy.addedP99,
      rps: row.hangar.rps / row.haproxy.rps,
    };
    figures[c] = row;
  }
  const latencyC = Math.min(...options.connections);
  const loadC = Math.max(...options.connections);
  const targetsMet = {
    addedP50: {
      rule: `hangard's added p50 at ${latencyC} connection(s) ≤ ${TARGET_ADDED_P50}× HAProxy's`,
      ratio: figures[latencyC].ratio.addedP50,
      pass: figures[latencyC].ratio.addedP50 <= TARGET_ADDED_P50,
    },
    throughput: {
      rule: `hangard's requests/s at ${loadC} connections ≥ ${TARGET_THROUGHPUT}× HAProxy's`,
      ratio: figures[loadC].ratio.rps,
      pass: figures[loadC].ratio.rps >= TARGET_THROUGHPUT,
    },
  };
  const report = {
    host: machineInfo,
    daemon: code.kind,
    load: loadavg(),
    durationSec: options.durationSec,
    rounds: options.rounds,
    figures,
    targets: targetsMet,
    runs,
    profile: undefined,
  };
  if (options.cpuProf) {
    // Stop hangard now (cleanup would anyway) so that it writes its profile.
    await host.cleanup();
    const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (file) {
      const kept = join(profDir, file);
      report.profile = { file: kept, hottest: hottest(kept, 15) };
    }
  }
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(table(report));
}

function table({ figures, targets, daemon, load, durationSec, rounds, profile }) {
  const us = (v) => (Number.isFinite(v) ? v.toFixed(0) : '-');
  const signed = (v) => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toFixed(0)}` : '-');
  // A ratio of added latencies means something only when both proxies added some.
  const ratio = (a, b) => (a > 0 && b > 0 ? `${(a / b).toFixed(2)}×` : '-');
  const header = ['connections', 'path', 'req/s', 'p50 µs', 'p99 µs', 'added p50', 'added p99'];
  const lines = [];
  for (const [c, row] of Object.entries(figures)) {
    for (const name of ['direct', 'hangar', 'haproxy']) {
      const r = row[name];
      lines.push([
        c,
        { direct: 'direct to the machine', hangar: "hangard's proxy", haproxy: 'HAProxy 1 thread' }[name],
        us(r.rps),
        us(r.p50),
        us(r.p99),
        name === 'direct' ? '' : signed(r.addedP50),
        name === 'direct' ? '' : signed(r.addedP99),
      ]);
    }
    lines.push([
      c,
      'hangard / HAProxy',
      `${row.ratio.rps.toFixed(2)}×`,
      '',
      '',
      ratio(row.hangar.addedP50, row.haproxy.addedP50),
      ratio(row.hangar.addedP99, row.haproxy.addedP99),
    ]);
  }
  const verdict = (t) => `${t.rule}: ${t.ratio.toFixed(2)}× → ${t.pass ? 'PASS' : 'MISS'}`;
  const out = [
    '',
    `proxy hop, keep-alive, wrk 1 thread on CPU ${LOAD_CPU}, proxies pinned to CPU ${PROXY_CPU}; hangard (${daemon}); medians of ${rounds} × ${durationSec} s; load ${load.map((l) => l.toFixed(1)).join(' ')}`,
    '',
    ...tableLines(header, lines, new Set([1])),
    '',
    `target ${verdict(targets.addedP50)}`,
    `target ${verdict(targets.throughput)}`,
  ];
  if (profile) {
    out.push('', `hangard's CPU profile (${profile.file}), hottest functions by self time:`);
    for (const { name, share } of profile.hottest)
      out.push(`  ${(share * 100).toFixed(1).padStart(5)}%  ${name}`);
  }
  out.push('');
  return out.join('\n');
}

await host.runMain(main);

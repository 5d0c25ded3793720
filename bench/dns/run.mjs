#!/usr/bin/env node
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { accessSync, chmodSync, constants, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import dnsPacket from 'dns-packet';
// `.internal` AAAA lookups per second and their latency against Hangar's DnsServer, and the same load
// against dnsmasq serving the same names as static records, in the same run.
//
//   node bench/dns/run.mjs [--duration 5] [--max-queries 200000] [--concurrency 64] [--apps 100] [--json]
//
// See bench/dns/README.md for what each figure means.
import { daemonKind, freePort, parseFlags, positive, removeOnExit, serverCode } from '../lib/server.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HERE = fileURLToPath(new URL('./', import.meta.url));
/** A cold start through tsx on a busy 2-core host takes seconds; this bounds a hung one. */
const READY_TIMEOUT_MS = 60_000;
const WARMUP_MS = 1_000;
/** A query unanswered this long is counted lost and replaced, so one drop cannot stall a slot. */
const LOST_AFTER_MS = 1_000;
const NETWORK_ID = 0x2a;
const REGION = 'iad';

const HELP = `Usage: node bench/dns/run.mjs [options]

  --duration SEC       measured time per server (default 5)
  --max-queries N      at most N measured queries per server (default 200000)
  --concurrency N      queries in flight at once from the client (default 64)
  --apps N             apps in the data set (default 100)
  --machines N         started machines per app (default 3)
  --daemon KIND        auto | dist | tsx: Hangar's code from packages/server/dist or src through tsx;
                       auto picks dist when it is built and newer than src (default auto)
  --json               print one JSON document instead of the table
  -h, --help           show this help
`;

// ---- options --------------------------------------------------------------------------------------

const flags = parseFlags(
  {
    duration: { type: 'string', default: '5' },
    'max-queries': { type: 'string', default: '200000' },
    concurrency: { type: 'string', default: '64' },
    apps: { type: 'string', default: '100' },
    machines: { type: 'string', default: '3' },
    daemon: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
  },
  HELP,
);
const options = {
  durationMs: positive('duration', flags.duration) * 1000,
  maxQueries: Math.floor(positive('max-queries', flags['max-queries'])),
  // Query ids are 16 bits: in-flight queries must stay well under 65536 to keep ids unambiguous.
  concurrency: Math.floor(positive('concurrency', flags.concurrency, { max: 4096 })),
  apps: Math.floor(positive('apps', flags.apps, { max: 9999 })),
  machines: Math.floor(positive('machines', flags.machines, { max: 40 })),
  daemon: daemonKind(flags.daemon),
  json: flags.json,
};

// ---- cleanup: the temp dir and every child go away on exit, error and Ctrl-C ---------------------------

const tempDir = mkdtempSync(join(tmpdir(), 'hangar-bench-dns-'));
// dnsmasq started as root drops to an unprivileged user and must still read the hosts file in here.
chmodSync(tempDir, 0o755);
const { children, cleanup } = removeOnExit(tempDir);

const log = (text) => {
  if (!options.json) process.stderr.write(`${text}\n`);
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- the data set: the same names and addresses for both servers ----------------------------------------

function buildDataset() {
  const hex = (n, width) => n.toString(16).padStart(width, '0');
  const apps = Array.from({ length: options.apps }, (_, a) => ({
    name: `app-${String(a).padStart(4, '0')}`,
    machines: Array.from({ length: options.machines }, (_, m) => ({
      id: `${hex(a, 8)}${hex(m, 6)}`,
      // fdaa:<network>:<host a7b>:<app>:<machine>:0:2 in RFC 5952 form (no group is 0 but the 7th).
      ip: `fdaa:0:${hex(NETWORK_ID, 1)}:a7b:${(a + 1).toString(16)}:${(m + 1).toString(16)}:0:2`,
    })),
  }));
  return { networkId: NETWORK_ID, region: REGION, apps };
}

// ---- processes ------------------------------------------------------------------------------------

function spawnChild(command, args, env = {}) {
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
  });
  return { child, exited, output: () => output };
}

async function stopChild(handle) {
  if (handle.child.exitCode === null && handle.child.signalCode === null) handle.child.kill('SIGTERM');
  await handle.exited;
  children.delete(handle.child);
}

/** Hangar's DnsServer in its own process, so it does not share an event loop with the client. */
async function startHangar(datasetFile) {
  const code = serverCode(options.daemon);
  const handle = spawnChild(process.execPath, [...code.nodeArgs, join(HERE, 'hangar-server.mjs')], {
    BENCH_DNS_DATA: datasetFile,
    BENCH_DNS_CODE: code.dir,
    BENCH_DNS_EXT: code.ext,
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const line = /\{"port":(\d+)\}/.exec(handle.output());
    if (line) return { handle, port: Number(line[1]), kind: code.kind };
    if (handle.child.exitCode !== null) throw new Error(`the Hangar DNS server failed:\n${handle.output()}`);
    if (Date.now() > deadline) throw new Error(`the Hangar DNS server was not ready:\n${handle.output()}`);
    await sleep(50);
  }
}

function findDnsmasq() {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    const path = join(dir, 'dnsmasq');
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {}
  }
  return undefined;
}

/** dnsmasq with only the data set's names (an addn-hosts file), no upstream, on 127.0.0.1. */
async function startDnsmasq(binary, dataset, firstName) {
  const hostsFile = join(tempDir, 'internal.hosts');
  const lines = dataset.apps.flatMap((app) => app.machines.map((m) => `${m.ip} ${app.name}.internal`));
  writeFileSync(hostsFile, `${lines.join('\n')}\n`);
  chmodSync(hostsFile, 0o644);
  const port = await freePort();
  const handle = spawnChild(binary, [
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    `--addn-hosts=${hostsFile}`,
    '--local=/internal/',
    '--local-ttl=5',
    `--port=${port}`,
    '--listen-address=127.0.0.1',
    '--bind-interfaces',
    '--pid-file=',
    '--log-facility=-',
  ]);
  const probe = dnsPacket.encode({ type: 'query', id: 1, questions: [{ name: firstName, type: 'AAAA' }] });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (handle.child.exitCode !== null) throw new Error(`dnsmasq failed:\n${handle.output()}`);
    if (Date.now() > deadline) throw new Error(`dnsmasq was not ready:\n${handle.output()}`);
    const reply = await udpOnce(port, probe, 200);
    if (reply && reply.readUInt16BE(6) > 0) return { handle, port };
  }
}

function udpOnce(port, message, timeoutMs) {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    function finish(reply) {
      clearTimeout(timer);
      socket.close();
      resolve(reply);
    }
    socket.on('message', finish);
    socket.on('error', () => finish(undefined));
    socket.send(message, port, '127.0.0.1');
  });
}

// ---- the client: one UDP socket, `concurrency` queries in flight, each answer sends the next ------------

function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * Closed loop over UDP: every answer (or loss) sends the next query, cycling over the app names, until
 * the time or the query budget runs out; then the queries still in flight are awaited.
 */
async function load(port, names, { durationMs, maxQueries, expectedAnswers }) {
  const socket = dgram.createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', () => resolve(undefined)));
  const templates = names.map((name) =>
    dnsPacket.encode({
      type: 'query',
      id: 0,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ name, type: 'AAAA' }],
    }),
  );
  const latencies = new Float64Array(maxQueries);
  const inflight = new Map();
  let nextId = 0;
  let sent = 0;
  let answered = 0;
  let lost = 0;
  let wrong = 0;
  const started = performance.now();
  let finished = started;
  return new Promise((resolve) => {
    const stopping = () => sent >= maxQueries || performance.now() - started >= durationMs;
    const done = () => {
      clearInterval(sweep);
      socket.close();
      const sorted = latencies.subarray(0, answered).sort();
      const seconds = (finished - started) / 1000;
      resolve({
        queries: answered,
        lost,
        wrongAnswers: wrong,
        seconds,
        perSecond: answered / seconds,
        p50Ms: percentile(sorted, 50),
        p99Ms: percentile(sorted, 99),
      });
    };
    const next = () => {
      if (stopping()) {
        if (inflight.size === 0) done();
        return;
      }
      do nextId = (nextId + 1) & 0xffff;
      while (inflight.has(nextId));
      const message = Buffer.from(templates[sent % templates.length]);
      message.writeUInt16BE(nextId, 0);
      inflight.set(nextId, performance.now());
      sent++;
      socket.send(message, port, '127.0.0.1');
    };
    socket.on('message', (reply) => {
      const id = reply.readUInt16BE(0);
      const t0 = inflight.get(id);
      // A late answer to a query already counted lost is ignored.
      if (t0 === undefined) return;
      inflight.delete(id);
      const now = performance.now();
      finished = now;
      latencies[answered++] = now - t0;
      if ((reply[3] & 0x0f) !== 0 || reply.readUInt16BE(6) !== expectedAnswers) wrong++;
      next();
    });
    const sweep = setInterval(() => {
      const now = performance.now();
      for (const [id, t0] of inflight) {
        if (now - t0 < LOST_AFTER_MS) continue;
        inflight.delete(id);
        lost++;
        next();
      }
      if (stopping() && inflight.size === 0) done();
    }, 100);
    for (let i = 0; i < options.concurrency; i++) next();
  });
}

async function scenario(name, port, names) {
  const expectedAnswers = options.machines;
  await load(port, names, { durationMs: WARMUP_MS, maxQueries: options.maxQueries, expectedAnswers });
  const result = await load(port, names, {
    durationMs: options.durationMs,
    maxQueries: options.maxQueries,
    expectedAnswers,
  });
  log(
    `  ${name}: ${result.perSecond.toFixed(0)} q/s, p50 ${result.p50Ms.toFixed(3)} ms, p99 ${result.p99Ms.toFixed(3)} ms` +
      `, ${result.lost} lost, ${result.wrongAnswers} wrong`,
  );
  if (result.wrongAnswers > 0) {
    throw new Error(`${name}: ${result.wrongAnswers} answers were not NOERROR with ${expectedAnswers} AAAA`);
  }
  return result;
}

// ---- the run ----------------------------------------------------------------------------------------

async function main() {
  const host = `${cpus().length}× ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}, ${process.platform}`;
  const dataset = buildDataset();
  const datasetFile = join(tempDir, 'dataset.json');
  writeFileSync(datasetFile, JSON.stringify(dataset));
  const names = dataset.apps.map((app) => `${app.name}.internal`);
  log(
    `bench: ${host}; ${options.apps} apps × ${options.machines} started machines; ` +
      `${options.concurrency} in flight, ≤${options.durationMs / 1000}s or ${options.maxQueries} queries each`,
  );

  const hangar = await startHangar(datasetFile);
  log(`bench: Hangar DnsServer (${hangar.kind}) on 127.0.0.1:${hangar.port}`);
  const hangarResult = await scenario('hangar <app>.internal AAAA', hangar.port, names);
  await stopChild(hangar.handle);

  let peer;
  const dnsmasq = findDnsmasq();
  if (!dnsmasq) {
    log('bench: dnsmasq not found, skipping the peer (install it with: apt-get install dnsmasq-base)');
  } else {
    const started = await startDnsmasq(dnsmasq, dataset, names[0]);
    log(`bench: dnsmasq (${dnsmasq}) on 127.0.0.1:${started.port}, the same names from an addn-hosts file`);
    peer = await scenario('dnsmasq <app>.internal AAAA', started.port, names);
    await stopChild(started.handle);
  }

  const report = {
    host,
    options: { ...options, daemonKind: hangar.kind },
    hangar: hangarResult,
    dnsmasq: peer ?? null,
    ratio: peer
      ? {
          throughput: hangarResult.perSecond / peer.perSecond,
          p50: hangarResult.p50Ms / peer.p50Ms,
          p99: hangarResult.p99Ms / peer.p99Ms,
        }
      : null,
  };
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(table(report));
}

function table({ hangar, dnsmasq, ratio }) {
  const n = (v, digits = 0) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
  const rows = [
    ['server', 'queries/s', 'p50 ms', 'p99 ms', 'queries', 'lost'],
    [
      'hangar',
      n(hangar.perSecond),
      n(hangar.p50Ms, 3),
      n(hangar.p99Ms, 3),
      String(hangar.queries),
      String(hangar.lost),
    ],
  ];
  if (dnsmasq) {
    rows.push([
      'dnsmasq',
      n(dnsmasq.perSecond),
      n(dnsmasq.p50Ms, 3),
      n(dnsmasq.p99Ms, 3),
      String(dnsmasq.queries),
      String(dnsmasq.lost),
    ]);
    rows.push([
      'hangar/dnsmasq',
      `${n(ratio.throughput, 2)}×`,
      `${n(ratio.p50, 2)}×`,
      `${n(ratio.p99, 2)}×`,
      '',
      '',
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const render = (row) =>
    `${row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')}\n`;
  const note = dnsmasq ? '' : 'dnsmasq: skipped (not installed; apt-get install dnsmasq-base)\n';
  return `\n${rows.map(render).join('')}${note}`;
}

main().catch((error) => {
  process.stderr.write(`bench: ${error.stack ?? error}\n`);
  cleanup();
  process.exit(1);
});

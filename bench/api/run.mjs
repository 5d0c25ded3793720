#!/usr/bin/env node
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
// Machines API throughput and latency of a real hangard, next to two floors measured in the same run:
// a bare node:http server answering the same machine JSON from memory (the HTTP floor) and raw
// better-sqlite3 one-row transactions in WAL mode with synchronous=FULL (the storage floor).
//
//   node bench/api/run.mjs [--duration 5] [--max-requests 20000] [--connections 16] [--json]
//
// See bench/api/README.md for what each figure means.
import { daemonKind, freePort, parseFlags, positive, removeOnExit, serverCode } from '../lib/server.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** A cold start through tsx on a busy 2-core host takes seconds; this bounds a hung one. */
const READY_TIMEOUT_MS = 60_000;
const WARMUP_MS = 1_000;
const WARMUP_MAX_REQUESTS = 2_000;
const APP = 'bench';

const HELP = `Usage: node bench/api/run.mjs [options]

  --duration SEC       measured time per scenario (default 5)
  --max-requests N     at most N measured requests per scenario (default 20000)
  --connections N      concurrent keep-alive connections (default 16)
  --daemon KIND        auto | dist | tsx: run packages/server/dist/main.js or src/main.ts through tsx;
                       auto picks dist when it is built and newer than src (default auto)
  --log-level LEVEL    hangard's log level (default warn; info logs every request)
  --json               print one JSON document instead of the table
  -h, --help           show this help
`;

// ---- options --------------------------------------------------------------------------------------

const flags = parseFlags(
  {
    duration: { type: 'string', default: '5' },
    'max-requests': { type: 'string', default: '20000' },
    connections: { type: 'string', default: '16' },
    daemon: { type: 'string', default: 'auto' },
    'log-level': { type: 'string', default: 'warn' },
    json: { type: 'boolean', default: false },
  },
  HELP,
);
const options = {
  durationMs: positive('duration', flags.duration) * 1000,
  maxRequests: Math.floor(positive('max-requests', flags['max-requests'])),
  connections: Math.floor(positive('connections', flags.connections)),
  daemon: daemonKind(flags.daemon),
  logLevel: flags['log-level'],
  json: flags.json,
};

// ---- cleanup: the temp dir and every child go away on exit, error and Ctrl-C ---------------------------

const tempDir = mkdtempSync(join(tmpdir(), 'hangar-bench-'));
const { children, cleanup } = removeOnExit(tempDir);

const log = (text) => {
  if (!options.json) process.stderr.write(`${text}\n`);
};

// ---- processes ------------------------------------------------------------------------------------

function spawnChild(args, env) {
  const child = spawn(process.execPath, args, {
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
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, exited, output: () => output };
}

async function stopChild(handle) {
  if (handle.child.exitCode === null && handle.child.signalCode === null) handle.child.kill('SIGTERM');
  await handle.exited;
  children.delete(handle.child);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts hangard as production does and waits for its token file and a 200 from the API. */
async function startHangard() {
  const dataDir = join(tempDir, 'hangar-data');
  const port = await freePort();
  const code = serverCode(options.daemon);
  const command = { kind: code.kind, args: [...code.nodeArgs, join(code.dir, `main.${code.ext}`)] };
  const handle = spawnChild([...command.args, '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`], {
    HANGAR_RATE_LIMITS: 'off',
    HANGAR_PROXY: 'off',
    HANGAR_LOG_LEVEL: options.logLevel,
  });
  let exited = false;
  void handle.exited.then(() => {
    exited = true;
  });
  const target = { host: '127.0.0.1', port, token: '' };
  const tokenFile = join(dataDir, 'personal.token');
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const probe = new Agent({ keepAlive: false });
  for (;;) {
    if (exited) throw new Error(`hangard exited before it was ready:\n${handle.output()}`);
    if (Date.now() > deadline)
      throw new Error(`hangard was not ready after ${READY_TIMEOUT_MS / 1000}s:\n${handle.output()}`);
    if (!target.token && existsSync(tokenFile)) target.token = readFileSync(tokenFile, 'utf8').trim();
    if (target.token) {
      const answer = await send(probe, target, { method: 'GET', path: '/v1/apps?org_slug=personal' }).catch(
        () => undefined,
      );
      if (answer?.status === 200) break;
    }
    await sleep(50);
  }
  probe.destroy();
  return { handle, target, kind: command.kind, dataDir };
}

/** The HTTP floor: a bare node:http server in its own process, answering `bodyFile` to every request. */
async function startHttpFloor(bodyFile) {
  const script = `
    import { createServer } from 'node:http';
    import { readFileSync } from 'node:fs';
    const body = readFileSync(process.env.BENCH_BODY_FILE);
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length });
        res.end(body);
      });
    });
    server.keepAliveTimeout = 72_000;
    server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
    process.once('SIGTERM', () => server.close(() => process.exit(0)));
  `;
  const handle = spawnChild(['--input-type=module', '-e', script], { BENCH_BODY_FILE: bodyFile });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const port = Number.parseInt(handle.output(), 10);
    if (port > 0) return { handle, target: { host: '127.0.0.1', port, token: '' } };
    if (handle.child.exitCode !== null) throw new Error(`the HTTP floor server failed:\n${handle.output()}`);
    if (Date.now() > deadline) throw new Error('the HTTP floor server did not start');
    await sleep(20);
  }
}

// ---- the client: node:http with a keep-alive agent, N workers in a closed loop -------------------------

/**
 * @param {import('node:http').Agent} agent
 * @param {{ host: string, port: number, token: string }} target
 * @param {{ method: string, path: string, body?: string }} request
 */
function send(agent, target, { method, path, body }) {
  return new Promise((resolve, reject) => {
    const headers = { accept: 'application/json' };
    if (target.token) headers.authorization = `Bearer ${target.token}`;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(body);
    }
    const req = request({ host: target.host, port: target.port, method, path, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function summarize(latencies, count, elapsedMs) {
  const sorted = Float64Array.from(latencies).sort();
  return {
    requests: count,
    seconds: elapsedMs / 1000,
    perSecond: count / (elapsedMs / 1000),
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
  };
}

/**
 * `options.connections` workers, each sending its next request when the previous answers, until the
 * duration or the request budget runs out. `next(worker, i)` builds each request.
 */
async function load(target, next, { durationMs, maxRequests }) {
  const agent = new Agent({ keepAlive: true, maxSockets: options.connections });
  const latencies = [];
  let issued = 0;
  let failure;
  const started = performance.now();
  const worker = async (w) => {
    for (let i = 0; ; i++) {
      if (failure || issued >= maxRequests || performance.now() - started >= durationMs) return;
      issued++;
      const t0 = performance.now();
      const answer = await send(agent, target, next(w, i));
      latencies.push(performance.now() - t0);
      if (answer.status < 200 || answer.status > 299) {
        failure ??= new Error(`${answer.status}: ${answer.body.toString().slice(0, 500)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: options.connections }, (_, w) => worker(w)));
  const elapsed = performance.now() - started;
  agent.destroy();
  if (failure) throw failure;
  return summarize(latencies, latencies.length, elapsed);
}

async function scenario(name, target, next) {
  await load(target, (w, i) => next(`warm${w}`, i), {
    durationMs: WARMUP_MS,
    maxRequests: WARMUP_MAX_REQUESTS,
  });
  const result = await load(target, (w, i) => next(`c${w}`, i), options);
  log(
    `  ${name}: ${result.perSecond.toFixed(0)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms`,
  );
  return result;
}

// ---- the storage floor ------------------------------------------------------------------------------

/** Raw better-sqlite3: one-row IMMEDIATE transactions in WAL mode, synchronous=FULL, same filesystem. */
function storageFloor(doc) {
  const db = new Database(join(tempDir, 'floor.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec('CREATE TABLE docs (key TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT');
    const insert = db.prepare('INSERT INTO docs (key, doc) VALUES (?, ?)');
    const once = db.transaction((key) => insert.run(key, doc));
    for (let i = 0; i < 200; i++) once.immediate(`warm-${i}`);
    const latencies = [];
    const started = performance.now();
    for (let i = 0; i < options.maxRequests && performance.now() - started < options.durationMs; i++) {
      const t0 = performance.now();
      once.immediate(`doc-${i}`);
      latencies.push(performance.now() - t0);
    }
    const result = summarize(latencies, latencies.length, performance.now() - started);
    log(
      `  sqlite insert floor: ${result.perSecond.toFixed(0)} ops/s, p50 ${result.p50Ms.toFixed(3)} ms, p99 ${result.p99Ms.toFixed(3)} ms`,
    );
    return result;
  } finally {
    db.close();
  }
}

// ---- the run ----------------------------------------------------------------------------------------

const MACHINE_CONFIG = {
  image: 'registry.example/bench:1',
  env: { PORT: '8080', LOG_LEVEL: 'info' },
  guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 256 },
  services: [
    {
      protocol: 'tcp',
      internal_port: 8080,
      autostop: 'stop',
      autostart: true,
      ports: [
        { port: 80, handlers: ['http'], force_https: true },
        { port: 443, handlers: ['tls', 'http'] },
      ],
      concurrency: { type: 'connections', soft_limit: 20, hard_limit: 25 },
    },
  ],
  metadata: { fly_process_group: 'app' },
};

async function main() {
  const host = `${cpus().length}× ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}, ${process.platform}`;
  log(
    `bench: ${host}; ${options.connections} connections, ≤${options.durationMs / 1000}s or ${options.maxRequests} requests each`,
  );

  // 1. hangard, as production runs it (rate limits off, databaseSync at its FULL default).
  const hangard = await startHangard();
  log(
    `bench: hangard (${hangard.kind}) on ${hangard.target.host}:${hangard.target.port}, data in ${hangard.dataDir}`,
  );
  const setupAgent = new Agent({ keepAlive: true });
  const setup = async (method, path, body) => {
    const answer = await send(setupAgent, hangard.target, {
      method,
      path,
      body: body && JSON.stringify(body),
    });
    if (answer.status < 200 || answer.status > 299)
      throw new Error(`${method} ${path}: ${answer.status} ${answer.body}`);
    return answer.body;
  };
  await setup('POST', '/v1/apps', { app_name: APP, org_slug: 'personal' });
  const machine = JSON.parse(
    (
      await setup('POST', `/v1/apps/${APP}/machines`, {
        name: 'target',
        skip_launch: true,
        config: MACHINE_CONFIG,
      })
    ).toString(),
  );
  const machineBody = await setup('GET', `/v1/apps/${APP}/machines/${machine.id}`);
  setupAgent.destroy();

  log('bench: hangard');
  const getMachine = await scenario('GET machine', hangard.target, () => ({
    method: 'GET',
    path: `/v1/apps/${APP}/machines/${machine.id}`,
  }));
  const createMachine = await scenario('POST create machine', hangard.target, (w, i) => ({
    method: 'POST',
    path: `/v1/apps/${APP}/machines`,
    body: JSON.stringify({ name: `m-${w}-${i}`, skip_launch: true, config: MACHINE_CONFIG }),
  }));
  // Create cost grows with the app's machine count (see README): record how many the app ended with.
  const finalAgent = new Agent({ keepAlive: false });
  const appAfter = JSON.parse(
    (await send(finalAgent, hangard.target, { method: 'GET', path: `/v1/apps/${APP}` })).body.toString(),
  );
  finalAgent.destroy();
  log(`  the app ends with ${appAfter.machine_count} machines`);
  await stopChild(hangard.handle);

  // 2. The HTTP floor: the same machine body from memory, the same client and concurrency.
  const bodyFile = join(tempDir, 'machine.json');
  writeFileSync(bodyFile, machineBody);
  const floor = await startHttpFloor(bodyFile);
  log('bench: HTTP floor (bare node:http, same body)');
  const httpGet = await scenario('GET', floor.target, () => ({ method: 'GET', path: '/machine' }));
  const httpPost = await scenario('POST', floor.target, (w, i) => ({
    method: 'POST',
    path: '/machines',
    body: JSON.stringify({ name: `m-${w}-${i}`, skip_launch: true, config: MACHINE_CONFIG }),
  }));
  await stopChild(floor.handle);

  // 3. The storage floor: the same machine document, one fsynced transaction per insert.
  log('bench: storage floor');
  const sqliteInsert = storageFloor(machineBody.toString());

  const ratio = (a, b) => ({
    throughput: a.perSecond / b.perSecond,
    p50: a.p50Ms / b.p50Ms,
    p99: a.p99Ms / b.p99Ms,
  });
  const report = {
    host,
    options: { ...options, daemonKind: hangard.kind },
    machineBodyBytes: machineBody.length,
    machinesInAppAfterCreate: appAfter.machine_count,
    hangard: { getMachine, createMachine },
    floors: { httpGet, httpPost, sqliteInsert },
    ratios: {
      getMachineVsHttpGet: ratio(getMachine, httpGet),
      createMachineVsHttpPost: ratio(createMachine, httpPost),
      createMachineVsSqliteInsert: ratio(createMachine, sqliteInsert),
    },
  };
  if (options.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(table(report));
  }
}

function table({ hangard, floors, ratios, machineBodyBytes, machinesInAppAfterCreate }) {
  const n = (v, digits = 0) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
  const rows = [
    ['GET machine', hangard.getMachine, 'HTTP GET (same body)', floors.httpGet, ratios.getMachineVsHttpGet],
    [
      'POST create machine',
      hangard.createMachine,
      'HTTP POST (same body)',
      floors.httpPost,
      ratios.createMachineVsHttpPost,
    ],
    [
      'POST create machine',
      hangard.createMachine,
      'sqlite FULL insert',
      floors.sqliteInsert,
      ratios.createMachineVsSqliteInsert,
    ],
  ];
  const header = [
    'hangard scenario',
    'req/s',
    'p50 ms',
    'p99 ms',
    'floor',
    'ops/s',
    'p50 ms',
    'p99 ms',
    'thr ratio',
    'p50 ratio',
  ];
  const lines = rows.map(([name, h, floorName, f, r]) => [
    name,
    n(h.perSecond),
    n(h.p50Ms, 2),
    n(h.p99Ms, 2),
    floorName,
    n(f.perSecond),
    n(f.p50Ms, 3),
    n(f.p99Ms, 3),
    n(r.throughput, 2),
    n(r.p50, 1),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const format = (cells) =>
    cells.map((c, i) => (i === 0 || i === 4 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [
    '',
    format(header),
    format(widths.map((w) => '-'.repeat(w))),
    ...lines.map(format),
    '',
    `ratios are hangard / floor (throughput: 1.00 = as fast as the floor; latency: how many times slower).`,
    `machine body: ${machineBodyBytes} bytes; requests per scenario: hangard GET ${hangard.getMachine.requests}, ` +
      `create ${hangard.createMachine.requests}; floors GET ${floors.httpGet.requests}, POST ${floors.httpPost.requests}, ` +
      `inserts ${floors.sqliteInsert.requests}`,
    `the app held ${machinesInAppAfterCreate} machines after the create scenario (warm-up included)`,
    '',
  ].join('\n');
}

try {
  await main();
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? error.stack : error}\n`);
  process.exitCode = 1;
} finally {
  cleanup();
}

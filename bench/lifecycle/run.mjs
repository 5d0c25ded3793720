#!/usr/bin/env node
import { execFile, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
// Machine lifecycle latency of a real hangard (create, stop, start, suspend, resume, destroy, each timed to
// the API's answer or to the machine's first HTTP answer), next to the same operations done directly with
// the OCI runtime hangard uses, on a bundle made by hand from the same image (the floor).
//
//   node bench/lifecycle/run.mjs [--runs 20] [--json]
//
// Needs root and crun/runc, umoci, skopeo, docker-registry, tini and busybox-static. See
// bench/lifecycle/README.md for the method and what each figure means.
import { freePort, parseFlags, positive, serverCode } from '../lib/server.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const APP = 'lifecycle';
/** A cold start through tsx on a busy 2-core host takes seconds; this bounds a hung one. */
const READY_TIMEOUT_MS = 60_000;
/** Bound on one API call (the wait long-poll itself is asked to give up after 60 s). */
const API_TIMEOUT_MS = 70_000;
/** Bound on one tool run (crun, ip, umoci, skopeo). */
const TOOL_TIMEOUT_MS = 30_000;
const HELPER_READY_TIMEOUT_MS = 15_000;
/** The image's command: busybox httpd in the foreground, serving /www on 8080. */
const HTTPD_CMD = ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'];
const HTTP_PORT = 8080;
const TARGET_START_RATIO = 3;
const TARGET_RESUME_MS = 20;

const HELP = `Usage: node bench/lifecycle/run.mjs [options]   (as root)

  --runs N             samples per operation, each on a fresh machine and a fresh floor container
                       (default 20; one more unrecorded warm-up cycle runs first)
  --probe-timeout SEC  give up waiting for a machine's first HTTP answer after SEC seconds (default 10)
  --daemon KIND        auto | dist | tsx: run packages/server/dist/main.js or src/main.ts through tsx;
                       auto picks dist when it is built and newer than src (default auto)
  --json               print one JSON document (figures, samples, verdicts) instead of the table
  -h, --help           show this help
`;

// ---- options --------------------------------------------------------------------------------------

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
  daemon: flags.daemon,
  json: flags.json,
};
if (!['auto', 'dist', 'tsx'].includes(options.daemon)) {
  process.stderr.write(`bench: --daemon must be auto, dist or tsx, got "${options.daemon}"\n`);
  process.exit(2);
}
if (process.platform !== 'linux' || process.getuid?.() !== 0) {
  process.stderr.write('bench: run as root on Linux (machines are OCI containers with namespaces)\n');
  process.exit(2);
}

const log = (text) => {
  if (!options.json) process.stderr.write(`${text}\n`);
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** CLOCK_MONOTONIC in ms: the probe helpers report the same clock, so their stamps compare with ours. */
const now = () => Number(process.hrtime.bigint()) / 1e6;

// ---- everything the run creates, so that cleanup finds it -------------------------------------------

const tempDir = mkdtempSync(join(tmpdir(), 'hangar-lifecycle-'));
// Root in a machine is an unprivileged host uid: it must be able to pass through to the rootfs below.
chmodSync(tempDir, 0o711);
const dataDir = join(tempDir, 'hangar-data');
const floorDir = join(tempDir, 'floor');
const floorState = join(floorDir, 'state');
const tag = `hlb${process.pid}`;
const created = {
  hangard: undefined, // { child, exited, output }
  target: undefined, // { host, port, token }
  helpers: new Set(),
  children: new Set(),
  floorContainers: new Set(),
  floorNetns: new Set(),
  floorCgroups: new Set(),
};
let ociBinary = 'crun';
let aborted = false;
let cleaning;

// ---- child processes and tools ----------------------------------------------------------------------

/** Runs a program with an argument array; resolves with its status and output whatever the status. */
function run(file, args, { timeoutMs = TOOL_TIMEOUT_MS } = {}) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error && typeof error.code === 'string') {
        reject(new Error(`${file} ${args.join(' ')}: ${error.message}`));
        return;
      }
      if (error?.killed) {
        reject(new Error(`${file} ${args.join(' ')} did not finish within ${timeoutMs} ms`));
        return;
      }
      resolve({ code: error ? (error.code ?? null) : 0, stdout, stderr });
    });
  });
}

async function runChecked(file, args, opts) {
  const result = await run(file, args, opts);
  if (result.code !== 0) {
    const detail = (result.stderr || result.stdout).trim().split('\n').slice(-3).join(' | ');
    throw new Error(`${file} ${args.join(' ')} failed (exit ${result.code}): ${detail}`);
  }
  return result.stdout;
}

/** Synchronous, for cleanup paths that must work from an exit handler too. */
function runSync(file, args, timeout = 15_000) {
  const result = spawnSync(file, args, { encoding: 'utf8', timeout });
  return { code: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

function spawnNode(args, { detached = false, env = {} } = {}) {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  created.children.add(child);
  let output = '';
  let stdout = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout.on('data', (chunk) => {
    stdout = (stdout + chunk.toString()).slice(-20_000);
    keep(chunk);
  });
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      created.children.delete(child);
      resolve({ code, signal });
    }),
  );
  // 'close' also waits for the end of its output (what a parsed stdout needs); 'exit' does not.
  const closed = new Promise((resolve) => child.once('close', resolve));
  return { child, exited, closed, output: () => output, stdout: () => stdout };
}

const alive = (child) => child.exitCode === null && child.signalCode === null;

async function preflight() {
  const missing = [];
  for (const tool of ['umoci', 'skopeo', 'ip', 'unshare', 'mount', 'docker-registry']) {
    if (runSync('sh', ['-c', 'command -v "$0"', tool]).code !== 0) missing.push(tool);
  }
  if (!existsSync('/bin/busybox')) missing.push('/bin/busybox (busybox-static)');
  if (missing.length > 0) throw new Error(`missing on this host: ${missing.join(', ')}`);
}

// ---- the Machines API -------------------------------------------------------------------------------

const apiAgent = new Agent({ keepAlive: true, maxSockets: 4 });

function send(method, path, body, { timeoutMs = API_TIMEOUT_MS, agent = apiAgent } = {}) {
  const target = created.target;
  return new Promise((resolve, reject) => {
    const headers = { accept: 'application/json', authorization: `Bearer ${target.token}` };
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(payload);
    }
    const req = request({ host: target.host, port: target.port, method, path, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () =>
      req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)),
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function api(method, path, body, opts) {
  if (aborted) throw new Error('aborted');
  const answer = await send(method, path, body, opts).catch((error) => {
    throw new Error(`${method} ${path}: ${error.message} (is hangard still running?)`, { cause: error });
  });
  if (answer.status < 200 || answer.status > 299)
    throw new Error(`${method} ${path}: ${answer.status} ${answer.text.slice(0, 500)}`);
  return answer.json;
}

/** Starts hangard with a JSON config file, and waits for its token file and a 200 from the API. */
async function startHangard(code) {
  const port = await freePort();
  const registryPort = await freePort();
  const configFile = join(tempDir, 'hangard.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      dataDir,
      listen: { host: '127.0.0.1', port },
      runtime: 'required',
      registry: { port: registryPort },
      rateLimits: { enabled: false },
      proxy: { mode: 'off' },
      logLevel: 'silent',
    }),
  );
  // Its own process group: a Ctrl-C at the terminal reaches the bench only, which then destroys the
  // machines through the API before it stops hangard.
  const handle = spawnNode([...code.nodeArgs, join(code.dir, `main.${code.ext}`), '--config', configFile], {
    detached: true,
  });
  created.hangard = handle;
  created.target = { host: '127.0.0.1', port, token: '' };
  const tokenFile = join(dataDir, 'personal.token');
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const probe = new Agent({ keepAlive: false });
  for (;;) {
    if (!alive(handle.child)) throw new Error(`hangard exited before it was ready:\n${handle.output()}`);
    if (Date.now() > deadline)
      throw new Error(`hangard was not ready after ${READY_TIMEOUT_MS / 1000}s:\n${handle.output()}`);
    if (aborted) throw new Error('aborted');
    if (!created.target.token && existsSync(tokenFile))
      created.target.token = readFileSync(tokenFile, 'utf8').trim();
    if (created.target.token) {
      const answer = await send('GET', '/v1/apps?org_slug=personal', undefined, {
        agent: probe,
        timeoutMs: 5_000,
      }).catch(() => undefined);
      if (answer?.status === 200) break;
    }
    await sleep(50);
  }
  probe.destroy();
  return { registry: `127.0.0.1:${registryPort}` };
}

// ---- the OCI runtime hangard uses (found by its own detect.ts) -------------------------------------------

async function detectRuntime(code) {
  const script = `
    const { detectOciRuntime } = await import(process.env.BENCH_DETECT_URL);
    const found = await detectOciRuntime(process.env.BENCH_SCRATCH, process.env.BENCH_STATE);
    process.stdout.write(JSON.stringify(found));
  `;
  const handle = spawnNode([...code.nodeArgs, '--input-type=module', '-e', script], {
    env: {
      BENCH_DETECT_URL: pathToFileURL(join(code.dir, `runtime/oci/detect.${code.ext}`)).href,
      BENCH_SCRATCH: join(floorDir, 'detect'),
      BENCH_STATE: join(floorDir, 'detect-state'),
    },
  });
  const timer = setTimeout(() => handle.child.kill('SIGKILL'), READY_TIMEOUT_MS);
  const { code: status } = await handle.exited;
  await handle.closed;
  clearTimeout(timer);
  if (status !== 0) throw new Error(`detecting the OCI runtime failed: ${handle.output().trim()}`);
  return JSON.parse(handle.stdout());
}

/** The floor's command lines: the runtime hangard runs, with its cgroup2-hiding wrapper when it uses one. */
function ociCommand(choice, args, { create = false } = {}) {
  const full = ['--root', floorState, ...args];
  if (!create || !choice.hideUnifiedCgroup) return { file: choice.binary, args: full };
  return {
    file: 'unshare',
    args: [
      '-m',
      '--propagation',
      'private',
      'sh',
      '-c',
      'umount /sys/fs/cgroup/unified && exec "$0" "$@"',
      choice.binary,
      ...full,
    ],
  };
}

// ---- the image: busybox httpd, built with umoci and pushed with skopeo -----------------------------------

const APPLETS = ['sh', 'httpd', 'cat', 'echo', 'sleep', 'ls'];

async function buildImage(registry) {
  const work = join(tempDir, 'image');
  const layout = join(work, 'layout');
  const image = `${layout}:bench`;
  const bundle = join(work, 'bundle');
  await runChecked('umoci', ['init', '--layout', layout]);
  await runChecked('umoci', ['new', '--image', image]);
  await runChecked('umoci', ['unpack', '--image', image, bundle]);
  const rootfs = join(bundle, 'rootfs');
  mkdirSync(join(rootfs, 'bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  chmodSync(join(rootfs, 'bin/busybox'), 0o755);
  for (const applet of APPLETS) symlinkSync('busybox', join(rootfs, 'bin', applet));
  mkdirSync(join(rootfs, 'www'));
  writeFileSync(join(rootfs, 'www/index.html'), 'hello from the lifecycle bench\n');
  mkdirSync(join(rootfs, 'tmp'));
  chmodSync(join(rootfs, 'tmp'), 0o1777);
  await runChecked('umoci', ['repack', '--image', image, bundle]);
  const config = ['config', '--image', image, '--no-history', '--config.workingdir', '/'];
  for (const part of HTTPD_CMD) config.push('--config.cmd', part);
  await runChecked('umoci', config);
  await runChecked('umoci', ['gc', '--layout', layout]);
  rmSync(bundle, { recursive: true, force: true });
  // In the app's space, pushed with hangard's org token as the password (any user name).
  const reference = `${registry}/${APP}/web:bench`;
  await runChecked('skopeo', [
    'copy',
    '--quiet',
    '--dest-tls-verify=false',
    '--dest-creds',
    `bench:${created.target.token}`,
    `oci:${image}`,
    `docker://${reference}`,
  ]);
  return { reference, layoutImage: image };
}

// ---- the probe: a long-lived helper inside the machine's network namespace --------------------------------

/**
 * Runs in the netns (`ip netns exec NS node -e HELPER`). On `go MS` it connects to 127.0.0.1:8080 and sends
 * `GET /` every ~1 ms until an answer's status line says 200, then prints `ok <CLOCK_MONOTONIC ns> <attempts>`
 * (process.hrtime is CLOCK_MONOTONIC, the same clock in every process of the host), or `fail ...` after MS.
 * A connection accepted by a frozen listener simply waits: its answer is the first after a resume.
 */
const HELPER = String.raw`
const net = require('node:net');
let buffer = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffer += chunk;
  for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
    const [cmd, arg] = buffer.slice(0, i).split(' ');
    buffer = buffer.slice(i + 1);
    if (cmd === 'go') probe(Number(arg));
  }
});
process.stdin.on('end', () => process.exit(0));
function probe(timeoutMs) {
  let attempts = 0;
  let lastError = 'no attempt';
  let finished = false;
  let socket;
  const finish = (line) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket?.destroy();
    process.stdout.write(line + '\n');
  };
  const timer = setTimeout(() => finish('fail ' + attempts + ' ' + lastError), timeoutMs);
  const attempt = () => {
    if (finished) return;
    attempts++;
    let data = '';
    let retried = false;
    const s = net.connect({ host: '127.0.0.1', port: ${HTTP_PORT} });
    socket = s;
    const retry = (why) => {
      if (retried || finished) return;
      retried = true;
      lastError = why;
      s.destroy();
      setTimeout(attempt, 1);
    };
    s.setNoDelay(true);
    s.on('connect', () => s.write('GET / HTTP/1.0\r\n\r\n'));
    s.on('data', (chunk) => {
      data += chunk;
      const eol = data.indexOf('\r\n');
      if (eol < 0) return;
      if (/^HTTP\/1\.[01] 200/.test(data)) {
        const at = process.hrtime.bigint();
        retried = true;
        finish('ok ' + at + ' ' + attempts);
      } else retry('answered ' + data.slice(0, eol));
    });
    s.on('error', (error) => retry(error.code || error.message));
    s.on('close', () => retry('closed without an answer'));
  };
  attempt();
}
process.stdout.write('ready\n');
`;

async function startHelper(netns) {
  if (aborted) throw new Error('aborted');
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', HELPER], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const helper = { child, netns, waiting: undefined, lines: [], stderr: '' };
  created.helpers.add(helper);
  child.stdin.on('error', () => undefined);
  let buffer = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    buffer += chunk;
    for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      if (helper.waiting) {
        const waiting = helper.waiting;
        helper.waiting = undefined;
        waiting.resolve(line);
      } else helper.lines.push(line);
    }
  });
  child.stderr.on('data', (chunk) => {
    helper.stderr = (helper.stderr + chunk).slice(-4_000);
  });
  child.once('exit', (code, signal) => {
    created.helpers.delete(helper);
    helper.waiting?.reject(
      new Error(`the probe helper in ${netns} exited (${code ?? signal}): ${helper.stderr.trim()}`),
    );
    helper.waiting = undefined;
  });
  const first = await nextLine(helper, HELPER_READY_TIMEOUT_MS);
  if (first !== 'ready')
    throw new Error(`the probe helper in ${netns} did not start: ${first} ${helper.stderr}`);
  return helper;
}

function nextLine(helper, timeoutMs) {
  if (helper.lines.length > 0) return Promise.resolve(helper.lines.shift());
  if (!alive(helper.child)) return Promise.reject(new Error(`the probe helper in ${helper.netns} is gone`));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      helper.waiting = undefined;
      reject(new Error(`the probe helper in ${helper.netns} said nothing within ${timeoutMs} ms`));
    }, timeoutMs);
    helper.waiting = {
      resolve: (line) => {
        clearTimeout(timer);
        resolve(line);
      },
      reject: (error) => {
        clearTimeout(timer);
        reject(error);
      },
    };
  });
}

/**
 * Starts probing now; the promise gives the CLOCK_MONOTONIC ms of the first 200. It is awaited after the
 * API call that should bring the answer; if that call fails first, its rejection must not go unhandled.
 */
function probeFirstAnswer(helper, what) {
  helper.child.stdin.write(`go ${options.probeTimeoutMs}\n`);
  const answer = nextLine(helper, options.probeTimeoutMs + 5_000).then((line) => {
    const [word, at, attempts] = line.split(' ');
    if (word !== 'ok')
      throw new Error(
        `${what}: no HTTP 200 from 127.0.0.1:${HTTP_PORT} in ${helper.netns} within ${options.probeTimeoutMs / 1000}s (${line.slice(5)})`,
      );
    return { at: Number(BigInt(at)) / 1e6, attempts: Number(attempts) };
  });
  answer.catch(() => undefined);
  return answer;
}

async function stopHelper(helper) {
  if (!helper || !alive(helper.child)) return;
  const exited = new Promise((resolve) => helper.child.once('exit', resolve));
  helper.child.kill('SIGKILL');
  await exited;
}

// ---- samples ------------------------------------------------------------------------------------------

const record = (samples, key, value) => {
  samples[key] ??= [];
  samples[key].push(value);
};

function summarize(values) {
  if (!values || values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  const p90 = sorted[Math.min(sorted.length - 1, Math.ceil(0.9 * sorted.length) - 1)];
  return { median, p90, min: sorted[0], max: sorted.at(-1), n: sorted.length };
}

// ---- hangard: one full lifecycle of one machine, through the API ------------------------------------------

const MACHINE_CONFIG = (image) => ({
  image,
  guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 128 },
  restart: { policy: 'no' },
  stop_config: { signal: 'SIGTERM', timeout: '10s' },
});

/**
 * create → started, stop, start → first answer, suspend, start (resume) → first answer, stop, destroy.
 * `onStarted(id)` runs while the machine exists (the warm-up reads its OCI config there).
 */
async function hangardCycle(image, label, samples, onStarted) {
  const base = `/v1/apps/${APP}/machines`;
  const t0 = now();
  const machine = await api('POST', base, { name: `lc-${label}`, config: MACHINE_CONFIG(image) });
  const tCreated = now();
  const one = `${base}/${machine.id}`;
  await api('GET', `${one}/wait?state=started&timeout=60`);
  const tStarted = now();
  record(samples, 'createToStarted', tStarted - t0);
  record(samples, 'createCall', tCreated - t0);
  onStarted?.(machine.id);

  const helper = await startHelper(`hangar-${machine.id}`);
  try {
    await probeFirstAnswer(helper, `machine ${machine.id} after create`);

    let t = now();
    await api('POST', `${one}/stop`, {});
    record(samples, 'stop', now() - t);

    let answer = probeFirstAnswer(helper, `machine ${machine.id} after start`);
    t = now();
    await api('POST', `${one}/start`);
    let returned = now();
    let first = await answer;
    record(samples, 'startToAnswer', first.at - t);
    record(samples, 'startCall', returned - t);
    record(samples, 'startAfterReturn', first.at - returned);

    t = now();
    await api('POST', `${one}/suspend`);
    record(samples, 'suspend', now() - t);

    answer = probeFirstAnswer(helper, `machine ${machine.id} after resume`);
    t = now();
    await api('POST', `${one}/start`);
    returned = now();
    first = await answer;
    record(samples, 'resumeToAnswer', first.at - t);
    record(samples, 'resumeCall', returned - t);
    record(samples, 'resumeAfterReturn', first.at - returned);

    t = now();
    await api('POST', `${one}/stop`, {});
    record(samples, 'stop', now() - t);
  } finally {
    await stopHelper(helper);
  }
  const t = now();
  await api('DELETE', `${one}?force=true`);
  record(samples, 'destroy', now() - t);
}

/** The user namespace mapping hangard gave the machine, from the OCI config it wrote for it. */
function machineMapping(machineId) {
  const config = JSON.parse(readFileSync(join(dataDir, 'machines', machineId, 'config.json'), 'utf8'));
  const uid = config.linux.uidMappings[0];
  return { hostId: uid.hostID, size: uid.size };
}

// ---- the floor: the same operations with the bare OCI runtime ---------------------------------------------

/** The same image, unpacked by hand with the same id mapping hangard's image store uses. */
async function setupFloor(layoutImage, mapping) {
  mkdirSync(floorState, { recursive: true });
  const bundle = join(floorDir, 'image');
  const ids = `0:${mapping.hostId}:${mapping.size}`;
  await runChecked('umoci', ['unpack', '--uid-map', ids, '--gid-map', ids, '--image', layoutImage, bundle]);
  chmodSync(bundle, 0o711);
  return join(bundle, 'rootfs');
}

/**
 * A minimal config: the image's command as PID 1 (no init), and the namespaces of a machine: user (same
 * mapping), pid, ipc, uts, mount, and the pre-made network namespace; /proc and a tmpfs /dev.
 */
function floorConfig({ rootfs, mapping, netns, cgroupsPath }) {
  const idMap = [{ containerID: 0, hostID: mapping.hostId, size: mapping.size }];
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: HTTPD_CMD,
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      cwd: '/',
    },
    root: { path: rootfs, readonly: false },
    hostname: 'floor',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=1024k'] },
    ],
    linux: {
      uidMappings: idMap,
      gidMappings: idMap,
      namespaces: [
        { type: 'pid' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        { type: 'user' },
        { type: 'network', path: `/var/run/netns/${netns}` },
      ],
      cgroupsPath,
    },
  };
}

/**
 * `run -d` with the container's output in a log file. Waits for the runtime's own exit (not for its stdio:
 * the container keeps those open) and returns the container's pid.
 */
async function floorRun(choice, id, bundle) {
  const pidFile = join(bundle, 'pid');
  rmSync(pidFile, { force: true });
  const { file, args } = ociCommand(choice, ['run', '-d', '--pid-file', pidFile, '--bundle', bundle, id], {
    create: true,
  });
  const logFd = openSync(join(bundle, 'log'), 'a');
  let child;
  try {
    child = spawn(file, args, { stdio: ['ignore', logFd, logFd], detached: true });
  } finally {
    closeSync(logFd);
  }
  const status = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} run -d ${id} did not return within ${TOOL_TIMEOUT_MS} ms`));
    }, TOOL_TIMEOUT_MS);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
  if (status !== 0) {
    const tail = readFileSync(join(bundle, 'log'), 'utf8').trim().split('\n').slice(-3).join(' | ');
    throw new Error(`${choice.binary} run -d ${id} failed (exit ${status}): ${tail}`);
  }
  return Number(readFileSync(pidFile, 'utf8'));
}

/** Until the process is gone or a zombie (nobody may have reaped it yet), polling /proc; bounded. */
async function waitGone(pid) {
  const deadline = now() + options.probeTimeoutMs;
  for (;;) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return;
    }
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') return;
    if (now() > deadline) throw new Error(`floor container pid ${pid} still runs after SIGKILL`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Runs a non-creating runtime command (kill, pause, resume, delete): no wrapper needed, as in hangard. */
function oci(choice, args) {
  const { file, args: full } = ociCommand(choice, args);
  return runChecked(file, full);
}

async function floorStop(choice, id, pid) {
  await oci(choice, ['kill', id, 'KILL']);
  await waitGone(pid);
  await oci(choice, ['delete', id]);
}

async function floorCycle(choice, rootfs, mapping, label, samples) {
  if (aborted) throw new Error('aborted');
  const id = `${tag}-${label}`;
  const netns = id;
  const bundle = join(floorDir, id);

  created.floorContainers.add(id);
  created.floorNetns.add(netns);
  created.floorCgroups.add(`/${id}`);
  const t0 = now();
  await runChecked('ip', ['netns', 'add', netns]);
  await runChecked('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  mkdirSync(bundle, { mode: 0o711 });
  const config = floorConfig({ rootfs, mapping, netns, cgroupsPath: `/${id}` });
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(config));
  let pid = await floorRun(choice, id, bundle);
  record(samples, 'createToStarted', now() - t0);

  const helper = await startHelper(netns);
  try {
    await probeFirstAnswer(helper, `floor container ${id} after run`);

    let t = now();
    await floorStop(choice, id, pid);
    record(samples, 'stop', now() - t);

    let answer = probeFirstAnswer(helper, `floor container ${id} after run after kill`);
    t = now();
    pid = await floorRun(choice, id, bundle);
    let returned = now();
    let first = await answer;
    record(samples, 'startToAnswer', first.at - t);
    record(samples, 'startCall', returned - t);
    record(samples, 'startAfterReturn', first.at - returned);

    t = now();
    await oci(choice, ['pause', id]);
    record(samples, 'suspend', now() - t);

    answer = probeFirstAnswer(helper, `floor container ${id} after resume`);
    t = now();
    await oci(choice, ['resume', id]);
    returned = now();
    first = await answer;
    record(samples, 'resumeToAnswer', first.at - t);
    record(samples, 'resumeCall', returned - t);
    record(samples, 'resumeAfterReturn', first.at - returned);

    t = now();
    await floorStop(choice, id, pid);
    record(samples, 'stop', now() - t);
    created.floorContainers.delete(id);
  } finally {
    await stopHelper(helper);
  }
  const t = now();
  await runChecked('ip', ['netns', 'delete', netns]);
  record(samples, 'destroy', now() - t);
  created.floorNetns.delete(netns);
  rmSync(bundle, { recursive: true, force: true });
}

// ---- cleanup: machines through the API, then hangard, then whatever is left, on exit, error and Ctrl-C ----

async function destroyMachinesThroughApi() {
  const agent = new Agent({ keepAlive: false });
  try {
    const list = await send('GET', `/v1/apps/${APP}/machines`, undefined, { agent, timeoutMs: 10_000 });
    if (list.status !== 200 || !Array.isArray(list.json)) return;
    for (const machine of list.json) {
      if (machine.state === 'destroyed') continue;
      const answer = await send('DELETE', `/v1/apps/${APP}/machines/${machine.id}?force=true`, undefined, {
        agent,
        timeoutMs: 20_000,
      });
      if (answer.status !== 200)
        log(`bench: cleanup: destroying ${machine.id}: ${answer.status} ${answer.text}`);
    }
  } finally {
    agent.destroy();
  }
}

function cleanup() {
  cleaning ??= (async () => {
    for (const helper of created.helpers) helper.child.kill('SIGKILL');
    const hangard = created.hangard;
    if (hangard && alive(hangard.child) && created.target?.token) {
      await destroyMachinesThroughApi().catch((error) =>
        log(`bench: cleanup: destroying machines through the API failed: ${error.message}`),
      );
    }
    if (hangard && alive(hangard.child)) {
      hangard.child.kill('SIGTERM');
      let timer;
      const stopped = await Promise.race([
        hangard.exited.then(() => true),
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(false), 15_000);
        }),
      ]);
      clearTimeout(timer);
      if (!stopped) {
        log('bench: cleanup: hangard did not stop within 15 s after SIGTERM; killing it');
        hangard.child.kill('SIGKILL');
        await hangard.exited;
      }
    }
    apiAgent.destroy();
    cleanupSync();
  })();
  return cleaning;
}

let swept = false;
/** Removes what is left, synchronously (it also runs from the exit handler). Only this run's things. */
function cleanupSync() {
  if (swept) return;
  swept = true;
  for (const helper of created.helpers) helper.child.kill('SIGKILL');
  for (const child of created.children) if (alive(child)) child.kill('SIGKILL');

  // hangard stops its registry on SIGTERM; after a SIGKILL the registry would keep running.
  const registryPid = Number(readText(join(dataDir, 'registry/registry.pid')).trim());
  if (registryPid > 0 && readText(`/proc/${registryPid}/cmdline`).includes(dataDir)) {
    try {
      process.kill(registryPid, 'SIGKILL');
    } catch {}
  }

  // Containers: hangard's (if a destroy did not happen) and the floor's.
  for (const stateRoot of [join(dataDir, 'oci-state'), floorState]) {
    if (!existsSync(stateRoot)) continue;
    const listed = runSync(ociBinary, ['--root', stateRoot, 'list', '--format', 'json']);
    let ids = [];
    try {
      ids = (JSON.parse(listed.stdout || '[]') ?? []).map((c) => c.id);
    } catch {}
    if (stateRoot === floorState) ids = [...new Set([...ids, ...created.floorContainers])];
    for (const id of ids) runSync(ociBinary, ['--root', stateRoot, 'delete', '--force', id]);
  }

  // Processes of this run that no runtime lists (a shim or a `crun run` caught mid-create when hangard
  // died, and what they started): those whose command line names this run's temp dir, and those in this
  // run's cgroups (machines' and the floor's). Nothing else on the host matches either.
  const machineIds = existsSync(join(dataDir, 'machines')) ? readdirSync(join(dataDir, 'machines')) : [];
  const hierarchies = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? ['/sys/fs/cgroup']
    : readdirSync('/sys/fs/cgroup').map((name) => join('/sys/fs/cgroup', name));
  const cgroups = [
    ...machineIds.flatMap((id) => [`/hangar/${id}/ctr`, `/hangar/${id}`]),
    ...created.floorCgroups,
  ];
  const ours = () => {
    const pids = new Set();
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
      if (readText(`/proc/${entry}/cmdline`).includes(tempDir)) pids.add(Number(entry));
    }
    for (const hierarchy of hierarchies) {
      for (const path of cgroups) {
        for (const pid of readText(join(hierarchy, path, 'cgroup.procs')).split('\n')) {
          if (Number(pid) > 0 && Number(pid) !== process.pid) pids.add(Number(pid));
        }
      }
    }
    return pids;
  };
  for (let round = 0; round < 20; round++) {
    const pids = ours();
    if (pids.size === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    sleepSync(100);
  }

  // Mounts under the temp dir (machine root filesystems), deepest first.
  const mounts = readText('/proc/mounts')
    .split('\n')
    .map((line) => line.split(' ')[1])
    .filter((point) => point?.startsWith(`${tempDir}/`))
    .sort((a, b) => b.length - a.length);
  for (const point of mounts) {
    if (runSync('umount', [point]).code !== 0) runSync('umount', ['-l', point]);
  }

  // Network namespaces and cgroups: hangard's machines (named after their ids) and the floor's.
  const namespaces = new Set(
    runSync('ip', ['netns', 'list'])
      .stdout.split('\n')
      .map((l) => l.split(' ')[0]),
  );
  for (const name of [...machineIds.map((id) => `hangar-${id}`), ...created.floorNetns]) {
    if (namespaces.has(name)) runSync('ip', ['netns', 'delete', name]);
  }
  for (const hierarchy of hierarchies) {
    for (const path of cgroups) {
      try {
        rmdirSync(join(hierarchy, path));
      } catch {}
    }
  }
  try {
    rmSync(tempDir, { recursive: true, force: true, maxRetries: 3 });
  } catch (error) {
    process.stderr.write(`bench: cleanup: could not remove ${tempDir}: ${error.message}\n`);
  }

  // Say so if anything of this run is still there (other hangards on the host have their own hangar-*).
  const ourNamespaces = new Set([...machineIds.map((id) => `hangar-${id}`), ...created.floorNetns]);
  const left = [
    ...runSync('ip', ['netns', 'list'])
      .stdout.split('\n')
      .map((line) => line.split(' ')[0])
      .filter((name) => ourNamespaces.has(name))
      .map((name) => `netns ${name}`),
    ...readText('/proc/mounts')
      .split('\n')
      .map((line) => line.split(' ')[1])
      .filter((point) => point?.startsWith(`${tempDir}/`))
      .map((point) => `mount ${point}`),
    ...(existsSync(tempDir) ? [`directory ${tempDir}`] : []),
  ];
  if (left.length > 0) process.stderr.write(`bench: cleanup: left behind: ${left.join(', ')}\n`);
}

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function readText(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

process.on('exit', cleanupSync);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (aborted) {
      process.stderr.write(`\nbench: ${signal} again, removing what is left without the API\n`);
      cleanupSync();
      process.exit(130);
    }
    aborted = true;
    process.stderr.write(
      `\nbench: ${signal}, cleaning up (machines through the API first; again to force)\n`,
    );
    setTimeout(() => {
      cleanupSync();
      process.exit(130);
    }, 60_000).unref();
    void cleanup().finally(() => process.exit(130));
  });
}

// ---- the run ----------------------------------------------------------------------------------------

async function main() {
  await preflight();
  const code = serverCode(options.daemon);
  const host = `${cpus().length}× ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}, ${process.platform}`;
  log(`bench: ${host}; ${options.runs} runs per operation, data in ${tempDir}`);
  mkdirSync(floorDir, { mode: 0o711 });

  const detection = await detectRuntime(code);
  const choice = detection.choice;
  ociBinary = choice.binary;
  const runtime = `${choice.binary}${choice.hideUnifiedCgroup ? ' (cgroup2 hidden in a private mount namespace)' : ''}`;
  log(`bench: OCI runtime (hangard's detect.ts): ${runtime}`);

  const { registry } = await startHangard(code);
  log(
    `bench: hangard (${code.kind}) on ${created.target.host}:${created.target.port}, registry on ${registry}`,
  );
  // The app first: Hangar's registry keeps images in the space of an app that exists.
  await api('POST', '/v1/apps', { app_name: APP, org_slug: 'personal' });
  const built = now();
  const { reference, layoutImage } = await buildImage(registry);
  log(`bench: image ${reference} built and pushed in ${(now() - built).toFixed(0)} ms`);

  // Warm-up, not recorded: the first create pulls and unpacks the image; both sides' code paths warm up.
  let mapping;
  const warm = {};
  await hangardCycle(reference, 'warm', warm, (id) => {
    mapping = machineMapping(id);
  });
  const coldCreateMs = warm.createToStarted[0];
  log(`bench: warm-up cycle done (first create with image pull + unpack: ${coldCreateMs.toFixed(0)} ms)`);
  const rootfs = await setupFloor(layoutImage, mapping);
  await floorCycle(choice, rootfs, mapping, 'warm', {});

  const hangard = {};
  const floor = {};
  for (let i = 0; i < options.runs; i++) {
    await hangardCycle(reference, String(i), hangard);
    await floorCycle(choice, rootfs, mapping, String(i), floor);
    if (!aborted && !options.json && ((i + 1) % 5 === 0 || i + 1 === options.runs))
      log(`bench: ${i + 1}/${options.runs} cycles`);
  }

  const stats = (samples) => Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)]));
  const h = stats(hangard);
  const f = stats(floor);
  const startLimit = TARGET_START_RATIO * f.startToAnswer.median;
  const report = {
    host,
    runtime: { ...choice, description: runtime },
    daemon: code.kind,
    runs: options.runs,
    coldCreateMs,
    hangard: h,
    floor: f,
    ratios: Object.fromEntries(Object.keys(h).map((k) => [k, f[k] ? h[k].median / f[k].median : null])),
    targets: {
      startAfterStop: {
        rule: `median start-after-stop → first answer ≤ ${TARGET_START_RATIO}× the floor's`,
        hangardMs: h.startToAnswer.median,
        limitMs: startLimit,
        pass: h.startToAnswer.median <= startLimit,
      },
      resume: {
        rule: `median resume-after-suspend → first answer ≤ ${TARGET_RESUME_MS} ms`,
        hangardMs: h.resumeToAnswer.median,
        limitMs: TARGET_RESUME_MS,
        pass: h.resumeToAnswer.median <= TARGET_RESUME_MS,
      },
    },
    samples: { hangard, floor },
  };
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(table(report));
}

function table({ hangard: h, floor: f, targets, runs, coldCreateMs, runtime, daemon }) {
  const ms = (v) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(1));
  const verdict = (t) => (t.pass ? 'PASS' : 'MISS');
  const rows = [
    ['create → started', 'createToStarted', 'netns add + lo up + run -d returns'],
    ['  POST create returns', 'createCall', ''],
    [
      'start after stop → first answer',
      'startToAnswer',
      'run -d → first answer',
      `≤${TARGET_START_RATIO}× floor: ${verdict(targets.startAfterStop)}`,
    ],
    ['  POST start returns', 'startCall', 'run -d returns'],
    ['  from its return to the answer', 'startAfterReturn', 'from its return'],
    [
      'resume after suspend → first answer',
      'resumeToAnswer',
      'resume → first answer',
      `≤${TARGET_RESUME_MS} ms: ${verdict(targets.resume)}`,
    ],
    ['  POST start (resume) returns', 'resumeCall', 'resume returns'],
    ['  from its return to the answer', 'resumeAfterReturn', 'from its return'],
    ['suspend (POST suspend)', 'suspend', 'pause'],
    ['stop (POST stop, SIGTERM)', 'stop', 'kill KILL → exited → delete'],
    ['destroy (DELETE force, stopped)', 'destroy', 'ip netns delete'],
  ];
  const header = [
    'operation',
    'median',
    'p90',
    'min',
    'floor: the same with the bare runtime',
    'median',
    'p90',
    'min',
    'ratio',
    'target',
  ];
  const lines = rows.map(([name, key, floorName, target = '']) => {
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
      b && a.median > 0 && b.median > 0 ? `${(a.median / b.median).toFixed(1)}×` : '',
      target,
    ];
  });
  const widths = header.map((head, i) => Math.max(head.length, ...lines.map((l) => l[i].length)));
  const left = new Set([0, 4, 9]);
  const format = (cells) =>
    cells
      .map((c, i) => (left.has(i) ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  const s = targets.startAfterStop;
  const r = targets.resume;
  return [
    '',
    `hangard (${daemon}) vs the bare runtime, ${runtime.description}; ms, ${runs} runs each (stop: ${h.stop.n} samples, two per cycle)`,
    '',
    format(header),
    format(widths.map((w) => '-'.repeat(w))),
    ...lines.map(format),
    '',
    `target start after stop → first answer within ${TARGET_START_RATIO}× the bare runtime: ` +
      `${ms(s.hangardMs)} ms vs ${TARGET_START_RATIO} × ${ms(f.startToAnswer.median)} = ${ms(s.limitMs)} ms → ${verdict(s)}`,
    `target resume after suspend → first answer within ${TARGET_RESUME_MS} ms: ${ms(r.hangardMs)} ms → ${verdict(r)}`,
    `where start goes (medians): POST start ${ms(h.startCall.median)} ms (bare run -d ${ms(f.startCall.median)} ms), ` +
      `then ${ms(h.startAfterReturn.median)} ms to the first answer (bare ${ms(f.startAfterReturn.median)} ms)`,
    'a negative "from its return to the answer" means the machine answered before the API call returned.',
    `the first create of the run (image pull + unpack included, not in the table) took ${ms(coldCreateMs)} ms`,
    '',
  ].join('\n');
}

try {
  await main();
} catch (error) {
  if (!aborted) {
    process.stderr.write(`bench: ${error instanceof Error ? error.stack : error}\n`);
    process.exitCode = 1;
  }
} finally {
  if (!aborted) await cleanup();
}

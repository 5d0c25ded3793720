// What the benches that run real machines share (lifecycle, wake, proxy, soak): a hangard child with its
// runtime (and for wake, proxy and soak its private networks and proxy on), the Machines API, a one-layer
// busybox httpd image pushed to an app's space, the floor's bare OCI runtime, probe helpers inside network
// namespaces, and a cleanup that removes everything of the run on exit, on an error and on Ctrl-C.
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
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { freePort } from './server.mjs';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** A cold start through tsx on a busy 2-core host takes seconds; this bounds a hung one. */
const READY_TIMEOUT_MS = 60_000;
const API_TIMEOUT_MS = 70_000;
const TOOL_TIMEOUT_MS = 30_000;
const HELPER_READY_TIMEOUT_MS = 15_000;
/** The image's command: busybox httpd in the foreground, serving /www on 8080 (on `::`, all families). */
export const HTTPD_CMD = ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'];
export const HTTP_PORT = 8080;
const APPLETS = ['sh', 'httpd', 'cat', 'echo', 'sleep', 'ls'];

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** CLOCK_MONOTONIC in ms: the probe helpers report the same clock, so their stamps compare with ours. */
export const now = () => Number(process.hrtime.bigint()) / 1e6;
const alive = (child) => child.exitCode === null && child.signalCode === null;

/** Adds a sample under `key`. */
export const record = (samples, key, value) => {
  samples[key] ??= [];
  samples[key].push(value);
};

/** summarize() of each key's samples. */
export const summarizeAll = (samples) =>
  Object.fromEntries(Object.entries(samples).map(([key, values]) => [key, summarize(values)]));

export function summarize(values) {
  if (!values || values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  return { median, p90: at(0.9), p99: at(0.99), min: sorted[0], max: sorted.at(-1), n: sorted.length };
}

/** Runs a program with an argument array; resolves with its status and output whatever the status. */
export function run(file, args, { timeoutMs = TOOL_TIMEOUT_MS, input = undefined } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
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
    if (input !== undefined) child.stdin?.end(input);
  });
}

export async function runChecked(file, args, opts) {
  const result = await run(file, args, opts);
  if (result.code !== 0) {
    const detail = (result.stderr || result.stdout).trim().split('\n').slice(-3).join(' | ');
    throw new Error(`${file} ${args.join(' ')} failed (exit ${result.code}): ${detail}`);
  }
  return result.stdout;
}

/** Synchronous, for cleanup paths that must work from an exit handler too. */
export function runSync(file, args, timeout = 15_000) {
  const result = spawnSync(file, args, { encoding: 'utf8', timeout });
  return { code: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

function readText(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Exits with a one-line error unless this runs as root on Linux; a machine bench checks it after its
 * flags (so that --help works for anyone) and before anything else (enterSandbox's unshare needs it too).
 */
export function exitUnlessRoot() {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    process.stderr.write('bench: run as root on Linux (machines are OCI containers with namespaces)\n');
    process.exit(2);
  }
}

/**
 * The bench runs in a network and mount namespace of its own, made when it starts: hangard's private
 * networks (bridges, nftables tables, the resolver address, its host lock under /run/hangar), the
 * machines' namespace pins (/run/netns, /run/hangar/userns), the proxy, the peers and the load all live
 * there, on its own loopback. Nothing of the host's networking is touched (a hangard or a test running
 * beside the bench keeps its own), and whatever the run leaves in there goes with its last process. /sys is
 * a sysfs of the new network namespace (hangard reads links there), with the host's cgroup mounts moved
 * under it.
 */
const SANDBOX_SCRIPT = [
  'set -e',
  'ip link set lo up',
  'mkdir -p /run/hangar /run/netns',
  'mount -t tmpfs -o mode=0755 hangar-bench /run/hangar',
  'mount -t tmpfs -o mode=0755 hangar-bench /run/netns',
  'cgroups=$(mktemp -d)',
  'mount --rbind /sys/fs/cgroup "$cgroups"',
  'mount -t sysfs sysfs /sys',
  'mount --move "$cgroups" /sys/fs/cgroup',
  'rmdir "$cgroups"',
  'exec "$@"',
].join('\n');
const SANDBOX_ENV = 'HANGAR_BENCH_SANDBOX';

/**
 * Runs this bench again inside its own namespaces (see SANDBOX_SCRIPT) and exits with its status; returns
 * only in the run inside. Signals reach the inner run, which cleans up.
 */
export async function enterSandbox() {
  if (process.env[SANDBOX_ENV] === '1') return;
  const child = spawn(
    'unshare',
    [
      '--mount',
      '--net',
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      SANDBOX_SCRIPT,
      'bench-sandbox',
      process.execPath,
      ...process.execArgv,
      ...process.argv.slice(1),
    ],
    { stdio: 'inherit', env: { ...process.env, [SANDBOX_ENV]: '1' } },
  );
  for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
    process.on(signal, () => {
      if (alive(child)) child.kill(signal);
    });
  }
  const status = await new Promise((resolve) => {
    child.once('error', (error) => {
      process.stderr.write(`bench: could not make the bench's namespaces: ${error.message}\n`);
      resolve(1);
    });
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + 15 : 1)));
  });
  process.exit(status);
}

/**
 * One run's host: its temp dir, its hangard, its floor containers and namespaces, and the cleanup of all
 * of them. `name` names the temp dir (`hangar-<name>-*`) and the floor's containers. `behindProxy: false`
 * runs hangard with its runtime only: the proxy off and the network mode left to hangard's own default (or
 * HANGAR_NETWORK), for a bench that stays in the host's namespaces and reaches machines from inside them.
 */
export class MachineHost {
  constructor({ name, quiet = false, behindProxy = true }) {
    this.name = name;
    this.quiet = quiet;
    this.behindProxy = behindProxy;
    this.tempDir = mkdtempSync(join(tmpdir(), `hangar-${name}-`));
    // Root in a machine is an unprivileged host uid: it must be able to pass through to the rootfs below.
    chmodSync(this.tempDir, 0o711);
    this.dataDir = join(this.tempDir, 'hangar-data');
    this.floorDir = join(this.tempDir, 'floor');
    this.floorState = join(this.floorDir, 'state');
    this.tag = `h${name.slice(0, 2)}${process.pid}`;
    this.hangard = undefined;
    this.target = undefined;
    this.helpers = new Set();
    this.children = new Set();
    this.floorContainers = new Set();
    this.floorNetns = new Set();
    this.floorCgroups = new Set();
    this.apps = new Set();
    this.ociBinary = 'crun';
    this.aborted = false;
    this.apiAgent = new Agent({ keepAlive: true, maxSockets: 8 });
    this.extraCleanup = [];
    /** @type {Promise<void> | undefined} */
    this.cleaning = undefined;
    this.swept = false;
    this.#installHandlers();
  }

  log(text) {
    if (!this.quiet) process.stderr.write(`${text}\n`);
  }

  /** The tools a run needs (root is checked before: exitUnlessRoot). */
  preflight(extraTools = []) {
    const missing = [];
    for (const tool of [
      'umoci',
      'skopeo',
      'ip',
      'unshare',
      'mount',
      'docker-registry',
      ...(this.behindProxy ? ['nft'] : []),
      ...extraTools,
    ]) {
      if (runSync('sh', ['-c', 'command -v "$0"', tool]).code !== 0) missing.push(tool);
    }
    if (!existsSync('/bin/busybox')) missing.push('/bin/busybox (busybox-static)');
    if (missing.length > 0) throw new Error(`missing on this host: ${missing.join(', ')}`);
  }

  spawnNode(args, { detached = false, env = {} } = {}) {
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached,
    });
    this.children.add(child);
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
        this.children.delete(child);
        resolve({ code, signal });
      }),
    );
    const closed = new Promise((resolve) => child.once('close', resolve));
    return { child, exited, closed, output: () => output, stdout: () => stdout };
  }

  // ---- the Machines API -----------------------------------------------------------------------------

  send(method, path, body, { timeoutMs = API_TIMEOUT_MS, agent = this.apiAgent } = {}) {
    const target = this.target;
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

  async api(method, path, body, opts) {
    if (this.aborted) throw new Error('aborted');
    const answer = await this.send(method, path, body, opts).catch((error) => {
      throw new Error(`${method} ${path}: ${error.message} (is hangard still running?)`, { cause: error });
    });
    if (answer.status < 200 || answer.status > 299)
      throw new Error(`${method} ${path}: ${answer.status} ${answer.text.slice(0, 500)}`);
    return answer.json;
  }

  async createApp(app) {
    await this.api('POST', '/v1/apps', { app_name: app, org_slug: 'personal' });
    this.apps.add(app);
  }

  /**
   * Starts hangard with a JSON config (the runtime required; with `behindProxy`, private networks and the
   * proxy too) and waits for its token file and a 200 from the API. Inside the bench's own namespaces
   * (enterSandbox), its private networks are its own.
   */
  async startHangard(code, { proxyPort = 0, proxy = {}, extra = {} } = {}) {
    const port = await freePort();
    const registryPort = await freePort();
    const configFile = join(this.tempDir, 'hangard.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        dataDir: this.dataDir,
        listen: { host: '127.0.0.1', port },
        runtime: 'required',
        ...(this.behindProxy ? { network: { mode: 'required', egress: false } } : {}),
        registry: { port: registryPort },
        rateLimits: { enabled: false },
        proxy: this.behindProxy
          ? { mode: 'on', http: `127.0.0.1:${proxyPort}`, domain: 'hangar.localhost', ...proxy }
          : { mode: 'off' },
        logLevel: 'silent',
        ...extra,
      }),
    );
    // Its own process group: a Ctrl-C at the terminal reaches the bench only, which then destroys the
    // machines through the API before it stops hangard.
    const handle = this.spawnNode(
      [...code.nodeArgs, join(code.dir, `main.${code.ext}`), '--config', configFile],
      { detached: true },
    );
    this.hangard = handle;
    this.target = { host: '127.0.0.1', port, token: '', proxyPort };
    const tokenFile = join(this.dataDir, 'personal.token');
    const ready = Date.now() + READY_TIMEOUT_MS;
    const probe = new Agent({ keepAlive: false });
    for (;;) {
      if (!alive(handle.child)) throw new Error(`hangard exited before it was ready:\n${handle.output()}`);
      if (Date.now() > ready)
        throw new Error(`hangard was not ready after ${READY_TIMEOUT_MS / 1000}s:\n${handle.output()}`);
      if (this.aborted) throw new Error('aborted');
      if (!this.target.token && existsSync(tokenFile))
        this.target.token = readFileSync(tokenFile, 'utf8').trim();
      if (this.target.token) {
        const answer = await this.send('GET', '/v1/apps?org_slug=personal', undefined, {
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

  /** The pid of the hangard child (its memory is read from /proc). */
  get hangardPid() {
    return this.hangard?.child.pid;
  }

  // ---- the image: busybox httpd, built with umoci and pushed with skopeo -------------------------------

  /**
   * Builds the image once (an OCI layout in the temp dir): busybox httpd serving /www on 8080, or `cmd`
   * with whatever `prepareRootfs(rootfs)` adds. pushImage() puts it in an app's space.
   */
  async buildImage({ cmd = HTTPD_CMD, prepareRootfs = undefined } = {}) {
    const work = join(this.tempDir, 'image');
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
    writeFileSync(join(rootfs, 'www/index.html'), 'hello from the bench\n');
    mkdirSync(join(rootfs, 'tmp'));
    chmodSync(join(rootfs, 'tmp'), 0o1777);
    await prepareRootfs?.(rootfs);
    await runChecked('umoci', ['repack', '--image', image, bundle]);
    const config = ['config', '--image', image, '--no-history', '--config.workingdir', '/'];
    for (const part of cmd) config.push('--config.cmd', part);
    await runChecked('umoci', config);
    await runChecked('umoci', ['gc', '--layout', layout]);
    rmSync(bundle, { recursive: true, force: true });
    this.layoutImage = image;
    return image;
  }

  /** Pushes the built image into `app`'s space of hangard's registry; returns the reference. */
  async pushImage(registry, app) {
    const reference = `${registry}/${app}/web:bench`;
    await runChecked('skopeo', [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      '--dest-creds',
      `bench:${this.target.token}`,
      `oci:${this.layoutImage}`,
      `docker://${reference}`,
    ]);
    return reference;
  }

  /** The user namespace mapping hangard gave a machine, from the OCI config it wrote for it. */
  machineMapping(machineId) {
    const config = JSON.parse(readFileSync(join(this.dataDir, 'machines', machineId, 'config.json'), 'utf8'));
    const uid = config.linux.uidMappings[0];
    return { hostId: uid.hostID, size: uid.size };
  }

  // ---- the OCI runtime hangard uses (found by its own detect.ts) -------------------------------------

  async detectRuntime(code) {
    mkdirSync(this.floorDir, { recursive: true, mode: 0o711 });
    const script = `
      const { detectOciRuntime } = await import(process.env.BENCH_DETECT_URL);
      const found = await detectOciRuntime(process.env.BENCH_SCRATCH, process.env.BENCH_STATE);
      process.stdout.write(JSON.stringify(found));
    `;
    const handle = this.spawnNode([...code.nodeArgs, '--input-type=module', '-e', script], {
      env: {
        BENCH_DETECT_URL: pathToFileURL(join(code.dir, `runtime/oci/detect.${code.ext}`)).href,
        BENCH_SCRATCH: join(this.floorDir, 'detect'),
        BENCH_STATE: join(this.floorDir, 'detect-state'),
      },
    });
    const timer = setTimeout(() => handle.child.kill('SIGKILL'), READY_TIMEOUT_MS);
    const { code: status } = await handle.exited;
    await handle.closed;
    clearTimeout(timer);
    if (status !== 0) throw new Error(`detecting the OCI runtime failed: ${handle.output().trim()}`);
    const choice = JSON.parse(handle.stdout()).choice;
    this.ociBinary = choice.binary;
    this.choice = choice;
    return choice;
  }

  /** The floor's command lines: the runtime hangard runs, with its cgroup2-hiding wrapper when it uses one. */
  ociCommand(args, { create = false } = {}) {
    const full = ['--root', this.floorState, ...args];
    if (!create || !this.choice.hideUnifiedCgroup) return { file: this.choice.binary, args: full };
    return {
      file: 'unshare',
      args: [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        'umount /sys/fs/cgroup/unified && exec "$0" "$@"',
        this.choice.binary,
        ...full,
      ],
    };
  }

  oci(args) {
    const { file, args: full } = this.ociCommand(args);
    return runChecked(file, full);
  }

  /** The same image, unpacked by hand with the same id mapping hangard's image store uses. */
  async setupFloor(mapping) {
    mkdirSync(this.floorState, { recursive: true });
    const bundle = join(this.floorDir, 'image');
    const ids = `0:${mapping.hostId}:${mapping.size}`;
    await runChecked('umoci', [
      'unpack',
      '--uid-map',
      ids,
      '--gid-map',
      ids,
      '--image',
      this.layoutImage,
      bundle,
    ]);
    chmodSync(bundle, 0o711);
    this.floorRootfs = join(bundle, 'rootfs');
    this.floorMapping = mapping;
  }

  /**
   * A floor container, prepared: its network namespace (`ip netns add` + `lo up`) and a bundle with a
   * minimal config (the image's command as PID 1, user namespace with the machine's mapping, pid, ipc,
   * uts, mount, the network namespace; /proc and a tmpfs /dev).
   */
  async prepareFloor(label) {
    const id = `${this.tag}-${label}`;
    const bundle = join(this.floorDir, id);
    this.floorNetns.add(id);
    this.floorCgroups.add(`/${id}`);
    await runChecked('ip', ['netns', 'add', id]);
    await runChecked('ip', ['-n', id, 'link', 'set', 'lo', 'up']);
    mkdirSync(bundle, { mode: 0o711 });
    const idMap = [{ containerID: 0, hostID: this.floorMapping.hostId, size: this.floorMapping.size }];
    const config = {
      ociVersion: '1.0.2',
      process: {
        terminal: false,
        user: { uid: 0, gid: 0 },
        args: HTTPD_CMD,
        env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
        cwd: '/',
      },
      root: { path: this.floorRootfs, readonly: false },
      hostname: 'floor',
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        {
          destination: '/dev',
          type: 'tmpfs',
          source: 'tmpfs',
          options: ['nosuid', 'mode=755', 'size=1024k'],
        },
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
          { type: 'network', path: `/var/run/netns/${id}` },
        ],
        cgroupsPath: `/${id}`,
      },
    };
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(config));
    return { id, netns: id, bundle };
  }

  /** `run -d`; waits for the runtime's own exit (not its stdio) and returns the container's pid. */
  async floorRun(floor) {
    const { id, bundle } = floor;
    const pidFile = join(bundle, 'pid');
    rmSync(pidFile, { force: true });
    this.floorContainers.add(id);
    const { file, args } = this.ociCommand(['run', '-d', '--pid-file', pidFile, '--bundle', bundle, id], {
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
      const tail = readText(join(bundle, 'log')).trim().split('\n').slice(-3).join(' | ');
      throw new Error(`${this.choice.binary} run -d ${id} failed (exit ${status}): ${tail}`);
    }
    floor.pid = Number(readFileSync(pidFile, 'utf8'));
    return floor.pid;
  }

  /** kill KILL, until the process is gone or a zombie, then delete. */
  async floorStop(floor, timeoutMs = 10_000) {
    await this.oci(['kill', floor.id, 'KILL']);
    const deadline = now() + timeoutMs;
    for (;;) {
      const stat = readText(`/proc/${floor.pid}/stat`);
      if (stat === '' || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') break;
      if (now() > deadline) throw new Error(`floor container pid ${floor.pid} still runs after SIGKILL`);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await this.oci(['delete', floor.id]);
    this.floorContainers.delete(floor.id);
  }

  /** Deletes the floor's network namespace and bundle; returns the ms the namespace's delete took. */
  async removeFloor(floor) {
    const t = now();
    await runChecked('ip', ['netns', 'delete', floor.netns]);
    const ms = now() - t;
    this.floorNetns.delete(floor.netns);
    rmSync(floor.bundle, { recursive: true, force: true });
    return ms;
  }

  // ---- probes: a long-lived helper inside a network namespace -------------------------------------------

  /**
   * Runs in the netns (`ip netns exec NS node -e HELPER`). On `go MS` it connects to 127.0.0.1:8080 and
   * sends `GET /` every ~1 ms until an answer's status line says 200, then prints `ok <CLOCK_MONOTONIC ns>
   * <attempts>`, or `fail ...` after MS. A connection accepted by a frozen listener simply waits: its answer
   * is the first after a resume.
   */
  static HELPER = String.raw`
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

  async startHelper(netns) {
    if (this.aborted) throw new Error('aborted');
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', MachineHost.HELPER], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const helper = { child, netns, waiting: undefined, lines: [], stderr: '' };
    this.helpers.add(helper);
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
      this.helpers.delete(helper);
      helper.waiting?.reject(
        new Error(`the probe helper in ${netns} exited (${code ?? signal}): ${helper.stderr.trim()}`),
      );
      helper.waiting = undefined;
    });
    const first = await this.#nextLine(helper, HELPER_READY_TIMEOUT_MS);
    if (first !== 'ready')
      throw new Error(`the probe helper in ${netns} did not start: ${first} ${helper.stderr}`);
    return helper;
  }

  #nextLine(helper, timeoutMs) {
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

  /** Starts probing now; the promise gives the CLOCK_MONOTONIC ms of the first 200. */
  probeFirstAnswer(helper, what, timeoutMs) {
    helper.child.stdin.write(`go ${timeoutMs}\n`);
    const answer = this.#nextLine(helper, timeoutMs + 5_000).then((line) => {
      const [word, at, attempts] = line.split(' ');
      if (word !== 'ok')
        throw new Error(
          `${what}: no HTTP 200 from 127.0.0.1:${HTTP_PORT} in ${helper.netns} within ${timeoutMs / 1000}s (${line.slice(5)})`,
        );
      return { at: Number(BigInt(at)) / 1e6, attempts: Number(attempts) };
    });
    answer.catch(() => undefined);
    return answer;
  }

  async stopHelper(helper) {
    if (!helper || !alive(helper.child)) return;
    const exited = new Promise((resolve) => helper.child.once('exit', resolve));
    helper.child.kill('SIGKILL');
    await exited;
  }

  // ---- cleanup: machines through the API, then hangard, then whatever is left ----------------------------

  async #destroyMachinesThroughApi() {
    const agent = new Agent({ keepAlive: false });
    try {
      for (const app of this.apps) {
        const list = await this.send('GET', `/v1/apps/${app}/machines`, undefined, {
          agent,
          timeoutMs: 10_000,
        });
        if (list.status !== 200 || !Array.isArray(list.json)) continue;
        for (const machine of list.json) {
          if (machine.state === 'destroyed') continue;
          const answer = await this.send(
            'DELETE',
            `/v1/apps/${app}/machines/${machine.id}?force=true`,
            undefined,
            {
              agent,
              timeoutMs: 20_000,
            },
          );
          if (answer.status !== 200)
            this.log(`bench: cleanup: destroying ${machine.id}: ${answer.status} ${answer.text}`);
        }
      }
    } finally {
      agent.destroy();
    }
  }

  /** Destroys the machines through the API, stops hangard, then removes what is left of this run only. */
  cleanup() {
    this.cleaning ??= (async () => {
      for (const helper of this.helpers) helper.child.kill('SIGKILL');
      for (const step of this.extraCleanup) await Promise.resolve(step()).catch(() => undefined);
      const hangard = this.hangard;
      if (hangard && alive(hangard.child) && this.target?.token) {
        await this.#destroyMachinesThroughApi().catch((error) =>
          this.log(`bench: cleanup: destroying machines through the API failed: ${error.message}`),
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
          this.log('bench: cleanup: hangard did not stop within 15 s after SIGTERM; killing it');
          hangard.child.kill('SIGKILL');
          await hangard.exited;
        }
      }
      this.apiAgent.destroy();
      this.cleanupSync();
    })();
    return this.cleaning;
  }

  /** Removes what is left, synchronously (it also runs from the exit handler). Only this run's things. */
  cleanupSync() {
    if (this.swept) return;
    this.swept = true;
    for (const step of this.extraCleanup) {
      try {
        step();
      } catch {}
    }
    for (const helper of this.helpers) helper.child.kill('SIGKILL');
    for (const child of this.children) if (alive(child)) child.kill('SIGKILL');
    const { dataDir, tempDir, floorState } = this;

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
      const listed = runSync(this.ociBinary, ['--root', stateRoot, 'list', '--format', 'json']);
      let ids = [];
      try {
        ids = (JSON.parse(listed.stdout || '[]') ?? []).map((c) => c.id);
      } catch {}
      if (stateRoot === floorState) ids = [...new Set([...ids, ...this.floorContainers])];
      for (const id of ids) runSync(this.ociBinary, ['--root', stateRoot, 'delete', '--force', id]);
    }

    // Processes of this run that no runtime lists: those whose command line names this run's temp dir,
    // and those in this run's cgroups (machines' and the floor's).
    const machineIds = existsSync(join(dataDir, 'machines')) ? readdirSync(join(dataDir, 'machines')) : [];
    const hierarchies = existsSync('/sys/fs/cgroup/cgroup.controllers')
      ? ['/sys/fs/cgroup']
      : readdirSync('/sys/fs/cgroup').map((name) => join('/sys/fs/cgroup', name));
    const cgroups = [
      ...machineIds.flatMap((id) => [`/hangar/${id}/ctr`, `/hangar/${id}`]),
      ...this.floorCgroups,
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
    const ourNamespaces = new Set([...machineIds.map((id) => `hangar-${id}`), ...this.floorNetns]);
    const listNamespaces = () =>
      runSync('ip', ['netns', 'list'])
        .stdout.split('\n')
        .map((l) => l.split(' ')[0])
        .filter((name) => ourNamespaces.has(name));
    for (const name of listNamespaces()) runSync('ip', ['netns', 'delete', name]);
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
    const left = [
      ...listNamespaces().map((name) => `netns ${name}`),
      ...readText('/proc/mounts')
        .split('\n')
        .map((line) => line.split(' ')[1])
        .filter((point) => point?.startsWith(`${tempDir}/`))
        .map((point) => `mount ${point}`),
      ...(existsSync(tempDir) ? [`directory ${tempDir}`] : []),
    ];
    if (left.length > 0) process.stderr.write(`bench: cleanup: left behind: ${left.join(', ')}\n`);
  }

  #installHandlers() {
    process.on('exit', () => this.cleanupSync());
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
      process.on(signal, () => {
        if (this.aborted) {
          process.stderr.write(`\nbench: ${signal} again, removing what is left without the API\n`);
          this.cleanupSync();
          process.exit(130);
        }
        this.aborted = true;
        process.stderr.write(
          `\nbench: ${signal}, cleaning up (machines through the API first; again to force)\n`,
        );
        setTimeout(() => {
          this.cleanupSync();
          process.exit(130);
        }, 60_000).unref();
        void this.cleanup().finally(() => process.exit(130));
      });
    }
  }

  /** Runs `main(host)`, reports an error, and always cleans up. */
  async runMain(main) {
    try {
      await main(this);
    } catch (error) {
      if (!this.aborted) {
        process.stderr.write(`bench: ${error instanceof Error ? error.stack : error}\n`);
        process.exitCode = 1;
      }
    } finally {
      if (!this.aborted) await this.cleanup();
    }
  }
}

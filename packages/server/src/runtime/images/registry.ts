import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { createServer } from 'node:net';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HangarError } from '../../shared/errors.js';

/**
 * Hangar's own OCI registry, so users can push images to the host that runs them: Debian's
 * `docker-registry` (distribution 2.8) as a child process, storage on the local filesystem, no auth of
 * its own. hangard runs it on a unix socket that only root can open (`registry.sock`) and serves the
 * public registry address itself, as an authenticating proxy (src/registry/); given a `port`, it listens
 * on that loopback TCP port instead, as a plain registry for tests of the image store.
 *
 * Files under `dir` (`<dataDir>/registry`):
 *   config.yml    rewritten at every start (edits are lost); keeps its random http.secret across starts
 *   data/         the registry's storage
 *   registry.sock its socket (without `port`)
 *   registry.log  the registry's stdout and stderr, appended; emptied at start once it exceeds 10 MiB
 *   registry.pid  the pid of the running registry
 *
 * The registry is a plain child: close() stops it. If hangard dies without close() (SIGKILL, crash), the
 * registry keeps running. The next start() finds it through registry.pid and stops it before starting a
 * fresh one, rather than adopting it, so that the running registry always has the config just written
 * (address, secret) and its log goes where this process expects. Pushes in flight during that restart fail
 * and can be retried; the stored images are untouched.
 */
export interface LocalRegistryOptions {
  /** `<dataDir>/registry`. */
  dir: string;
  host?: string;
  /** A loopback TCP port instead of the unix socket (tests of the image store). */
  port?: number;
  /** How long the registry may take to answer `GET /v2/`. */
  readyTimeoutMs?: number;
  /** The registry binary; the default is Debian's. */
  binary?: string;
}

const MAX_LOG_BYTES = 10 * 1024 * 1024;
const STOP_GRACE_MS = 5_000;
const POLL_MS = 20;

export class LocalRegistry {
  readonly dir: string;
  readonly host: string;
  readonly port: number | undefined;
  readonly #readyTimeoutMs: number;
  readonly #binary: string;
  #child: ChildProcess | undefined;
  #exited: Promise<void> | undefined;
  #starting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: LocalRegistryOptions) {
    this.dir = options.dir;
    this.host = options.host ?? '127.0.0.1';
    this.port = options.port;
    this.#readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
    this.#binary = options.binary ?? 'docker-registry';
  }

  /** `host:port`, as image references name this registry when it listens on TCP. */
  get address(): string {
    if (this.port === undefined) throw new TypeError('this registry listens on a unix socket, not TCP');
    return `${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /** The root of the registry's storage (distribution's filesystem driver: `repositories/`, `blobs/`). */
  get storageRoot(): string {
    return join(this.dir, 'data', 'docker', 'registry', 'v2');
  }

  /** The unix socket the registry listens on, or undefined when it listens on TCP. */
  get socket(): string | undefined {
    return this.port === undefined ? join(this.dir, 'registry.sock') : undefined;
  }

  /** Where it listens, for people: an address or a socket path. */
  get where(): string {
    return this.socket ?? this.address;
  }

  get configFile(): string {
    return join(this.dir, 'config.yml');
  }

  get logFile(): string {
    return join(this.dir, 'registry.log');
  }

  get pidFile(): string {
    return join(this.dir, 'registry.pid');
  }

  /** The registry's pid while it runs. */
  get pid(): number | undefined {
    return this.#child?.exitCode === null && this.#child.signalCode === null ? this.#child.pid : undefined;
  }

  start(): Promise<void> {
    if (this.#closing)
      return Promise.reject(
        new HangarError('unavailable', 'the image registry was closed; create a new one'),
      );
    this.#starting ??= this.#start().catch(async (error: unknown) => {
      await this.#stopChild();
      // A failed start may be retried (after freeing the port, installing the binary…).
      this.#starting = undefined;
      throw error;
    });
    return this.#starting;
  }

  /** SIGTERM, then SIGKILL after 5 s. Safe to call more than once, and before or without start(). */
  close(): Promise<void> {
    this.#closing ??= (this.#starting ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.#stopChild());
    return this.#closing;
  }

  async #start(): Promise<void> {
    await mkdir(join(this.dir, 'data'), { recursive: true, mode: 0o700 });
    await this.#stopLeftover();
    const socket = this.socket;
    // A socket file left by a registry that was killed: listening fails while it exists.
    if (socket !== undefined) await rm(socket, { force: true });
    else await this.#checkPortFree();
    await this.#writeConfig();
    const logStart = await this.#openLog();

    const log = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(this.#binary, ['serve', this.configFile], { stdio: ['ignore', log, log] });
    } finally {
      // The child has its own copy of the descriptor.
      closeSync(log);
    }
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('close', () => resolve()));
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          error.code === 'ENOENT'
            ? new HangarError(
                'runtime_unavailable',
                `cannot start the image registry: ${this.#binary} is not installed ` +
                  "(install Debian's docker-registry package: apt-get install docker-registry)",
              )
            : new HangarError(
                'runtime_unavailable',
                `cannot start the image registry (${this.#binary}): ${error.message}`,
              ),
        ),
      );
    });
    await writeAtomically(this.pidFile, `${child.pid}\n`);
    await this.#waitReady(child, logStart);
  }

  async #waitReady(child: ChildProcess, logStart: number): Promise<void> {
    const url = `http://${this.where}/v2/`;
    const deadline = Date.now() + this.#readyTimeoutMs;
    let last = 'no answer yet';
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new HangarError(
          'runtime_unavailable',
          `the image registry exited during start (${child.exitCode ?? child.signalCode}); ` +
            `see ${this.logFile}: ${await this.#logTail(logStart)}`,
        );
      }
      try {
        const status = await this.#ping();
        if (status === 200) return;
        last = `GET /v2/ answered ${status}`;
      } catch (error) {
        last = error instanceof Error ? error.message : String(error);
      }
      await sleep(POLL_MS);
    }
    throw new HangarError(
      'runtime_unavailable',
      `the image registry did not answer on ${url} within ${this.#readyTimeoutMs / 1000} s (${last}); ` +
        `see ${this.logFile}: ${await this.#logTail(logStart)}`,
    );
  }

  /** A registry left running by a hangard that died without close(): stop it (see the class comment). */
  async #stopLeftover(): Promise<void> {
    let pid: number;
    try {
      pid = Number.parseInt(await readFile(this.pidFile, 'utf8'), 10);
    } catch {
      return;
    }
    if (Number.isInteger(pid) && pid > 0) {
      if (await this.#isOurRegistry(pid)) {
        signalPid(pid, 'SIGTERM');
        if (!(await waitForExit(pid, STOP_GRACE_MS))) {
          signalPid(pid, 'SIGKILL');
          await waitForExit(pid, STOP_GRACE_MS);
        }
      } else if (await isExiting(pid)) {
        // A registry killed a moment ago has already lost its command line (so it is not recognized
        // above) while its threads may still hold the listening port: wait until it is gone.
        await waitForExit(pid, STOP_GRACE_MS);
      }
    }
    await rm(this.pidFile, { force: true });
  }

  /** Checks the command line too, because after a reboot the pid may belong to anything. */
  async #isOurRegistry(pid: number): Promise<boolean> {
    if (!(await isAlive(pid))) return false;
    try {
      const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
      return (
        basename(argv[0] ?? '') === basename(this.#binary) &&
        argv[1] === 'serve' &&
        argv[2] === this.configFile
      );
    } catch {
      return false;
    }
  }

  async #checkPortFree(): Promise<void> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          new HangarError(
            'runtime_unavailable',
            error.code === 'EADDRINUSE'
              ? `cannot start the image registry: ${this.address} is already in use by another process ` +
                  '(stop that process or configure another registry port)'
              : `cannot start the image registry on ${this.address}: ${error.message}`,
          ),
        ),
      );
      server.listen({ host: this.host, port: this.port, exclusive: true }, () =>
        server.close(() => resolve()),
      );
    });
  }

  async #writeConfig(): Promise<void> {
    let secret: string | undefined;
    try {
      secret = /^\s+secret:\s*"([0-9a-f]{64})"\s*$/m.exec(await readFile(this.configFile, 'utf8'))?.[1];
    } catch {
      // First start: no config yet.
    }
    // The secret signs upload state; keeping it means uploads survive a registry restart.
    secret ??= randomBytes(32).toString('hex');
    const q = (value: string) => JSON.stringify(value);
    const yaml = [
      '# Written by hangard at every start of its image registry; edits here are overwritten.',
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${q(join(this.dir, 'data'))}`,
      '  delete:',
      '    enabled: true',
      '  cache:',
      '    blobdescriptor: inmemory',
      'http:',
      ...(this.socket === undefined ? [] : ['  net: unix']),
      `  addr: ${q(this.socket ?? this.address)}`,
      // Upload locations relative to the request, so they stay right behind hangard's proxy.
      '  relativeurls: true',
      `  secret: ${q(secret)}`,
      '  headers:',
      '    X-Content-Type-Options: [nosniff]',
      '',
    ].join('\n');
    await writeAtomically(this.configFile, yaml, 0o600);
  }

  /** The status of `GET /v2/`, over the socket or TCP. */
  #ping(): Promise<number> {
    return new Promise((resolve, reject) => {
      const target =
        this.socket === undefined ? { host: this.host, port: this.port } : { socketPath: this.socket };
      const request = httpGet({ ...target, path: '/v2/', timeout: 1_000 }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.once('timeout', () => request.destroy(new HangarError('deadline_exceeded', 'no answer')));
      request.once('error', reject);
    });
  }

  /** Empties an oversized log, and returns the offset this run's output starts at. */
  async #openLog(): Promise<number> {
    try {
      const { size } = await stat(this.logFile);
      if (size <= MAX_LOG_BYTES) return size;
      await truncate(this.logFile, 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    return 0;
  }

  /** The last lines this run wrote to the log, to put the registry's own words into an error. */
  async #logTail(from: number): Promise<string> {
    try {
      const file = await open(this.logFile, 'r');
      try {
        const { size } = await file.stat();
        const start = Math.max(from, size - 4096);
        const buffer = Buffer.alloc(size - start);
        await file.read(buffer, 0, buffer.length, start);
        const lines = buffer.toString('utf8').trim().split('\n').slice(-5).join(' | ');
        return lines || '(the log is empty)';
      } finally {
        await file.close();
      }
    } catch {
      return '(no log)';
    }
  }

  async #stopChild(): Promise<void> {
    const child = this.#child;
    // No pid: it never started (e.g. the binary is missing), so there is nothing to wait for.
    if (child?.pid === undefined || this.#exited === undefined) return;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const stopped = await Promise.race([this.#exited.then(() => true), sleep(STOP_GRACE_MS, false)]);
      if (!stopped) child.kill('SIGKILL');
    }
    await this.#exited;
    try {
      if (Number.parseInt(await readFile(this.pidFile, 'utf8'), 10) === child.pid) await rm(this.pidFile);
    } catch {
      // Already gone.
    }
  }
}

async function writeAtomically(path: string, content: string, mode = 0o644): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, content, { mode });
  await rename(tmp, path);
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * A zombie (exited, not yet reaped by its new parent) counts as dead once its last thread is gone: the
 * registry is multi-threaded (Go), and its leader shows as a zombie while other threads are still
 * exiting, holding its files and its listening port.
 */
async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state !== 'Z' && state !== 'X') return true;
    return (await readdir(`/proc/${pid}/task`)).length > 1;
  } catch {
    return false;
  }
}

/** linux/sched.h: set on a process from the moment it begins to exit. */
const PF_EXITING = 0x4;

/** Whether the process is on its way out: its memory is released before its threads close its files. */
async function isExiting(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // After the command name: state ppid pgrp session tty_nr tpgid flags …
    const flags = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[6]);
    return Number.isInteger(flags) && (flags & PF_EXITING) !== 0;
  } catch {
    return false;
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await isAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(POLL_MS);
  }
  return true;
}

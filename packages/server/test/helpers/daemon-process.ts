import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type ApiResponse, type CallOptions, callApi } from './hangard.js';
import { freePort } from './ports.js';

/**
 * Runs hangard as production does: a child `node --import tsx packages/server/src/main.ts` on a data
 * directory, so tests can SIGKILL it and start it again on the same directory. One harness per test;
 * its t.after kills every child it started (waiting for them to exit), then removes its directories,
 * whether the test passed or not.
 */

/** This file is packages/server/test/helpers/daemon-process.ts. */
export const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const MAIN = join(REPO_ROOT, 'packages/server/src/main.ts');
/** A cold tsx start on a busy 2-core machine takes a few seconds; this bounds a hung start. */
const READY_TIMEOUT_MS = 60_000;
const POLL_MS = 50;

export interface DaemonProcess {
  dataDir: string;
  url: string;
  /** The `personal` org token (read from the token file). */
  token: string;
  child: ChildProcess;
  /** Resolves when the process has exited (never rejects). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything the process wrote to stdout and stderr so far. */
  output: () => string;
  /** A Machines API call with the org token, like TestHangard.call. */
  call: (method: string, path: string, body?: unknown, options?: CallOptions) => Promise<ApiResponse>;
  /** SIGKILL: the process gets no chance to flush or close anything. Waits for the exit. */
  kill: () => Promise<void>;
  /** SIGTERM: hangard's clean shutdown (closes the API and the database). Waits for the exit. */
  stop: () => Promise<void>;
}

export interface DaemonHarness {
  /** A fresh private temporary directory, removed after the test. */
  makeDataDir: () => string;
  /**
   * Starts hangard on `dataDir` (a new free port each time) and waits until the API answers. `args` go
   * on its command line after the data dir and listen address (e.g. `--config FILE`).
   */
  start: (dataDir: string, env?: Record<string, string>, args?: string[]) => Promise<DaemonProcess>;
}

export function daemonHarness(t: TestContext): DaemonHarness {
  const children = new Set<DaemonProcess>();
  const dirs: string[] = [];
  t.after(async () => {
    for (const daemon of children) {
      if (daemon.child.exitCode === null && daemon.child.signalCode === null) daemon.child.kill('SIGKILL');
      await daemon.exited;
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  return {
    makeDataDir: () => {
      const dir = mkdtempSync(join(tmpdir(), 'hangar-daemon-'));
      dirs.push(dir);
      return dir;
    },
    start: async (dataDir, env = {}, args = []) => {
      const daemon = await spawnDaemon(dataDir, env, args, (d) => children.add(d));
      return daemon;
    },
  };
}

async function spawnDaemon(
  dataDir: string,
  env: Record<string, string>,
  args: string[],
  register: (daemon: DaemonProcess) => void,
): Promise<DaemonProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // 1. Start the child exactly as production would, with its output captured for failure messages.
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', MAIN, '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, ...args],
    {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        HANGAR_LOG_LEVEL: 'silent',
        HANGAR_RATE_LIMITS: 'off',
        // A SIGKILLed daemon could not remove bridges and rules: only the network tests turn them on.
        HANGAR_NETWORK: 'off',
        // A runtime starts the image registry on the default port, one port for every daemon of every
        // test file running at once: the tests that run machines ask for it with their own registry port.
        HANGAR_RUNTIME: 'off',
        // The proxy's public port is one per host.
        HANGAR_PROXY: 'off',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  let token = '';
  const call = (method: string, path: string, body?: unknown, options: CallOptions = {}) =>
    callApi(url, token, method, path, body, options);
  const daemon: DaemonProcess = {
    dataDir,
    url,
    get token() {
      return token;
    },
    child,
    exited,
    output: () => output,
    call,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const { code, signal } = await exited;
      if (code !== 0)
        throw new Error(`hangard did not shut down cleanly (code ${code}, signal ${signal}):\n${output}`);
    },
  };
  register(daemon);

  // 2. Race readiness against the child exiting, so a failed start reports its output instead of hanging.
  let exitedEarly = false;
  void exited.then(() => {
    exitedEarly = true;
  });
  const tokenFile = join(dataDir, 'personal.token');
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exitedEarly) throw new Error(`hangard exited before it was ready:\n${output}`);
    if (Date.now() > deadline) {
      throw new Error(`hangard was not ready after ${READY_TIMEOUT_MS / 1000}s:\n${output}`);
    }
    if (token === '' && existsSync(tokenFile)) token = readFileSync(tokenFile, 'utf8').trim();
    if (token !== '') {
      const answered = await call('GET', '/v1/apps?org_slug=personal').catch(() => undefined);
      if (answered?.status === 200) return daemon;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

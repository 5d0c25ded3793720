import { closeSync, mkdirSync, openSync, readFileSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Loopback ports for servers a test starts a little later (a registry, a hangard child process).
 *
 * Binding port 0, reading the number and closing leaves a gap before the real server binds, and in that
 * gap the kernel may hand the same number to someone else: as the local port of any outgoing connection,
 * or to another bind(0), for instance in the test file running in parallel. So the ports here come from
 * just below the kernel's ephemeral range (which connect() and bind(0) never use), and each one is claimed
 * with a lock file holding this process's pid, so that two test processes never pick the same port. The
 * claims are released when the process exits.
 */

const LOCK_DIR = join(tmpdir(), 'hangar-test-ports');
const RANGE_SIZE = 8_000;
const claimed = new Set<number>();

/** [low, high] of the ports this helper hands out: below the ephemeral range, or above it if that is too low. */
function candidateRange(): [number, number] {
  let low = 32_768;
  let high = 60_999;
  try {
    [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number) as [number, number];
  } catch {
    // Not Linux: keep the kernel's usual defaults.
  }
  if (low - RANGE_SIZE >= 10_000) return [low - RANGE_SIZE, low - 1];
  return [high + 1, Math.min(65_535, high + RANGE_SIZE)];
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the lock file of `port`, or takes over one left by a test process that died; false if it is in use. */
function claim(port: number): boolean {
  const path = join(LOCK_DIR, String(port));
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      if (claimed.size === 0) process.once('exit', releaseAll);
      claimed.add(port);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        // The last other holder removed the directory as it exited.
        mkdirSync(LOCK_DIR, { recursive: true, mode: 0o700 });
        continue;
      }
      if (code !== 'EEXIST') throw error;
    }
    let owner = Number.NaN;
    try {
      owner = Number.parseInt(readFileSync(path, 'utf8'), 10);
    } catch {
      // Released between the two calls: try again.
      continue;
    }
    // A lock being written has no pid yet; one whose process is alive is taken.
    if (!Number.isInteger(owner) || isRunning(owner)) return false;
    try {
      unlinkSync(path);
    } catch {
      // Another process took it over first; the next openSync decides.
    }
  }
  return false;
}

function release(port: number): void {
  claimed.delete(port);
  try {
    unlinkSync(join(LOCK_DIR, String(port)));
  } catch {
    // Already gone.
  }
}

function releaseAll(): void {
  for (const port of [...claimed]) release(port);
  try {
    rmdirSync(LOCK_DIR);
  } catch {
    // Other test processes still hold ports.
  }
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A loopback port nobody listens on and no other test process will be given, until this process exits. */
export async function freePort(): Promise<number> {
  const [low, high] = candidateRange();
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (claimed.has(port) || !claim(port)) continue;
    if (await canListen(port)) return port;
    release(port);
  }
  throw new Error(`no free loopback port in ${low}-${high}`);
}

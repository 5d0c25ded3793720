/**
 * One owner of a host's Hangar networking at a time. The plumbing is host-wide (the `hangar` nftables
 * tables, `hgn…` bridges named by network id, fdaa::3 on the loopback), so a second hangard on the same
 * host would rewrite the first one's rules and, reconciling from its own store, delete its bridges.
 *
 * The lock is a file linked into place exclusively, holding the owner's pid and a token. A lock whose pid is no
 * longer alive is stale (its owner crashed) and is taken over.
 */
import { randomUUID } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export const DEFAULT_HOST_LOCK_PATH = '/run/hangar/network.lock';

export interface HostLock {
  release(): void;
}

export interface HostLockOptions {
  path?: string;
  /** Keep trying this long when another live process holds it (tests share one host); default 0. */
  waitMs?: number;
  /**
   * A lock the caller holds already, kept across several owners in turn (a test that restarts hangard
   * must not let another test take the host in between): used as it is, never released by them.
   */
  held?: HostLock;
}

export class HostLockHeldError extends Error {
  constructor(readonly pid: number) {
    super(
      `another process (pid ${pid}) manages this host's Hangar networks; stop it first, or start this one with network mode "off"`,
    );
    this.name = 'HostLockHeldError';
  }
}

export async function acquireHostNetworkLock(options: HostLockOptions = {}): Promise<HostLock> {
  if (options.held) return { release: () => {} };
  const path = options.path ?? DEFAULT_HOST_LOCK_PATH;
  const deadline = Date.now() + (options.waitMs ?? 0);
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  const token = randomUUID();
  for (;;) {
    try {
      // Written aside and linked into place: the lock appears with its content, never empty.
      const aside = `${path}.${token}`;
      writeFileSync(aside, `${process.pid} ${token}\n`, { mode: 0o644 });
      try {
        linkSync(aside, path);
      } finally {
        rmSync(aside, { force: true });
      }
      return {
        release: () => {
          // Only our own lock: a stale-lock takeover may have replaced it meanwhile.
          const content = (() => {
            try {
              return readFileSync(path, 'utf8');
            } catch {
              return '';
            }
          })();
          if (content.split(' ')[1]?.trim() === token) rmSync(path, { force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = readOwner(path);
    if (owner === undefined || !isAlive(owner)) {
      rmSync(path, { force: true });
      continue;
    }
    if (Date.now() >= deadline) throw new HostLockHeldError(owner);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function readOwner(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined; // released between our attempt and this read: try again
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

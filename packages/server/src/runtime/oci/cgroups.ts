import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Each machine's container lives in the cgroup `hangar/<machine id>/ctr`. The parent `hangar/<machine
 * id>` is Hangar's own and outlives the container (the OCI runtime removes only what it created), so
 * what happened inside can still be read after the container is gone: on cgroup v1 the parent carries
 * the memory limit (its usage peak shows the limit was hit); on v2 its memory.events counts OOM kills of
 * its descendants.
 */
export type CgroupMode = 'v1' | 'v2';
const ROOT = '/sys/fs/cgroup';
const V1_CONTROLLERS_WITH_DIRS = [
  'memory',
  'pids',
  'cpu',
  'cpuacct',
  'cpuset',
  'devices',
  'freezer',
  'blkio',
  'systemd',
];

/** v2 when /sys/fs/cgroup is itself the unified hierarchy; v1 (legacy or hybrid) otherwise. */
export function detectCgroupMode(): CgroupMode {
  return existsSync(join(ROOT, 'cgroup.controllers')) ? 'v2' : 'v1';
}

export const containerCgroupPath = (machineId: string) => `/hangar/${machineId}/ctr`;

export class MachineCgroups {
  constructor(readonly mode: CgroupMode = detectCgroupMode()) {}

  /**
   * Creates the machine's parent cgroup afresh for a boot (so its counters start at zero); on v1 it
   * holds the memory limit, with swap off.
   */
  async prepare(machineId: string, memoryBytes: number): Promise<void> {
    await this.remove(machineId);
    if (this.mode === 'v2') {
      await mkdir(join(ROOT, 'hangar', machineId), { recursive: true });
      return;
    }
    const dir = join(ROOT, 'memory', 'hangar', machineId);
    await mkdir(dir, { recursive: true });
    // Order matters: memsw must stay >= the memory limit, so lower memsw last and raise it first.
    const limit = String(memoryBytes);
    const memsw = join(dir, 'memory.memsw.limit_in_bytes');
    const hasMemsw = existsSync(memsw);
    if (hasMemsw) await writeFile(memsw, '-1').catch(() => undefined);
    await writeFile(join(dir, 'memory.limit_in_bytes'), limit);
    if (hasMemsw) await writeFile(memsw, limit);
  }

  /**
   * Whether the container was OOM-killed, read after it exited. v2: the parent's hierarchical oom_kill
   * counter grew. v1: the counter died with the container's cgroup, so the answer is the evidence that
   * remains: the main process was SIGKILLed by no one Hangar knows of, while the memory limit was hit.
   */
  async wasOomKilled(machineId: string, killedBySigkill: boolean): Promise<boolean> {
    if (this.mode === 'v1' && !killedBySigkill) return false;
    return (await this.#counter(machineId)) > 0;
  }

  /**
   * Since prepare(): v2 oom_kill events of the subtree, v1 hits of the memory limit. On v1, failcnt alone
   * misses them: memsw (set to the same limit) is charged first and fails first, and recent kernels
   * (seen on 6.18) count no failures on memsw, so memory.failcnt stays 0 through an OOM kill. The usage
   * peak reaching the limit is the evidence that remains.
   */
  async #counter(machineId: string): Promise<number> {
    if (this.mode === 'v2') {
      const text = await readFile(join(ROOT, 'hangar', machineId, 'memory.events'), 'utf8').catch(() => '');
      return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? '0');
    }
    const dir = join(ROOT, 'memory', 'hangar', machineId);
    const read = (name: string) =>
      readFile(join(dir, name), 'utf8').then(
        (text) => Number(text.trim() || '0'),
        () => 0,
      );
    const failcnt = await read('memory.failcnt');
    if (failcnt > 0) return failcnt;
    const limit = await read('memory.limit_in_bytes');
    return limit > 0 && (await read('memory.max_usage_in_bytes')) >= limit ? 1 : 0;
  }

  /** Whether the machine's parent cgroup (the one prepare() makes) is there. */
  exists(machineId: string): boolean {
    return existsSync(
      this.mode === 'v2' ? join(ROOT, 'hangar', machineId) : join(ROOT, 'memory', 'hangar', machineId),
    );
  }

  /**
   * Thaws the machine's frozen container by writing its freezer, as the OCI runtime's `resume` does
   * (it reads the same file for its state), without starting a process. False when there is no such
   * file here: the caller asks the runtime instead.
   */
  async thaw(machineId: string): Promise<boolean> {
    const container = containerCgroupPath(machineId);
    const file =
      this.mode === 'v2'
        ? join(ROOT, container, 'cgroup.freeze')
        : join(ROOT, 'freezer', container, 'freezer.state');
    if (!existsSync(file)) return false;
    await writeFile(file, this.mode === 'v2' ? '0' : 'THAWED');
    return true;
  }

  /** Removes the machine's cgroups in every hierarchy (leaves first); missing ones are fine. */
  async remove(machineId: string): Promise<void> {
    const roots =
      this.mode === 'v2'
        ? [ROOT]
        : [...V1_CONTROLLERS_WITH_DIRS.map((c) => join(ROOT, c)), join(ROOT, 'unified')];
    for (const root of roots) {
      for (const dir of [join(root, 'hangar', machineId, 'ctr'), join(root, 'hangar', machineId)]) {
        await rmdir(dir).catch(() => undefined);
      }
    }
  }
}

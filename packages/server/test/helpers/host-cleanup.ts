import { existsSync } from 'node:fs';
import { readdir, readFile, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { removeMachineNamespaces } from '../../src/runtime/machine-namespaces.js';
import { runCommand } from '../../src/shared/run.js';
import { mountsUnder, processesMentioning, sleep } from './integration.js';

/** What the child-process daemon tests check and clean on the host after a killed hangard. */

const CGROUP_ROOT = '/sys/fs/cgroup';

export async function crunList(stateRoot: string): Promise<{ id: string; status: string; pid: number }[]> {
  if (!existsSync(stateRoot)) return [];
  const result = await runCommand('crun', ['--root', stateRoot, 'list', '--format', 'json'], {
    timeoutMs: 10_000,
  });
  if (result.code !== 0 || result.stdout.trim() === '' || result.stdout.trim() === 'null') return [];
  return JSON.parse(result.stdout) as { id: string; status: string; pid: number }[];
}

export async function cgroupDirsOf(ids: Iterable<string>): Promise<string[]> {
  const controllers = await readdir(CGROUP_ROOT).catch(() => []);
  const found: string[] = [];
  for (const id of ids) {
    for (const controller of controllers) {
      const dir = join(CGROUP_ROOT, controller, 'hangar', id);
      if (existsSync(dir)) found.push(dir);
    }
  }
  return found;
}

/** Loop devices whose backing file lies under `dir`, from `losetup -a`. */
export async function loopDevicesUnder(dir: string): Promise<string[]> {
  const loops = await runCommand('losetup', ['-a']).catch(() => ({ stdout: '' }));
  return loops.stdout
    .split('\n')
    .filter((l) => l.includes(dir))
    .map((l) => l.split(':')[0]!);
}

/**
 * Removes whatever a failed run left: containers (thawed first, so SIGKILL can land), the registry and
 * shims, mounts (volume filesystems thawed first: a frozen one cannot be unmounted) and loop devices
 * under the data dir, the machines' namespaces and cgroups. Never throws.
 */
export async function forceCleanup(dataDir: string, ids: Set<string>): Promise<void> {
  const attempt = async (step: () => Promise<unknown>) => {
    await step().catch(() => undefined);
  };
  const stateRoot = join(dataDir, 'oci-state');
  for (const container of await crunList(stateRoot).catch(() => [])) {
    await attempt(() =>
      runCommand('crun', ['--root', stateRoot, 'resume', container.id], { timeoutMs: 10_000 }),
    );
    await attempt(() =>
      runCommand('crun', ['--root', stateRoot, 'delete', '-f', container.id], { timeoutMs: 10_000 }),
    );
  }
  await sleep(200);
  for (const { pid } of await processesMentioning(dataDir)) {
    await attempt(async () => process.kill(pid, 'SIGKILL'));
  }
  await sleep(200);
  for (const point of await mountsUnder(join(dataDir, 'volumes', 'mnt'))) {
    await attempt(() => runCommand('fsfreeze', ['-u', point], { timeoutMs: 10_000 }));
  }
  for (const point of (await mountsUnder(dataDir)).reverse()) {
    const result = await runCommand('umount', [point]).catch(() => ({ code: 1 }));
    if (result.code !== 0) await attempt(() => runCommand('umount', ['-l', point]));
  }
  for (const device of await loopDevicesUnder(dataDir)) {
    await attempt(() => runCommand('losetup', ['-d', device]));
  }
  for (const id of ids) await attempt(() => removeMachineNamespaces(id));
  for (const dir of (await cgroupDirsOf(ids)).sort().reverse()) {
    await attempt(() => rmdir(join(dir, 'ctr')).catch(() => undefined));
    await attempt(() => rmdir(dir));
  }
}

/**
 * Loop devices over images under `dataDir` that something of this data dir still holds, after waiting
 * up to `waitMs` for the kernel to release them. A machine runtime anywhere on the host (another test's,
 * too) runs in a private mount namespace that copies every mount present when it starts, a volume's
 * included: a device held only by such foreign namespaces, and set to autoclear (it goes with its last
 * user), is not counted.
 */
export async function loopDevicesHeld(dataDir: string, waitMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + waitMs;
  while ((await loopDevicesUnder(dataDir)).length > 0 && Date.now() < deadline) await sleep(100);
  const listed = await runCommand('losetup', ['-l', '-n', '-O', 'NAME,AUTOCLEAR,BACK-FILE']);
  const held: string[] = [];
  for (const line of listed.stdout.split('\n')) {
    const [name, autoclear, backing] = line.trim().split(/\s+/);
    if (!name || !backing?.startsWith(dataDir)) continue;
    const holders = await mountHolders(backing.slice(backing.lastIndexOf('/') + 1).replace(/\.img$/, ''));
    const ours = holders.filter((h) => h.cmdline.includes(dataDir) || h.cmdline === '');
    if (autoclear !== '1' || ours.length > 0 || holders.length === 0) held.push(name);
  }
  return held;
}

/** Processes whose mount namespace shows a mount of this volume id. */
async function mountHolders(volumeId: string): Promise<{ pid: number; cmdline: string }[]> {
  const found: { pid: number; cmdline: string }[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const mountinfo = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '');
    if (!mountinfo.includes(`/${volumeId}`)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    found.push({ pid: Number(pid), cmdline: cmdline.replaceAll('\0', ' ') });
  }
  return found;
}

/**
 * A machine's user namespace and network namespace, made together and kept (pinned by bind mounts) from
 * its first boot until it is destroyed.
 *
 * The network namespace belongs to the machine's user namespace, not to the host's: root in the machine
 * has its capabilities over its own network namespace and nothing over the host's. Of those it holds
 * only Docker's default set (bundle.ts): CAP_NET_RAW counts there (raw sockets: busybox `ping`), while
 * changing its addresses, routes, links or nft rules needs CAP_NET_ADMIN, which it does not have. A
 * sysfs of it can be mounted by the OCI runtime inside the container (that needs CAP_SYS_ADMIN over the
 * namespace's owner, which the runtime has in the user namespace before it drops to the machine's
 * capabilities).
 *
 * The user namespace is made by host root, so host root (and only it) has every capability in it; its
 * uid and gid maps are the app's range (uid-range.ts), the same the OCI config names, which joins both
 * namespaces by path instead of making new ones.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../shared/errors.js';
import { runChecked, runCommand, TOOL_ENV } from '../shared/run.js';
import { netnsName, netnsPath } from '../sixpn/netns.js';
import type { UidMapping } from './uid-range.js';

/** Where the machines' user namespaces are pinned; like /run/netns, gone with a reboot of the host. */
export const USERNS_DIR = '/var/run/hangar/userns';

/** The bind-mounted user namespace file of a machine, as the OCI config names it. */
export const usernsPath = (machineId: string) => join(USERNS_DIR, netnsName(machineId));

/** statfs(2)'s f_type of the namespace filesystem: a pin holds a namespace exactly when it is one. */
const NSFS_MAGIC = 0x6e736673;
const HOLDER_TIMEOUT_MS = 10_000;

async function holdsNamespace(path: string): Promise<boolean> {
  return statfs(path).then(
    (stats) => stats.type === NSFS_MAGIC,
    () => false,
  );
}

/**
 * Makes the machine's namespaces unless both are there. A network namespace without its user namespace
 * (left by a crash between the steps below, or made by a Hangar that created it in the host's user
 * namespace) is made anew: its eth0 goes first, so that the next attach plugs in a fresh veth. Whether
 * they were made now.
 */
export async function ensureMachineNamespaces(machineId: string, mapping: UidMapping): Promise<boolean> {
  if ((await holdsNamespace(usernsPath(machineId))) && (await holdsNamespace(netnsPath(machineId))))
    return false;
  if (existsSync(netnsPath(machineId))) {
    await runCommand('ip', ['-n', netnsName(machineId), 'link', 'delete', 'eth0']);
  }
  await removeMachineNamespaces(machineId);
  await createNamespaces(machineId, mapping);
  await runChecked('ip', ['-n', netnsName(machineId), 'link', 'set', 'lo', 'up']);
  return true;
}

/** Removes both pins (the namespaces end when nothing else holds them); idempotent. */
export async function removeMachineNamespaces(machineId: string): Promise<void> {
  if (existsSync(netnsPath(machineId))) await runCommand('ip', ['netns', 'delete', netnsName(machineId)]);
  const pin = usernsPath(machineId);
  if (await holdsNamespace(pin)) await runChecked('umount', [pin]);
  await rm(pin, { force: true });
}

/**
 * A holder process unshares a user and a network namespace in one call (so the network namespace is
 * the new user namespace's), host root writes the id maps into it (only a process outside may map a
 * range), both are pinned, and the holder ends. The user namespace is pinned first: a network
 * namespace in /run/netns always has its user namespace.
 */
async function createNamespaces(machineId: string, mapping: UidMapping): Promise<void> {
  const holder = spawn('unshare', ['--user', '--net', '--', 'sh', '-c', 'echo ready && read -r _'], {
    env: TOOL_ENV,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => {
    holder.once('close', () => resolve());
    holder.once('error', () => resolve());
  });
  let stderr = '';
  holder.stderr.setEncoding('utf8');
  holder.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  holder.stdin.on('error', () => undefined);
  try {
    await new Promise<void>((resolve, reject) => {
      const fail = (why: string) =>
        reject(new HangarError('internal', `making the namespaces of machine ${machineId}: ${why}`));
      const timer = setTimeout(() => fail(`no answer within ${HOLDER_TIMEOUT_MS} ms`), HOLDER_TIMEOUT_MS);
      holder.once('error', (error) => {
        clearTimeout(timer);
        fail(error.message);
      });
      holder.once('close', (code) => {
        clearTimeout(timer);
        fail(`unshare exited (${code}): ${stderr.trim() || 'no output'}`);
      });
      holder.stdout.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    const pid = holder.pid!;
    const idMap = `0 ${mapping.hostId} ${mapping.size}\n`;
    await writeFile(`/proc/${pid}/uid_map`, idMap);
    await writeFile(`/proc/${pid}/gid_map`, idMap);
    const pin = usernsPath(machineId);
    await mkdir(USERNS_DIR, { recursive: true, mode: 0o700 });
    await writeFile(pin, '', { mode: 0o600 });
    await runChecked('mount', ['--bind', `/proc/${pid}/ns/user`, pin]);
    await runChecked('ip', ['netns', 'attach', netnsName(machineId), String(pid)]);
  } catch (error) {
    await removeMachineNamespaces(machineId).catch(() => undefined);
    throw error;
  } finally {
    holder.kill('SIGKILL');
    await exited;
  }
}

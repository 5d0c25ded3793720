import { constants, type Stats } from 'node:fs';
import { type FileHandle, lstat, open, readlink, realpath } from 'node:fs/promises';
import { posix } from 'node:path';
import { HangarError } from '../shared/errors.js';

/**
 * Reading a file of a machine's image from the host, as hangard (root) does for the image's /etc/passwd
 * and /etc/group. The image is the tenant's: any of its paths may be a symlink to /dev/zero, /proc/kmsg
 * or a host file, a FIFO, or enormous. So a path is resolved the way the machine itself would see it,
 * with every symlink taken relative to the rootfs (an absolute target starts at the rootfs, and `..`
 * that would climb out of it is refused), and only a regular file of bounded size is read.
 */

/** Large enough for any real passwd or group table; a bigger one is refused rather than read. */
export const ROOTFS_FILE_MAX_BYTES = 1024 * 1024;
/** As the kernel: more symlinks than this on one path is a loop. */
const MAX_SYMLINKS = 40;
/**
 * O_PATH: an fd that names the file without opening it, so no device driver or FIFO is ever opened
 * (Linux's value on x86 and arm; Node does not export it).
 */
const O_PATH = 0o10000000;

export type RootfsFileRead =
  | { found: true; content: string }
  | { found: false; reason: 'missing' }
  | { found: false; reason: 'refused'; why: string };

/**
 * Reads `guestPath` (absolute, as the machine sees it) inside `rootfs`. Absent when the file does not
 * exist; refused, with why, when it is not a regular file, is larger than `maxBytes`, or its path
 * leaves the rootfs. Never follows a symlink with the host's view of the filesystem.
 */
export async function readRootfsFile(
  rootfs: string,
  guestPath: string,
  maxBytes = ROOTFS_FILE_MAX_BYTES,
): Promise<RootfsFileRead> {
  const root = await realpath(rootfs);
  const resolved = await resolveInRootfs(root, guestPath);
  if (!resolved.found) return resolved;
  const hostPath = posix.join(root, ...resolved.components);

  // The last component is opened without following it and without opening what it names; only a
  // regular file, seen through that fd, is then opened for reading. (libuv adds O_CLOEXEC itself.)
  let pathHandle: FileHandle;
  try {
    pathHandle = await open(hostPath, O_PATH | constants.O_NOFOLLOW);
  } catch (error) {
    return openFailure(guestPath, error);
  }
  try {
    const info = await pathHandle.stat();
    if (!info.isFile()) return refused(`${guestPath} is not a regular file (${fileKind(info)})`);
    if (info.size > maxBytes) return refused(`${guestPath} is larger than ${maxBytes} bytes`);
    // Whatever happened to the path meanwhile, the fd must still be inside the rootfs.
    const fdPath = await readlink(`/proc/self/fd/${pathHandle.fd}`);
    if (!fdPath.startsWith(`${root}/`)) return refused(`${guestPath} leads outside the image`);
    // Reopened through the fd's /proc link: the very file just checked, not whatever the path names now.
    const reading = await open(`/proc/self/fd/${pathHandle.fd}`, constants.O_RDONLY);
    try {
      const again = await reading.stat();
      if (again.dev !== info.dev || again.ino !== info.ino || !again.isFile())
        return refused(`${guestPath} changed while it was read`);
      // At most one byte past the cap: enough to know it is too large, whatever its size claimed.
      const buffer = Buffer.alloc(maxBytes + 1);
      let length = 0;
      for (;;) {
        const { bytesRead } = await reading.read(buffer, length, buffer.length - length, length);
        if (bytesRead === 0) break;
        length += bytesRead;
        if (length > maxBytes) return refused(`${guestPath} is larger than ${maxBytes} bytes`);
      }
      return { found: true, content: buffer.subarray(0, length).toString('utf8') };
    } finally {
      await reading.close();
    }
  } finally {
    await pathHandle.close();
  }
}

type Resolution = { found: true; components: string[] } | Exclude<RootfsFileRead, { found: true }>;

/**
 * Resolves `guestPath` component by component inside `root` (a real path), following symlinks the way
 * the machine would see them, the last component's too. Returns the components of the final path below
 * the root, none of them a symlink when they were looked at.
 */
async function resolveInRootfs(root: string, guestPath: string): Promise<Resolution> {
  if (!guestPath.startsWith('/')) return refused(`${guestPath} is not an absolute path`);
  const resolved: string[] = [];
  let pending = guestPath.split('/').filter((part) => part !== '' && part !== '.');
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      if (resolved.length === 0) return refused(`${guestPath} climbs out of the image (..)`);
      resolved.pop();
      continue;
    }
    const hostPath = posix.join(root, ...resolved, part);
    let info: Awaited<ReturnType<typeof lstat>>;
    try {
      info = await lstat(hostPath);
    } catch (error) {
      return openFailure(guestPath, error);
    }
    if (!info.isSymbolicLink()) {
      if (pending.length > 0 && !info.isDirectory()) return { found: false, reason: 'missing' };
      resolved.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) return refused(`${guestPath} has too many levels of symlinks`);
    const target = await readlink(hostPath);
    // An absolute target starts again at the rootfs, never at the host's root.
    if (target.startsWith('/')) resolved.length = 0;
    pending = [...target.split('/').filter((p) => p !== '' && p !== '.'), ...pending];
  }
  if (resolved.length === 0) return refused(`${guestPath} is the image's root, not a file`);
  return { found: true, components: resolved };
}

function refused(why: string): { found: false; reason: 'refused'; why: string } {
  return { found: false, reason: 'refused', why };
}

function openFailure(guestPath: string, error: unknown): Exclude<RootfsFileRead, { found: true }> {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return { found: false, reason: 'missing' };
  if (code === 'ELOOP') return refused(`${guestPath} is a symlink that was not resolved inside the image`);
  throw new HangarError('internal', `reading ${guestPath} in the image failed: ${code ?? String(error)}`, {
    cause: error,
  });
}

function fileKind(info: Stats): string {
  if (info.isDirectory()) return 'a directory';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isSocket()) return 'a socket';
  if (info.isCharacterDevice()) return 'a character device';
  if (info.isBlockDevice()) return 'a block device';
  if (info.isSymbolicLink()) return 'a symlink';
  return 'not a regular file';
}

/**
 * The image's user table `guestPath` for resolving its USER: the content, '' when the image has none,
 * and a failed_precondition naming why when the image's file cannot be read safely.
 */
export async function readImageTable(rootfs: string, guestPath: string): Promise<string> {
  const read = await readRootfsFile(rootfs, guestPath);
  if (read.found) return read.content;
  if (read.reason === 'missing') return '';
  throw new HangarError(
    'failed_precondition',
    `the image's ${guestPath} cannot be used to resolve its USER: ${read.why}`,
  );
}

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readImageTable, readRootfsFile } from '../../src/runtime/rootfs-files.js';

/**
 * hangard reads an image's /etc/passwd and /etc/group as root. The image is the tenant's, so each
 * hostile shape is tried here next to a normal file read the same way (the positive control): symlinks
 * to devices and host files, `..` escapes, a FIFO, a huge file.
 */

const PASSWD = 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n';

function makeRootfs(t: { after: (fn: () => void) => void }) {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-rootfs-files-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A host file beside the rootfs: what an escape would reach.
  writeFileSync(join(dir, 'host-secret'), 'host only\n');
  const rootfs = join(dir, 'rootfs');
  mkdirSync(join(rootfs, 'etc'), { recursive: true });
  return { dir, rootfs };
}

const refusedWhy = (read: Awaited<ReturnType<typeof readRootfsFile>>) =>
  !read.found && read.reason === 'refused' ? read.why : `not refused: ${JSON.stringify(read)}`;

test('rootfs files: a normal passwd is read; symlinks inside the image are followed inside it', async (t) => {
  const { rootfs } = makeRootfs(t);
  writeFileSync(join(rootfs, 'etc/passwd'), PASSWD);
  assert.deepEqual(await readRootfsFile(rootfs, '/etc/passwd'), { found: true, content: PASSWD });
  // Absolute and relative symlinks that stay in the image, through a symlinked directory too.
  mkdirSync(join(rootfs, 'usr/share/base'), { recursive: true });
  writeFileSync(join(rootfs, 'usr/share/base/group'), 'root:x:0:\n');
  symlinkSync('/usr/share/base/group', join(rootfs, 'etc/group'));
  symlinkSync('usr/share', join(rootfs, 'share'));
  symlinkSync('../share/base/group', join(rootfs, 'etc/group2'));
  assert.deepEqual(await readRootfsFile(rootfs, '/etc/group'), { found: true, content: 'root:x:0:\n' });
  assert.deepEqual(await readRootfsFile(rootfs, '/etc/group2'), { found: true, content: 'root:x:0:\n' });
  assert.deepEqual(await readRootfsFile(rootfs, '/etc/none'), { found: false, reason: 'missing' });
  assert.equal(await readImageTable(rootfs, '/etc/none'), '', 'an absent table is empty');
});

test('rootfs files: a symlink to /dev/zero resolves inside the image, never to the host device', async (t) => {
  const { rootfs } = makeRootfs(t);
  symlinkSync('/dev/zero', join(rootfs, 'etc/passwd'));
  // The image has no /dev/zero: absent, and promptly (the host's /dev/zero would never end).
  const began = performance.now();
  assert.deepEqual(await readRootfsFile(rootfs, '/etc/passwd'), { found: false, reason: 'missing' });
  assert.ok(performance.now() - began < 1_000);
  // An image with a /dev/zero of its own: a device node is refused without being opened.
  mkdirSync(join(rootfs, 'dev'));
  if (process.getuid?.() === 0) {
    execFileSync('mknod', [join(rootfs, 'dev/zero'), 'c', '1', '5']);
    assert.match(
      refusedWhy(await readRootfsFile(rootfs, '/etc/passwd')),
      /not a regular file \(a character device\)/,
    );
  } else {
    mkdirSync(join(rootfs, 'dev/zero')); // without root, no device node: a directory stands in
    assert.match(
      refusedWhy(await readRootfsFile(rootfs, '/etc/passwd')),
      /not a regular file \(a directory\)/,
    );
  }
});

test('rootfs files: a symlink to a host file reads the image path of the same name, not the host file', async (t) => {
  const { dir, rootfs } = makeRootfs(t);
  symlinkSync(join(dir, 'host-secret'), join(rootfs, 'etc/passwd'));
  assert.deepEqual(await readRootfsFile(rootfs, '/etc/passwd'), { found: false, reason: 'missing' });
  // Positive control: the same target exists on the host and is readable there.
  assert.equal(execFileSync('cat', [join(rootfs, 'etc/passwd')], { encoding: 'utf8' }), 'host only\n');
});

test('rootfs files: `..` that climbs out of the image is refused', async (t) => {
  const { rootfs } = makeRootfs(t);
  symlinkSync('../../host-secret', join(rootfs, 'etc/passwd'));
  assert.match(refusedWhy(await readRootfsFile(rootfs, '/etc/passwd')), /climbs out of the image/);
  assert.match(refusedWhy(await readRootfsFile(rootfs, '/../host-secret')), /climbs out of the image/);
  await assert.rejects(readImageTable(rootfs, '/etc/passwd'), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'failed_precondition');
    assert.match(error.message, /the image's \/etc\/passwd cannot be used .*climbs out of the image/);
    return true;
  });
  // Positive control: `..` that stays inside is followed.
  mkdirSync(join(rootfs, 'lib'));
  writeFileSync(join(rootfs, 'lib/passwd'), PASSWD);
  symlinkSync('../lib/passwd', join(rootfs, 'etc/passwd2'));
  assert.deepEqual(await readRootfsFile(rootfs, '/etc/passwd2'), { found: true, content: PASSWD });
});

test('rootfs files: symlink loops end', async (t) => {
  const { rootfs } = makeRootfs(t);
  symlinkSync('/etc/b', join(rootfs, 'etc/a'));
  symlinkSync('/etc/a', join(rootfs, 'etc/b'));
  assert.match(refusedWhy(await readRootfsFile(rootfs, '/etc/a')), /too many levels of symlinks/);
});

test('rootfs files: a FIFO is refused without blocking', async (t) => {
  const { rootfs } = makeRootfs(t);
  execFileSync('mkfifo', [join(rootfs, 'etc/passwd')]);
  const began = performance.now();
  assert.match(refusedWhy(await readRootfsFile(rootfs, '/etc/passwd')), /not a regular file \(a FIFO\)/);
  assert.ok(performance.now() - began < 1_000, 'no open of the FIFO, so no wait for a writer');
});

test('rootfs files: a file over the cap is refused; one at the cap is read', async (t) => {
  const { rootfs } = makeRootfs(t);
  writeFileSync(join(rootfs, 'etc/passwd'), Buffer.alloc(4097, 'a'));
  assert.match(refusedWhy(await readRootfsFile(rootfs, '/etc/passwd', 4096)), /larger than 4096 bytes/);
  writeFileSync(join(rootfs, 'etc/group'), Buffer.alloc(4096, 'b'));
  const read = await readRootfsFile(rootfs, '/etc/group', 4096);
  assert.ok(read.found && read.content.length === 4096);
  // The default cap: 1 MiB.
  writeFileSync(join(rootfs, 'etc/big'), Buffer.alloc(1024 * 1024 + 1, 'c'));
  assert.match(refusedWhy(await readRootfsFile(rootfs, '/etc/big')), /larger than 1048576 bytes/);
});

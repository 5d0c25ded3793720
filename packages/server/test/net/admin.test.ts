import assert from 'node:assert/strict';
import { test } from 'node:test';
import { machineNetnsArgs, netnsPathOf } from '../../src/net/admin.js';

test('admin entry: the namespace of a machine, by machine id only', () => {
  assert.equal(netnsPathOf('1857156b526dd8'), '/var/run/netns/hangar-1857156b526dd8');
  assert.deepEqual(machineNetnsArgs('1857156b526dd8', ['ss', '-ltn']), [
    'netns',
    'exec',
    'hangar-1857156b526dd8',
    'ss',
    '-ltn',
  ]);
  // Anything else could name another namespace or a path: refused.
  for (const id of ['../../etc', '1857156B526DD8', '1857156b526dd', 'hangar-1857156b526dd8', '']) {
    assert.throws(() => netnsPathOf(id), /not a machine id/);
  }
  assert.throws(() => machineNetnsArgs('1857156b526dd8', []), /no command/);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePorts } from '../src/commands/top/proxy.js';
import { cli, expectCode } from './helpers.js';

test('proxy ports: LOCAL[:REMOTE], one number for both, LOCAL 0 for any free port', () => {
  assert.deepEqual(parsePorts('5432'), { local: 5432, remote: 5432 });
  assert.deepEqual(parsePorts('15432:5432'), { local: 15432, remote: 5432 });
  assert.deepEqual(parsePorts('0:80'), { local: 0, remote: 80 });
  for (const bad of ['', 'abc', '80:', ':80', '70000', '80:0', '1:2:3']) {
    assert.throws(() => parsePorts(bad), /invalid ports/, bad);
  }
});

test('proxy: bad ports are one Error line and a Hint, before any connection', async () => {
  const result = await cli(['proxy', 'abc', '-a', 'acme'], { apiUrl: 'http://127.0.0.1:9' });
  expectCode(result, 1);
  assert.equal(
    result.stderr,
    'Error: invalid ports "abc"\nHint: write LOCAL[:REMOTE], e.g. 5432 or 15432:5432\n',
  );
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, closedPort, expectCode, startFakeServer } from './helpers.js';

test('404: one Error line with the server’s text and request id, one Hint line, exit 1', async (t) => {
  const server = await startFakeServer(t, () => ({
    status: 404,
    body: { error: 'app not found', status: 'not_found' },
  }));
  const result = await cli(['apps', 'show', 'nope'], { apiUrl: server.url });
  expectCode(result, 1);
  assert.equal(result.stdout, '');
  assert.equal(
    result.stderr,
    'Error: GET /v1/apps/nope failed (HTTP 404): app not found (request id req-0)\n' +
      'Hint: run `hangar apps list`\n',
  );
});

test('404 on a machine points at the machine list', async (t) => {
  const server = await startFakeServer(t, () => ({
    status: 404,
    body: { error: 'machine 123 not found', status: 'not_found' },
  }));
  const result = await cli(['machine', 'start', '123', '-a', 'acme'], { apiUrl: server.url });
  expectCode(result, 1);
  assert.match(result.stderr, /^Error: POST \/v1\/apps\/acme\/machines\/123\/start failed \(HTTP 404\)/);
  assert.match(result.stderr, /\nHint: run `hangar machine list -a acme`\n$/);
});

test('404 on a nested path that is really about the app points at the app list', async (t) => {
  const server = await startFakeServer(t, () => ({
    status: 404,
    body: { error: 'app ghost was not found', status: 'not_found' },
  }));
  const result = await cli(['machine', 'list', '-a', 'ghost'], { apiUrl: server.url });
  expectCode(result, 1);
  assert.match(result.stderr, /\nHint: run `hangar apps list`\n$/);
});

test('connection refused: network error and a hint to start hangard, no stack trace', async () => {
  const port = await closedPort();
  const result = await cli(['apps', 'list'], { apiUrl: `http://127.0.0.1:${port}` });
  assert.equal(result.code, 1);
  const lines = result.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 2, result.stderr);
  assert.match(
    lines[0] ?? '',
    /^Error: GET \/v1\/apps failed \(no response\): could not reach .*ECONNREFUSED/,
  );
  assert.match(lines[1] ?? '', /^Hint: is hangard running\? start it with \.\/scripts\/start\.sh/);
  assert.doesNotMatch(result.stderr, /\n\s+at /);
});

test('hints by code, falling back to the HTTP status when the server sends no code', async (t) => {
  const cases: Array<[number, object, Record<string, string>, RegExp]> = [
    [401, { error: 'bad token' }, {}, /Hint: check HANGAR_API_TOKEN or the token file/],
    [422, { error: 'Name has already been taken', status: 'name_taken' }, {}, /Hint: pick another name/],
    [
      429,
      { error: 'slow down', status: 'rate_limited' },
      { 'retry-after': '90' },
      /Hint: wait 90 s and try again/,
    ],
    [409, { error: 'lease held', status: 'lease_conflict' }, {}, /Hint: another client holds a lease/],
    [412, { error: 'wrong state' }, {}, /Hint: the machine is not in a state that allows this/],
    [412, { error: 'wrong state', status: 'failed_precondition' }, {}, /Hint: the machine is not in a state/],
    [
      412,
      { error: 'current_version 01A is stale: machine m1 is at version 01B', status: 'failed_precondition' },
      {},
      /Hint: the machine changed since it was read \(another update won\); run the command again/,
    ],
    [503, { error: 'starting', status: 'unavailable' }, {}, /Hint: hangard is busy or still starting/],
  ];
  for (const [status, body, headers, hint] of cases) {
    const server = await startFakeServer(t, () => ({ status, body, headers }));
    const result = await cli(['apps', 'create', 'acme'], { apiUrl: server.url });
    assert.equal(result.code, 1);
    assert.match(result.stderr, hint, `HTTP ${status}: ${result.stderr}`);
    assert.equal(result.stderr.trimEnd().split('\n').length, 2);
  }
});

test('no app: the CLI says how to name one', async () => {
  const result = await cli(['machine', 'list']);
  assert.equal(result.code, 1);
  assert.equal(result.stderr, 'Error: no app given\nHint: pass -a APP (or set FLY_APP)\n');
});

test('bad flag values are CLI errors, not server errors', async (t) => {
  const server = await startFakeServer(t, () => ({ body: {} }));
  const result = await cli(['machine', 'run', 'nginx', '-a', 'acme', '--port', '80:http'], {
    apiUrl: server.url,
  });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^Error: invalid --port "80:http"\nHint: write it as/);
  assert.equal(server.requests.length, 0);
});

test('usage errors come from commander with exit code 1', async () => {
  const unknown = await cli(['apps', 'list', '--bogus']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /unknown option '--bogus'/);
  const badChoice = await cli(['tokens', 'create', 'superuser']);
  assert.equal(badChoice.code, 1);
  assert.match(badChoice.stderr, /Allowed choices are org, deploy, readonly/);
});

test('an unreadable HANGAR_TOKEN_FILE is reported before any request', async (t) => {
  const server = await startFakeServer(t, () => ({ body: { total_apps: 0, apps: [] } }));
  const result = await cli(['apps', 'list'], {
    apiUrl: server.url,
    env: { HANGAR_API_TOKEN: undefined, HANGAR_TOKEN_FILE: '/nonexistent/token' },
  });
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr,
    'Error: cannot read a token from /nonexistent/token\nHint: fix HANGAR_TOKEN_FILE or unset it\n',
  );
  assert.equal(server.requests.length, 0);
});

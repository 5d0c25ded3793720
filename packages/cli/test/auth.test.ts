// auth login/whoami/token/logout and orgs list: what is sent, what is stored, and where a stored token goes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cli, expectCode, startFakeServer } from './helpers.js';

const CURRENT = {
  tokens: [
    {
      token_id: 'tok_01',
      type: 'org',
      org_slug: 'personal',
      organization: 'Personal',
      apps: ['acme', 'web'],
    },
  ],
};
const CONFIG = '/home/u/.config/hangar/config.json';
/** No token or URL from the environment: only what the test gives. */
const BARE = { HANGAR_API_TOKEN: undefined, HOME: '/home/u' };

test('auth login checks the token against the API, then stores URL and token 0600', async (t) => {
  const server = await startFakeServer(t, () => ({ body: CURRENT }));
  const files: Record<string, string> = {};
  const modes: Record<string, number> = {};
  const result = await cli(['auth', 'login', '--url', `${server.url}/`, '--token', 'hg1_secret'], {
    env: BARE,
    files,
    modes,
  });
  expectCode(result, 0);
  assert.equal(server.requests[0]?.path, '/v1/tokens/current');
  assert.equal(server.requests[0]?.headers.authorization, 'Bearer hg1_secret');
  assert.deepEqual(JSON.parse(files[CONFIG] ?? '{}'), { api_url: server.url, token: 'hg1_secret' });
  assert.equal(modes[CONFIG], 0o600);
  assert.match(
    result.stdout,
    /^Logged in to http:\/\/127\.0\.0\.1:\d+ with a org token of organization personal\n/,
  );
  assert.ok(
    !result.stdout.includes('hg1_secret') && !result.stderr.includes('hg1_secret'),
    'token never echoed',
  );
  // Loopback HTTP is not worth a warning.
  assert.equal(result.stderr, '');
});

test('auth login reads the token from stdin; a refused token stores nothing', async (t) => {
  const server = await startFakeServer(t, (req) =>
    req.headers.authorization === 'Bearer good'
      ? { body: CURRENT }
      : { status: 401, body: { error: 'invalid token', status: 'unauthorized' } },
  );
  const files: Record<string, string> = {};
  const piped = await cli(['auth', 'login', '--url', server.url], { env: BARE, files, stdin: 'good\n' });
  expectCode(piped, 0);
  assert.equal(JSON.parse(files[CONFIG] ?? '{}').token, 'good');

  const other: Record<string, string> = {};
  const refused = await cli(['auth', 'login', '--url', server.url], {
    env: BARE,
    files: other,
    stdin: 'bad',
  });
  expectCode(refused, 1);
  assert.match(
    refused.stderr,
    /^Error: hangard at http:\/\/127\.0\.0\.1:\d+ refused this token \(nothing was stored\)\nHint: /,
  );
  assert.deepEqual(other, {});

  const port = server.url.split(':').at(-1);
  const schemeless = await cli(['auth', 'login', '--url', `127.0.0.1:${port}`], {
    env: BARE,
    files: {},
    stdin: 'good',
  });
  expectCode(schemeless, 1);
  assert.match(
    schemeless.stderr,
    /^Error: cannot reach hangard at https:\/\/127\.0\.0\.1:\d+\nHint: a URL without a scheme means https:\/\/; hangard speaks plain HTTP/,
  );

  const none = await cli(['auth', 'login', '--url', server.url], { env: BARE, files: {} });
  expectCode(none, 1);
  assert.match(none.stderr, /^Error: no token given\nHint: pass --token, or pipe the token/);
});

test('the stored login is used, and its token is never sent to another URL', async (t) => {
  const stored = await startFakeServer(t, () => ({ body: { total_apps: 0, apps: [] } }));
  const elsewhere = await startFakeServer(t, () => ({ body: { total_apps: 0, apps: [] } }));
  const files = { [CONFIG]: JSON.stringify({ api_url: stored.url, token: 'hg1_stored' }) };

  expectCode(await cli(['apps', 'list'], { env: BARE, files }), 0);
  assert.equal(stored.requests[0]?.headers.authorization, 'Bearer hg1_stored');

  // Another hangard named by a flag or variable gets no token from the stored login.
  expectCode(await cli(['apps', 'list', '--api-url', elsewhere.url], { env: BARE, files }), 0);
  expectCode(await cli(['apps', 'list'], { env: { ...BARE, HANGAR_API_URL: elsewhere.url }, files }), 0);
  assert.equal(elsewhere.requests.length, 2);
  for (const req of elsewhere.requests) assert.equal(req.headers.authorization, undefined);

  // An explicit token wins over the stored one.
  expectCode(await cli(['apps', 'list'], { env: { ...BARE, HANGAR_API_TOKEN: 'env-token' }, files }), 0);
  assert.equal(stored.requests[1]?.headers.authorization, 'Bearer env-token');

  const broken = await cli(['apps', 'list'], { env: BARE, files: { [CONFIG]: '{not json' } });
  expectCode(broken, 1);
  assert.match(broken.stderr, /stored login in .* is unreadable\nHint: run `hangar auth login` again/);
});

test('auth whoami, auth token and auth logout', async (t) => {
  const server = await startFakeServer(t, () => ({ body: CURRENT }));
  const files: Record<string, string> = { [CONFIG]: JSON.stringify({ api_url: server.url, token: 'hg1_x' }) };

  const who = await cli(['auth', 'whoami'], { env: BARE, files });
  expectCode(who, 0);
  assert.match(who.stdout, new RegExp(`^API URL\\s+${server.url}$`, 'm'));
  assert.match(who.stdout, /^Token from\s+stored login \(hangar auth login\)$/m);
  assert.match(who.stdout, /^Organization\s+personal \(Personal\)$/m);
  assert.match(who.stdout, /^Apps\s+acme, web$/m);
  assert.ok(!who.stdout.includes('hg1_x'));
  const json = JSON.parse((await cli(['auth', 'whoami', '--json'], { env: BARE, files })).stdout);
  assert.equal(json.token_id, 'tok_01');
  assert.equal(json.api_url, server.url);

  const token = await cli(['auth', 'token'], { env: BARE, files });
  assert.equal(token.stdout, 'hg1_x\n');

  const out = await cli(['auth', 'logout'], { env: BARE, files });
  assert.equal(out.stdout, `Removed the stored login (${CONFIG})\n`);
  assert.equal(files[CONFIG], undefined);
  const none = await cli(['auth', 'token'], { env: BARE, files });
  expectCode(none, 1);
  assert.equal(
    none.stderr,
    'Error: no token configured\nHint: run `hangar auth login`, or set HANGAR_API_TOKEN\n',
  );
});

test('orgs list shows the organization of the token in use', async (t) => {
  const server = await startFakeServer(t, () => ({ body: CURRENT }));
  const table = await cli(['orgs', 'list'], { apiUrl: server.url });
  expectCode(table, 0);
  assert.equal(table.stdout, 'NAME      SLUG      TOKEN TYPE\nPersonal  personal  org\n');
  const json = await cli(['orgs', 'list', '--json'], { apiUrl: server.url });
  assert.deepEqual(JSON.parse(json.stdout), [{ slug: 'personal', name: 'Personal', token_type: 'org' }]);
});

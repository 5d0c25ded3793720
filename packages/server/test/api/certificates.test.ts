import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { mintAuthority, mintLeaf, type PemPair } from '../../src/proxy/dev-certificate.js';
import { createApp, startTestHangard } from '../helpers/hangard.js';

/**
 * The certificates API (custom hostnames) as a hostile tenant meets it: each refusal beside the same
 * call that succeeds, and the private key never coming back or reaching the database in the clear.
 */

/** The start of a PEM key's base64 body: what would show if the key leaked. */
const keyBody = (pem: string) =>
  pem
    .split('\n')
    .filter((line) => line && !line.startsWith('-----'))
    .join('')
    .slice(0, 40);

const body = (hostname: string, pair: PemPair) => ({
  hostname,
  fullchain: pair.cert,
  private_key: pair.key,
});

test('certificates: import, read, refuse, delete; a hostname belongs to one app', async (t) => {
  const pki = mkdtempSync(join(tmpdir(), 'hangar-test-pki-'));
  t.after(() => rmSync(pki, { recursive: true, force: true }));
  await mintAuthority(pki, 'ca', 'Hangar test CA');
  const shop = await mintLeaf(pki, 'shop', ['shop.example.test', 'www.shop.example.test'], 'ca');
  const mine = await mintLeaf(pki, 'mine', ['mine.example.test'], 'ca');
  const platform = await mintLeaf(pki, 'platform', ['victim.hangar.localhost', 'hangar.localhost'], 'ca');

  const h = await startTestHangard(t);
  await createApp(h, 'victim');
  await createApp(h, 'tenant');
  const victimToken = (await h.call('POST', '/v1/apps/victim/deploy_token', {})).body.token as string;
  const tenantToken = (await h.call('POST', '/v1/apps/tenant/deploy_token', {})).body.token as string;
  const victim = (method: string, path: string, payload?: unknown) =>
    h.call(method, path, payload, { token: victimToken });
  const tenant = (method: string, path: string, payload?: unknown) =>
    h.call(method, path, payload, { token: tenantToken });

  // Bad input: each refusal says which field and why.
  for (const [payload, pattern] of [
    [
      { ...body('shop.example.test', shop), private_key: mine.key },
      /^private_key: this private key does not belong/,
    ],
    [body('other.example.test', shop), /^fullchain: the certificate does not cover other\.example\.test/],
    [{ ...body('shop.example.test', shop), fullchain: 'not a certificate' }, /^fullchain: expected a PEM/],
    [
      { ...body('shop.example.test', shop), private_key: 'not a key' },
      /^private_key: expected an unencrypted PEM/,
    ],
    [body('*.example.test', shop), /^hostname: wildcard hostnames are not supported/],
    [body('localhost', shop), /^hostname: "localhost" is not a DNS name/],
    [{ hostname: 'shop.example.test' }, /^body\.fullchain|fullchain/],
  ] as const) {
    const refused = await victim('POST', '/v1/apps/victim/certificates/custom', payload);
    assert.equal(refused.status, 400, JSON.stringify(refused.body));
    assert.match(refused.body.error, pattern);
    // A refusal never echoes a key.
    for (const key of [shop.key, mine.key]) assert.ok(!JSON.stringify(refused.body).includes(keyBody(key)));
  }

  // The victim imports its hostname (names are compared in lower case, without the trailing dot).
  const created = await victim(
    'POST',
    '/v1/apps/victim/certificates/custom',
    body('Shop.Example.Test.', shop),
  );
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.equal(created.body.hostname, 'shop.example.test');
  assert.equal(created.body.source, 'custom');
  assert.match(created.body.certificates[0].issuer, /Hangar test CA/);
  assert.match(created.body.certificates[0].fingerprint_sha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  // A second name the certificate covers is a hostname of its own.
  assert.equal(
    (await victim('POST', '/v1/apps/victim/certificates/custom', body('www.shop.example.test', shop))).status,
    201,
  );
  const listed = await victim('GET', '/v1/apps/victim/certificates');
  assert.deepEqual(
    listed.body.certificates.map((c: { hostname: string }) => c.hostname),
    ['shop.example.test', 'www.shop.example.test'],
  );
  assert.equal(listed.body.total_count, 2);
  const shown = await victim('GET', '/v1/apps/victim/certificates/shop.example.test');
  assert.equal(shown.status, 200);
  // Importing again replaces (renewal), and keeps the creation time.
  const renewed = await victim(
    'POST',
    '/v1/apps/victim/certificates/custom',
    body('shop.example.test', shop),
  );
  assert.equal(renewed.status, 201);
  assert.equal(renewed.body.created_at, created.body.created_at);

  // The key is in no answer, and not in the database in the clear.
  const keyText = keyBody(shop.key);
  for (const answer of [created.body, listed.body, shown.body, renewed.body]) {
    const text = JSON.stringify(answer);
    assert.ok(!text.includes('PRIVATE KEY') && !text.includes(keyText), text);
  }
  for (const file of ['hangar.db', 'hangar.db-wal']) {
    let raw = '';
    try {
      raw = readFileSync(join(h.dataDir, file)).toString('latin1');
    } catch {
      // No WAL: nothing to look at.
    }
    assert.ok(!raw.includes(keyText), `${file} holds the private key in the clear`);
  }

  // The hostile tenant. Positive control: a hostname of its own.
  assert.equal(
    (await tenant('POST', '/v1/apps/tenant/certificates/custom', body('mine.example.test', mine))).status,
    201,
  );
  // The victim's hostname, even with the victim's own valid certificate and key: refused, holder unnamed.
  const steal = await tenant('POST', '/v1/apps/tenant/certificates/custom', body('shop.example.test', shop));
  assert.equal(steal.status, 422);
  assert.equal(steal.body.status, 'name_taken');
  assert.match(steal.body.error, /already held by another app/);
  assert.doesNotMatch(steal.body.error, /victim/);
  // The platform's namespace: another app's name, or the domain itself.
  for (const name of ['victim.hangar.localhost', 'hangar.localhost']) {
    const claim = await tenant('POST', '/v1/apps/tenant/certificates/custom', body(name, platform));
    assert.equal(claim.status, 403, name);
    assert.match(claim.body.error, /names under hangar\.localhost belong to the platform/);
  }
  // Reading or deleting the victim's hostname: 404 through its own app, 403 through the victim's.
  for (const method of ['GET', 'DELETE']) {
    const own = await tenant(method, '/v1/apps/tenant/certificates/shop.example.test');
    assert.equal(own.status, 404, method);
    const direct = await tenant(method, '/v1/apps/victim/certificates/shop.example.test');
    assert.equal(direct.status, 403, method);
    assert.match(direct.body.error, /deploy token is for another app/);
  }
  assert.equal((await victim('GET', '/v1/apps/victim/certificates/shop.example.test')).status, 200);

  // Deleted by its holder, the hostname is free for another app.
  assert.equal((await victim('DELETE', '/v1/apps/victim/certificates/shop.example.test')).status, 200);
  assert.equal((await victim('GET', '/v1/apps/victim/certificates/shop.example.test')).status, 404);
  assert.equal(
    (await tenant('POST', '/v1/apps/tenant/certificates/custom', body('shop.example.test', shop))).status,
    201,
  );
  // Deleting an app frees its hostnames too.
  assert.equal((await h.call('DELETE', '/v1/apps/tenant')).status, 202);
  assert.equal(
    (await victim('POST', '/v1/apps/victim/certificates/custom', body('shop.example.test', shop))).status,
    201,
  );
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkOwnRegistrySpace } from '../../src/machines/image-rules.js';
import { parseRegistryPath, registryToken } from '../../src/registry/registry-paths.js';
import { addressRefusal, checkRegistryHost, type RegistryPolicy } from '../../src/shared/registry-policy.js';

const policy: RegistryPolicy = {
  own: ['127.0.0.1:4281', 'localhost:4281'],
  allowed: ['registry.lan', '127.0.0.2:5000'],
  allowPrivate: false,
};
const resolvesTo =
  (...addresses: string[]) =>
  async () =>
    addresses;

test('addresses: host, link-local, 6PN and private ones are refused; public ones pass', () => {
  for (const address of [
    '127.0.0.1',
    '0.0.0.0',
    '169.254.169.254',
    '::1',
    '::',
    'fe80::1',
    'fdaa::3',
    'ff02::1',
    '::ffff:127.0.0.1',
    '224.0.0.1',
  ]) {
    assert.match(addressRefusal(address, true) ?? '', /loopback, link-local/, address);
  }
  for (const address of [
    '10.1.2.3',
    '172.31.0.1',
    '192.168.1.1',
    '100.64.0.1',
    'fd00::1',
    '::ffff:10.0.0.1',
  ]) {
    assert.match(addressRefusal(address, false) ?? '', /private address/, address);
    assert.equal(addressRefusal(address, true), undefined, `${address} with allowPrivate`);
  }
  for (const address of ['8.8.8.8', '2001:4860:4860::8888', '172.32.0.1']) {
    assert.equal(addressRefusal(address, false), undefined, address);
  }
});

test('registry hosts: literal, resolved and allowed', async () => {
  await assert.rejects(
    checkRegistryHost('10.0.0.1', policy),
    /10\.0\.0\.1 is refused: it is a private address/,
  );
  await assert.rejects(
    checkRegistryHost('evil.example:443', policy, resolvesTo('8.8.8.8', '127.0.0.1')),
    /evil\.example:443 is refused: its name resolves to a loopback/,
  );
  await checkRegistryHost('public.example', policy, resolvesTo('8.8.8.8'));
  // An unresolvable name passes here; the check before the pull resolves it again.
  await checkRegistryHost('gone.example', policy, async () => {
    throw new Error('ENOTFOUND');
  });
  await assert.rejects(checkRegistryHost('localhost:4282', policy, resolvesTo()), /it names this host/);
  // Hangar's own, and the operator's: by host (any port) or by host:port.
  await checkRegistryHost('localhost:4281', policy, resolvesTo('127.0.0.1'));
  await checkRegistryHost('registry.lan:8443', policy, resolvesTo('10.0.0.5'));
  await checkRegistryHost('127.0.0.2:5000', policy);
  await assert.rejects(checkRegistryHost('127.0.0.2:5001', policy), /is refused/);
});

test("Hangar's registry: a machine uses only its own app's space", () => {
  checkOwnRegistrySpace('127.0.0.1:4281/web/img:1', 'web', policy);
  checkOwnRegistrySpace('docker.io/web2/img:1', 'web', policy);
  assert.throws(
    () => checkOwnRegistrySpace('localhost:4281/other/img:1', 'web', policy),
    (error: Error & { code?: string }) =>
      error.code === 'forbidden' && /space of app "other"/.test(error.message),
  );
  assert.throws(
    () => checkOwnRegistrySpace('127.0.0.1:4281/img:1', 'web', policy),
    (error: Error & { code?: string }) =>
      error.code === 'invalid_argument' && /push it to 127\.0\.0\.1:4281\/web\/<name>/.test(error.message),
  );
});

test('registry paths: the repository, its app and the action', () => {
  const q = (text = '') => new URLSearchParams(text);
  assert.deepEqual(parseRegistryPath('GET', '/v2/', q()), { kind: 'root' });
  assert.deepEqual(parseRegistryPath('GET', '/v2/_catalog', q()), { kind: 'catalog' });
  assert.deepEqual(parseRegistryPath('HEAD', '/v2/web/a/b/manifests/1', q()), {
    kind: 'repository',
    repository: 'web/a/b',
    app: 'web',
    action: 'pull',
    mountFrom: undefined,
  });
  const mount = parseRegistryPath('POST', '/v2/web/x/blobs/uploads/', q('mount=sha256:00&from=other/y'));
  assert.deepEqual(mount.kind === 'repository' && [mount.action, mount.mountFrom], [
    'push',
    { repository: 'other/y', app: 'other' },
  ]);
  const loose = parseRegistryPath('PUT', '/v2/img/manifests/1', q());
  assert.equal(loose.kind === 'repository' && loose.app, undefined);
  assert.equal(parseRegistryPath('DELETE', '/v2/web/x/blobs/sha256:00', q()).kind, 'repository');
  for (const bad of ['/v2/../x/manifests/1', '/v2/Web/x/manifests/1', '/v3/', '/v2/web/x/other']) {
    assert.equal(parseRegistryPath('GET', bad, q()).kind, 'unknown', bad);
  }
});

test('registry credentials: any user name with the token as password, or Bearer', () => {
  const basic = (text: string) => `Basic ${Buffer.from(text).toString('base64')}`;
  assert.equal(registryToken(basic('anyone:hg1_token')), 'hg1_token');
  assert.equal(registryToken(basic('x:a:b')), 'a:b');
  assert.equal(registryToken(basic('user:')), undefined);
  assert.equal(registryToken('Bearer hg1_token'), 'hg1_token');
  assert.equal(registryToken(undefined), undefined);
  assert.equal(registryToken('Digest x'), undefined);
});

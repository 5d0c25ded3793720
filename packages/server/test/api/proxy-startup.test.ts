import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import tls from 'node:tls';
import { DEFAULT_CONFIG } from '../../src/config/config.js';
import { startHangard } from '../../src/daemon.js';
import { mintAuthority, mintLeaf } from '../../src/proxy/dev-certificate.js';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { startTestHangard, testConfig } from '../helpers/hangard.js';

/** The proxy as hangard starts it, with a fake runtime: its settings, its start-up error, its endpoints. */

const proxyOn = (http: string, https = '127.0.0.1:0') => ({
  proxy: { ...DEFAULT_CONFIG.proxy, mode: 'on', http, https },
});

/** A loopback port another server holds for the whole test, and a data directory for a hangard to try. */
async function squattedPort(t: TestContext): Promise<{ port: number; dataDir: string }> {
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  t.after(() => squatter.close());
  const port = (squatter.address() as net.AddressInfo).port;
  const dataDir = mkdtempSync(join(tmpdir(), 'hangar-proxy-start-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  return { port, dataDir };
}

test('a taken proxy.http port stops hangard at start with an error naming the setting', async (t) => {
  const { port, dataDir } = await squattedPort(t);
  await assert.rejects(
    startHangard(testConfig(dataDir, proxyOn(`127.0.0.1:${port}`)), { runtime: new FakeRuntime() }),
    (error: Error) => {
      assert.match(error.message, new RegExp(`^proxy\\.http: 127\\.0\\.0\\.1:${port} is already in use`));
      assert.match(error.message, /proxy\.mode to "off"/);
      return true;
    },
  );
});

test('a taken proxy.https port stops hangard at start with an error naming the setting', async (t) => {
  const { port, dataDir } = await squattedPort(t);
  await assert.rejects(
    startHangard(testConfig(dataDir, proxyOn('127.0.0.1:0', `127.0.0.1:${port}`)), {
      runtime: new FakeRuntime(),
    }),
    (error: Error) => {
      assert.match(error.message, new RegExp(`^proxy\\.https: 127\\.0\\.0\\.1:${port} is already in use`));
      assert.match(error.message, /proxy\.https to "off"/);
      return true;
    },
  );
  // The positive control: the same settings with a free HTTPS port start.
  const h = await startTestHangard(t, { runtime: new FakeRuntime(), config: proxyOn('127.0.0.1:0') });
  assert.match(String(h.proxyHttpsUrl), /^https:\/\/127\.0\.0\.1:\d+$/);
});

test('proxy settings are validated, and the proxy reports where it listens', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'hangar-proxy-config-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  assert.throws(() => testConfig(dataDir, proxyOn('nowhere')), /invalid configuration at proxy\.http/);
  assert.throws(
    () => testConfig(dataDir, proxyOn('127.0.0.1:0', 'nowhere')),
    /invalid configuration at proxy\.https/,
  );
  assert.throws(
    () => testConfig(dataDir, { proxy: { ...DEFAULT_CONFIG.proxy, domain: 'Not A Domain' } }),
    /invalid configuration at proxy\.domain/,
  );
  const h = await startTestHangard(t, { runtime: new FakeRuntime(), config: proxyOn('127.0.0.1:0') });
  assert.match(String(h.proxyUrl), /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.ok('description' in h.proxy);
  // Unknown hosts get the proxy's own answer.
  const answer = await fetch(`${h.proxyUrl}/`, { headers: { host: 'nobody.hangar.localhost' } });
  assert.equal(answer.status, 404);
  assert.equal(answer.headers.get('x-hangar-proxy-error'), 'PH01');
  // Health endpoints need no token; the API's own routes still do.
  assert.equal((await fetch(`${h.url}/healthz`)).status, 200);
  assert.equal((await fetch(`${h.url}/readyz`)).status, 200);
  assert.equal((await fetch(`${h.url}/v1/apps?org_slug=personal`)).status, 401);
});

test("the operator's certificates: checked at start, then served by SNI instead of the development one", async (t) => {
  const pki = mkdtempSync(join(tmpdir(), 'hangar-test-pki-'));
  t.after(() => rmSync(pki, { recursive: true, force: true }));
  const ca = await mintAuthority(pki, 'ca', 'Hangar test CA');
  await mintLeaf(pki, 'wildcard', ['*.hangar.localhost'], 'ca');
  await mintLeaf(pki, 'other', ['other.example.test'], 'ca');
  const withCertificates = (cert: string, key: string) => ({
    proxy: {
      ...proxyOn('127.0.0.1:0').proxy,
      certificates: [{ cert: join(pki, `${cert}.pem`), key: join(pki, `${key}.key`) }],
    },
  });
  const dataDir = mkdtempSync(join(tmpdir(), 'hangar-proxy-certs-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  // A key that is not the certificate's stops hangard, naming the entry.
  await assert.rejects(
    startHangard(testConfig(dataDir, withCertificates('wildcard', 'other')), { runtime: new FakeRuntime() }),
    /^HangarError: proxy\.certificates\[0\]\.key: this private key does not belong to the first certificate/,
  );
  await assert.rejects(
    startHangard(testConfig(dataDir, withCertificates('missing', 'other')), { runtime: new FakeRuntime() }),
    /proxy\.certificates\[0\]\.cert: cannot read .*missing\.pem/,
  );
  // The matching pair: every app's name gets the wildcard, verified against the operator's CA.
  const h = await startTestHangard(t, {
    runtime: new FakeRuntime(),
    config: withCertificates('wildcard', 'wildcard'),
  });
  const port = Number(new URL(String(h.proxyHttpsUrl)).port);
  const peer = await new Promise<tls.PeerCertificate>((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'any-app.hangar.localhost',
      ca: ca.cert,
    });
    socket.once('secureConnect', () => {
      resolve(socket.getPeerCertificate());
      socket.destroy();
    });
    socket.once('error', reject);
  });
  assert.equal(peer.subject.CN, '*.hangar.localhost');
  assert.ok(!existsSync(join(h.dataDir, 'tls', 'dev-proxy.pem')), 'no development certificate was made');
});

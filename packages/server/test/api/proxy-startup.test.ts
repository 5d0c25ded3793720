import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_CONFIG } from '../../src/config/config.js';
import { startHangard } from '../../src/daemon.js';
import { FakeRuntime } from '../helpers/fake-runtime.js';
import { startTestHangard, testConfig } from '../helpers/hangard.js';

/** The proxy as hangard starts it, with a fake runtime: its settings, its start-up error, its endpoints. */

const proxyOn = (http: string, https = '127.0.0.1:0') => ({
  proxy: { ...DEFAULT_CONFIG.proxy, mode: 'on', http, https },
});

test('a taken proxy.http port stops hangard at start with an error naming the setting', async (t) => {
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  t.after(() => squatter.close());
  const port = (squatter.address() as net.AddressInfo).port;
  const dataDir = mkdtempSync(join(tmpdir(), 'hangar-proxy-start-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
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
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  t.after(() => squatter.close());
  const port = (squatter.address() as net.AddressInfo).port;
  const dataDir = mkdtempSync(join(tmpdir(), 'hangar-proxy-start-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
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

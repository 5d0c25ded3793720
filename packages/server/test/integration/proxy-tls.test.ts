import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { test } from 'node:test';
import tls from 'node:tls';
import { mintAuthority, mintLeaf, type PemPair } from '../../src/proxy/dev-certificate.js';
import { canConnect } from '../../src/proxy/upstream.js';
import { createApp, startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT, ok, pollUntil, sleep } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * The proxy's HTTPS listener, certificates, custom hostnames and handlers, with real machines: busybox
 * httpd machines whose CGI script prints the request's environment, and `nc` echo machines for the raw
 * TCP handlers (an echo shows exactly the bytes the machine received, PROXY header included).
 */

const skip = NEEDS_ROOT;
const DOMAIN = 'hangar.localhost';
const REQUEST_TIMEOUT_MS = 30_000;
const ECHO_CMD = ['/bin/nc', '-ll', '-p', '8080', '-e', '/bin/cat'];
/**
 * An HTTP server that understands the PROXY protocol: it reads the header line, then the request's
 * header block, and answers with the PROXY line it got.
 */
const PROXY_AWARE_HTTP = `#!/bin/sh
read -r proxy
while read -r line; do
  case "$line" in ''|"$(printf '\r')") break ;; esac
done
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "\${#proxy}" "$proxy"
`;

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The certificate the proxy showed (HTTPS only). */
  peer?: tls.PeerCertificate;
}

function collect(request: http.ClientRequest, resolve: (reply: Reply) => void, reject: (e: Error) => void) {
  request.on('response', (response) => {
    let body = '';
    const peer = (response.socket as tls.TLSSocket).getPeerCertificate?.();
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => {
      body += chunk;
    });
    response.on('end', () =>
      resolve({
        status: response.statusCode ?? 0,
        headers: response.headers,
        body,
        ...(peer ? { peer } : {}),
      }),
    );
  });
  request.on('timeout', () => request.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
  request.on('error', reject);
  request.end();
}

/** An HTTPS request to the proxy: the TLS server name and the Host may differ (attacks do that). */
function getHttps(
  port: number,
  options: { servername?: string; host: string; path?: string; ca: string | string[] },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const request = https.request({
      host: '127.0.0.1',
      port,
      path: options.path ?? '/',
      headers: { host: options.host },
      // An empty server name sends no SNI (as clients do for IP addresses).
      servername: options.servername ?? '',
      ca: options.ca,
      agent: false,
      timeout: REQUEST_TIMEOUT_MS,
      // The name checked against the certificate is the server name asked for; without one, the chain
      // is still verified against the CA, and the platform's certificate is what is expected.
      checkServerIdentity: (_host, cert) =>
        tls.checkServerIdentity(options.servername ?? `any.${DOMAIN}`, cert),
    });
    collect(request, resolve, reject);
  });
}

function getHttp(port: number, host: string, path = '/'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: '127.0.0.1',
      port,
      path,
      headers: { host },
      agent: false,
      timeout: REQUEST_TIMEOUT_MS,
    });
    collect(request, resolve, reject);
  });
}

/** Writes `payload` on a connection and reads until `expected` bytes came back (or the peer closed). */
function exchange(connection: Duplex, payload: Buffer, expected: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const timer = setTimeout(() => {
      connection.destroy();
      reject(
        new Error(
          `only ${length} of ${expected} bytes came back: ${Buffer.concat(chunks).toString('latin1')}`,
        ),
      );
    }, REQUEST_TIMEOUT_MS);
    const done = () => {
      clearTimeout(timer);
      connection.destroy();
      resolve(Buffer.concat(chunks));
    };
    connection.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= expected) done();
    });
    connection.on('close', done);
    connection.on('error', () => undefined);
    connection.write(payload);
  });
}

function connectTcp(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function connectTls(host: string, port: number, servername: string, ca: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, servername, ca });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** The handshake's failure, or 'connected'. */
function handshake(port: number, servername: string, ca: string): Promise<string> {
  return connectTls('127.0.0.1', port, servername, ca).then(
    (socket) => {
      socket.destroy();
      return 'connected';
    },
    (error: NodeJS.ErrnoException) => error.code ?? error.message,
  );
}

async function machine(h: TestHangard, app: string, image: string, config: Json): Promise<string> {
  const created = await ok(h, 'POST', `/v1/apps/${app}/machines`, { config: { image, ...config } });
  await ok(h, 'GET', `/v1/apps/${app}/machines/${created.id}/wait?state=started&timeout=60`);
  // Started is not yet listening: a request sent before the app binds its port would be refused and
  // retried on another machine, which would skew what the test measures.
  const { private_ip: address } = await ok(h, 'GET', `/v1/apps/${app}/machines/${created.id}`);
  await pollUntil(`machine ${created.id} listening`, async () =>
    (await canConnect(address, 8080, 1_000)) ? true : undefined,
  );
  return created.id;
}

const webService = (ports: Json[]) => ({ protocol: 'tcp', internal_port: 8080, ports });

test('HTTPS, certificates, custom hostnames and handlers with real machines', {
  skip,
  timeout: 300_000,
}, async (t) => {
  // A CA of the test, and one certificate per app it serves by name (as an operator would give them).
  const pki = mkdtempSync(join(tmpdir(), 'hangar-test-pki-'));
  t.after(() => rmSync(pki, { recursive: true, force: true }));
  const ca = await mintAuthority(pki, 'ca', 'Hangar test CA');
  const certA = await mintLeaf(pki, 'tl-a', [`tl-a.${DOMAIN}`], 'ca');
  const certB = await mintLeaf(pki, 'tl-b', [`tl-b.${DOMAIN}`], 'ca');
  const shop: PemPair = await mintLeaf(pki, 'shop', ['shop.example.test'], 'ca');
  const evil: PemPair = await mintLeaf(pki, 'evil', ['evil.example.test'], 'ca');
  const otherName = await mintLeaf(pki, 'other', ['other.example.test'], 'ca');

  const registryPort = await freePort();
  const httpPort = await freePort();
  const httpsPort = await freePort();
  const h = await startTestHangard(t, {
    config: {
      runtime: 'required',
      network: { mode: 'required', egress: false },
      registry: { port: registryPort, insecure: [] },
      capacity: { memoryOvercommit: 64, cpuOvercommit: 64 },
      proxy: {
        mode: 'on',
        http: `127.0.0.1:${httpPort}`,
        https: `127.0.0.1:${httpsPort}`,
        certificates: [
          { cert: join(pki, 'tl-a.pem'), key: join(pki, 'tl-a.key') },
          { cert: join(pki, 'tl-b.pem'), key: join(pki, 'tl-b.key') },
        ],
        domain: DOMAIN,
        idleStopMs: 60_000,
        autostopIntervalMs: 200,
        wakeTimeoutMs: 30_000,
        queueTimeoutMs: 1_500,
      },
    },
  });
  assert.equal(h.proxyHttpsUrl, `https://127.0.0.1:${httpsPort}`);
  const devCa = readFileSync(join(h.dataDir, 'tls', 'dev-ca.pem'), 'utf8');
  const images = new Map<string, Promise<string>>();
  const image = (app: string) => {
    let pushed = images.get(app);
    if (!pushed) {
      pushed = buildTestImage({
        registry: `127.0.0.1:${registryPort}`,
        token: h.token,
        repository: `${app}/tls-test`,
        files: {
          '/www/cgi-bin/env': {
            content: "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv\n",
            mode: 0o755,
          },
          '/www/proxy-aware': { content: PROXY_AWARE_HTTP, mode: 0o755 },
        },
      });
      images.set(app, pushed);
    }
    return pushed;
  };

  await t.test('public HTTPS: each app gets its own certificate by SNI; headers say https', async () => {
    for (const app of ['tl-a', 'tl-b', 'tl-c']) {
      await createApp(h, app);
      await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
    }
    await machine(h, 'tl-a', await image('tl-a'), {
      services: [
        webService([
          { port: 80, handlers: ['http'], force_https: true },
          { port: 443, handlers: ['tls', 'http'] },
        ]),
      ],
    });
    for (const app of ['tl-b', 'tl-c']) {
      await machine(h, app, await image(app), {
        services: [
          webService([
            { port: 80, handlers: ['http'] },
            { port: 443, handlers: ['tls', 'http'] },
          ]),
        ],
      });
    }
    for (const [app, cert] of [
      ['tl-a', certA],
      ['tl-b', certB],
    ] as const) {
      const reply = await getHttps(httpsPort, {
        servername: `${app}.${DOMAIN}`,
        host: `${app}.${DOMAIN}`,
        path: '/cgi-bin/env',
        ca: ca.cert,
      });
      assert.equal(reply.status, 200, reply.body);
      // The chain verified against the test's CA, and it is that app's own certificate.
      assert.equal(reply.peer?.subject.CN, `${app}.${DOMAIN}`);
      assert.equal(reply.peer?.fingerprint256, new X509Certificate(cert.cert).fingerprint256);
      assert.match(reply.body, new RegExp(`^FLY_APP_NAME=${app}$`, 'm'));
      assert.match(reply.body, /^HTTP_X_FORWARDED_PROTO=https$/m);
      assert.match(reply.body, /^HTTP_X_FORWARDED_SSL=on$/m);
      assert.match(reply.body, /^HTTP_X_FORWARDED_PORT=443$/m);
      assert.match(reply.body, /^HTTP_FLY_FORWARDED_PORT=443$/m);
      assert.match(reply.body, /^HTTP_FLY_CLIENT_IP=127\.0\.0\.1$/m);
    }
    // A name the operator gave no certificate for gets the development certificate from the data dir.
    const dev = await getHttps(httpsPort, {
      servername: `tl-c.${DOMAIN}`,
      host: `tl-c.${DOMAIN}`,
      ca: devCa,
    });
    assert.equal(dev.status, 200, dev.body);
    assert.match(String(dev.peer?.issuer.CN), /^Hangar development CA/);
    // Without SNI, the platform's certificate, and Host routing within the platform's names.
    const noSni = await getHttps(httpsPort, { host: `tl-b.${DOMAIN}`, ca: devCa });
    assert.equal(noSni.status, 200, noSni.body);
  });

  await t.test('SNI and Host must agree', async () => {
    // Positive control: the same connection with agreeing names is answered.
    const agree = await getHttps(httpsPort, {
      servername: `tl-a.${DOMAIN}`,
      host: `tl-a.${DOMAIN}`,
      ca: ca.cert,
    });
    assert.equal(agree.status, 200);
    const mismatch = await getHttps(httpsPort, {
      servername: `tl-a.${DOMAIN}`,
      host: `tl-b.${DOMAIN}`,
      ca: ca.cert,
    });
    assert.equal(mismatch.status, 421);
    assert.equal(mismatch.headers['x-hangar-proxy-error'], 'PT01');
    assert.match(
      mismatch.body,
      /TLS server name "tl-a\.hangar\.localhost" and the Host "tl-b\.hangar\.localhost" differ/,
    );
    // A name no certificate covers gets no handshake at all.
    assert.notEqual(await handshake(httpsPort, 'nobody.example.test', ca.cert), 'connected');
  });

  await t.test('force_https answers 301 with the HTTPS URL; without it, plain HTTP is served', async () => {
    const forced = await getHttp(httpPort, `tl-a.${DOMAIN}`, '/some/path?x=1');
    assert.equal(forced.status, 301);
    assert.equal(forced.headers.location, `https://tl-a.${DOMAIN}:${httpsPort}/some/path?x=1`);
    const plain = await getHttp(httpPort, `tl-b.${DOMAIN}`, '/cgi-bin/env');
    assert.equal(plain.status, 200);
    assert.match(plain.body, /^HTTP_X_FORWARDED_PROTO=http$/m);
  });

  await t.test('a custom hostname end to end, and a hostile tenant cannot take it', async () => {
    await createApp(h, 'tl-shop');
    await createApp(h, 'tl-evil');
    for (const app of ['tl-shop', 'tl-evil']) {
      await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
      await machine(h, app, await image(app), {
        services: [
          webService([
            { port: 80, handlers: ['http'] },
            { port: 443, handlers: ['tls', 'http'] },
          ]),
        ],
      });
    }
    const shopToken = (await ok(h, 'POST', '/v1/apps/tl-shop/deploy_token', {})).token as string;
    const evilToken = (await ok(h, 'POST', '/v1/apps/tl-evil/deploy_token', {})).token as string;
    const as = (token: string) => (method: string, path: string, body?: unknown) =>
      h.call(method, path, body, { token });
    const shopCall = as(shopToken);
    const evilCall = as(evilToken);
    const importBody = (hostname: string, pair: PemPair) => ({
      hostname,
      fullchain: pair.cert,
      private_key: pair.key,
    });

    // Refusals of bad input, each saying why.
    const wrongKey = await shopCall('POST', '/v1/apps/tl-shop/certificates/custom', {
      hostname: 'shop.example.test',
      fullchain: shop.cert,
      private_key: evil.key,
    });
    assert.equal(wrongKey.status, 400);
    assert.match(wrongKey.body.error, /private key does not belong to the first certificate/);
    const notCovered = await shopCall(
      'POST',
      '/v1/apps/tl-shop/certificates/custom',
      importBody('shop.example.test', otherName),
    );
    assert.equal(notCovered.status, 400);
    assert.match(notCovered.body.error, /does not cover shop\.example\.test/);

    const created = await shopCall(
      'POST',
      '/v1/apps/tl-shop/certificates/custom',
      importBody('shop.example.test', shop),
    );
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.hostname, 'shop.example.test');
    assert.equal(created.body.certificates[0].source, 'custom');
    const listed = await shopCall('GET', '/v1/apps/tl-shop/certificates');
    assert.deepEqual(
      listed.body.certificates.map((c: Json) => c.hostname),
      ['shop.example.test'],
    );
    const shown = await shopCall('GET', '/v1/apps/tl-shop/certificates/shop.example.test');
    assert.equal(shown.status, 200);
    // The private key never comes back, and is not in the database in the clear.
    const keyBody = shop.key
      .split('\n')
      .filter((line) => line && !line.startsWith('-----'))
      .join('');
    for (const answer of [created.body, listed.body, shown.body]) {
      const text = JSON.stringify(answer);
      assert.ok(!text.includes('PRIVATE KEY') && !text.includes(keyBody.slice(0, 40)), text);
    }
    for (const file of ['hangar.db', 'hangar.db-wal']) {
      const raw = (() => {
        try {
          return readFileSync(join(h.dataDir, file)).toString('latin1');
        } catch {
          return '';
        }
      })();
      assert.ok(!raw.includes(keyBody.slice(0, 40)), `${file} holds the private key in the clear`);
    }

    // End to end: HTTPS by SNI with the imported certificate, and plain HTTP by Host.
    const secure = await getHttps(httpsPort, {
      servername: 'shop.example.test',
      host: 'shop.example.test',
      path: '/cgi-bin/env',
      ca: ca.cert,
    });
    assert.equal(secure.status, 200, secure.body);
    assert.equal(secure.peer?.subject.CN, 'shop.example.test');
    assert.match(secure.body, /^FLY_APP_NAME=tl-shop$/m);
    const plain = await getHttp(httpPort, 'shop.example.test', '/cgi-bin/env');
    assert.match(plain.body, /^FLY_APP_NAME=tl-shop$/m);

    // The hostile tenant: positive control first (a name of its own works), then the attacks.
    const own = await evilCall(
      'POST',
      '/v1/apps/tl-evil/certificates/custom',
      importBody('evil.example.test', evil),
    );
    assert.equal(own.status, 201, JSON.stringify(own.body));
    const steal = await evilCall(
      'POST',
      '/v1/apps/tl-evil/certificates/custom',
      importBody('shop.example.test', shop),
    );
    assert.equal(steal.status, 422);
    assert.equal(steal.body.status, 'name_taken');
    assert.match(steal.body.error, /already held by another app/);
    assert.doesNotMatch(steal.body.error, /tl-shop/);
    const platformName = await mintLeaf(pki, 'platform', [`tl-shop.${DOMAIN}`, DOMAIN], 'ca');
    for (const name of [`tl-shop.${DOMAIN}`, DOMAIN]) {
      const claim = await evilCall(
        'POST',
        '/v1/apps/tl-evil/certificates/custom',
        importBody(name, platformName),
      );
      assert.equal(claim.status, 403, JSON.stringify(claim.body));
      assert.match(claim.body.error, /belong to the platform/);
    }
    for (const method of ['GET', 'DELETE']) {
      const other = await evilCall(method, '/v1/apps/tl-evil/certificates/shop.example.test');
      assert.equal(other.status, 404);
      const direct = await evilCall(method, '/v1/apps/tl-shop/certificates/shop.example.test');
      assert.equal(direct.status, 403);
    }
    // Its own name over TLS, with the Host of the victim: refused, not routed to either app.
    const ownName = await getHttps(httpsPort, {
      servername: 'evil.example.test',
      host: 'evil.example.test',
      ca: ca.cert,
    });
    assert.equal(ownName.status, 200);
    const hijack = await getHttps(httpsPort, {
      servername: 'evil.example.test',
      host: 'shop.example.test',
      ca: ca.cert,
    });
    assert.equal(hijack.status, 421);
    assert.equal(hijack.headers['x-hangar-proxy-error'], 'PT01');
    // Without SNI, a custom hostname is not served (the certificate shown would not be its own).
    const noSni = await getHttps(httpsPort, { host: 'shop.example.test', ca: devCa });
    assert.equal(noSni.status, 421);
    // The victim's hostname still belongs to the victim.
    const still = await shopCall('GET', '/v1/apps/tl-shop/certificates/shop.example.test');
    assert.equal(still.status, 200);

    // Deleted by its owner: no certificate, no route.
    const removed = await shopCall('DELETE', '/v1/apps/tl-shop/certificates/shop.example.test');
    assert.equal(removed.status, 200);
    await pollUntil('the hostname gone from the proxy', async () =>
      (await handshake(httpsPort, 'shop.example.test', ca.cert)) === 'connected' ? undefined : true,
    );
    const gone = await getHttp(httpPort, 'shop.example.test');
    assert.equal(gone.status, 404);
    assert.equal(gone.headers['x-hangar-proxy-error'], 'PH01');
  });

  await t.test(
    'handlers on Flycast: raw TCP, PROXY protocol v1 and v2, tls alone; and on public 443',
    async () => {
      const app = await createApp(h, 'tl-echo');
      const id = await machine(h, app, await image(app), {
        init: { exec: ECHO_CMD },
        services: [
          webService([{ port: 7000, handlers: [] }]),
          webService([{ port: 7001, handlers: ['proxy_proto'] }]),
          {
            ...webService([
              { port: 7002, handlers: ['proxy_proto'], proxy_proto_options: { version: 'v2' } },
            ]),
          },
          webService([{ port: 7003, handlers: ['tls'] }]),
          { ...webService([{ port: 443, handlers: ['tls'] }]), autostart: true },
        ],
      });
      const flycast = (await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'private_v6' }))
        .ip as string;
      const payload = Buffer.from('hello through the proxy\n');

      const raw = await pollUntil('the Flycast raw listener', async () => {
        const socket = await connectTcp(flycast, 7000).catch(() => undefined);
        return socket && exchange(socket, payload, payload.length).catch(() => undefined);
      });
      assert.equal(raw.toString(), payload.toString());

      const v1 = await pollUntil('the PROXY v1 listener', async () => {
        const socket = await connectTcp(flycast, 7001).catch(() => undefined);
        return socket && exchange(socket, payload, payload.length + 40).catch(() => undefined);
      });
      const text = v1.toString('latin1');
      const line = text.slice(0, text.indexOf('\r\n') + 2);
      assert.match(line, new RegExp(`^PROXY TCP6 [0-9a-f:]+ ${flycast} \\d+ 7001\\r\\n$`));
      assert.equal(text.slice(line.length), payload.toString());

      const v2 = await pollUntil('the PROXY v2 listener', async () => {
        const socket = await connectTcp(flycast, 7002).catch(() => undefined);
        return socket && exchange(socket, payload, 16 + 36 + payload.length).catch(() => undefined);
      });
      assert.deepEqual(
        [...v2.subarray(0, 12)],
        [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a],
      );
      assert.equal(v2[12], 0x21, 'version 2, PROXY');
      assert.equal(v2[13], 0x21, 'TCP over IPv6');
      assert.equal(v2.readUInt16BE(14), 36);
      assert.equal(v2.readUInt16BE(16 + 32 + 2), 7002, 'destination port');
      assert.equal(v2.subarray(16 + 36).toString(), payload.toString());

      // tls alone: TLS ends at the proxy and the machine gets (and echoes) the plaintext.
      const overTls = await pollUntil('the Flycast TLS listener', async () => {
        const socket = await connectTls(flycast, 7003, `${app}.${DOMAIN}`, devCa).catch(() => undefined);
        return socket && exchange(socket, payload, payload.length).catch(() => undefined);
      });
      assert.equal(overTls.toString(), payload.toString());

      // proxy_proto with http: the PROXY header goes first on the machine's connection, then the request.
      const aware = await createApp(h, 'tl-aware');
      await machine(h, aware, await image(aware), {
        init: { exec: ['/bin/nc', '-ll', '-p', '8080', '-e', '/www/proxy-aware'] },
        services: [webService([{ port: 7004, handlers: ['http', 'proxy_proto'] }])],
      });
      const awareIp = (await ok(h, 'POST', `/v1/apps/${aware}/ip_assignments`, { type: 'private_v6' }))
        .ip as string;
      const viaHttp = await pollUntil('the Flycast HTTP listener with proxy_proto', async () => {
        const reply = await new Promise<Reply | undefined>((resolve) => {
          const request = http.request({ host: awareIp, port: 7004, path: '/', agent: false }, (response) => {
            let body = '';
            response.on('data', (chunk) => {
              body += chunk;
            });
            response.on('end', () =>
              resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
            );
          });
          request.on('error', () => resolve(undefined));
          request.end();
        });
        return reply?.status === 200 ? reply : undefined;
      });
      assert.match(viaHttp.body, new RegExp(`^PROXY TCP6 [0-9a-f:]+ ${awareIp} \\d+ 7004\r$`));

      // Public 443 with tls alone, routed by SNI: the app needs a public address (first refused).
      const refused = await connectTls('127.0.0.1', httpsPort, `${app}.${DOMAIN}`, devCa);
      const answer = await exchange(
        refused,
        Buffer.from('GET / HTTP/1.1\r\nHost: tl-echo.hangar.localhost\r\n\r\n'),
        12,
      );
      assert.match(answer.toString(), /^HTTP\/1\.1 404/);
      await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'shared_v4' });
      const publicTls = await pollUntil('the public raw TLS route', async () => {
        const socket = await connectTls('127.0.0.1', httpsPort, `${app}.${DOMAIN}`, devCa).catch(
          () => undefined,
        );
        const echoed = socket && (await exchange(socket, payload, payload.length).catch(() => undefined));
        return echoed?.toString() === payload.toString() ? echoed : undefined;
      });
      assert.equal(publicTls.toString(), payload.toString());

      // A raw connection to a stopped machine wakes it, like a request does.
      await ok(h, 'POST', `/v1/apps/${app}/machines/${id}/stop`);
      await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/wait?state=stopped&timeout=30`);
      const woken = await exchange(
        await connectTls('127.0.0.1', httpsPort, `${app}.${DOMAIN}`, devCa),
        payload,
        payload.length,
      );
      assert.equal(woken.toString(), payload.toString());
      assert.equal((await ok(h, 'GET', `/v1/apps/${app}/machines/${id}`)).state, 'started');
      const events: Json[] = await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/events`);
      assert.ok(
        events.some((e) => e.type === 'wake' && e.request?.trigger === 'connection'),
        JSON.stringify(events.map((e) => [e.type, e.status, e.request])),
      );
    },
  );

  await t.test(
    'raw connections are autostop activity while they carry bytes; a silent one is ended',
    async () => {
      const app = await createApp(h, 'tl-idle');
      const id = await machine(h, app, await image(app), {
        init: { exec: ECHO_CMD },
        services: [
          {
            ...webService([{ port: 7100, handlers: [] }]),
            autostop: 'stop',
            autostart: true,
            idle_timeout: '2s',
          },
        ],
      });
      const flycast = (await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'private_v6' }))
        .ip as string;
      const socket = await pollUntil('the Flycast raw listener', () =>
        connectTcp(flycast, 7100).catch(() => undefined),
      );
      t.after(() => socket.destroy());
      let echoed = 0;
      socket.on('data', (chunk: Buffer) => {
        echoed += chunk.length;
      });
      let closed = false;
      socket.once('close', () => {
        closed = true;
      });
      // A byte every 200 ms for more than twice the idle period: the machine stays up.
      for (let i = 0; i < 25; i++) {
        socket.write('x');
        await sleep(200);
      }
      await pollUntil('the last bytes echoed', async () => (echoed === 25 ? true : undefined));
      assert.equal((await ok(h, 'GET', `/v1/apps/${app}/machines/${id}`)).state, 'started');
      // Silent from now on: idle, so autostop ends the connection and stops the machine.
      await pollUntil('autostop ending the connection', async () => (closed ? true : undefined), 30_000);
      await pollUntil(
        'the idle machine stopped',
        async () =>
          (await ok(h, 'GET', `/v1/apps/${app}/machines/${id}`)).state === 'stopped' ? true : undefined,
        30_000,
        100,
      );
      const events: Json[] = await ok(h, 'GET', `/v1/apps/${app}/machines/${id}/events`);
      assert.ok(events.some((e) => e.type === 'autostop' && e.status === 'stopped'));
    },
  );
});

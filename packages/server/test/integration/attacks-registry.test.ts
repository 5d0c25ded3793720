import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';
import { type DaemonProcess, daemonHarness } from '../helpers/daemon-process.js';
import { type Json, NEEDS_ROOT, ok, pollUntil } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Hostile tenants against Hangar's registry and image pulls, with a real hangard (a child process, so that
 * its HOME can hold "the host's saved credentials"), its real registry, real tokens through the API and
 * skopeo as the client. Every negative probe has its positive control beside it, and asserts why it
 * failed. Nothing is sent to a non-loopback address: refused registries are refused before any
 * connection, and the allowed ones are loopback addresses. Apps (with their machines) are deleted and
 * hangard stopped in an after-hook that runs before the harness removes the directories.
 */

const A = 'atk-a';
const B = 'atk-b';
/** The host's saved login for the credential-demanding registry below. */
const HOST_LOGIN = Buffer.from('hostuser:host-secret').toString('base64');

interface SkopeoResult {
  code: number;
  stderr: string;
}

function skopeo(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<SkopeoResult> {
  return new Promise((resolve) => {
    execFile('skopeo', args, { env, timeout: 30_000 }, (error, _stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stderr });
    });
  });
}

/** `skopeo inspect` of an image in Hangar's registry with `token` as the password (or no credentials). */
function inspect(reference: string, token: string | undefined): Promise<SkopeoResult> {
  const creds = token ? ['--creds', `anyone:${token}`] : ['--no-creds'];
  return skopeo(['inspect', '--raw', '--tls-verify=false', ...creds, `docker://${reference}`]);
}

/** A registry API call on Hangar's registry; `token` as Basic password, or none. */
async function registryCall(
  registry: string,
  method: string,
  path: string,
  token: string | undefined,
): Promise<{ status: number; headers: Headers; body: Json }> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Basic ${Buffer.from(`x:${token}`).toString('base64')}`;
  const response = await fetch(`http://${registry}${path}`, { method, headers });
  const text = await response.text();
  let body: Json = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: kept as text for the assertion message.
  }
  return { status: response.status, headers: response.headers, body };
}

/** A GET with the path sent exactly as written (fetch would resolve `..` itself); returns the status. */
function rawGet(registry: string, path: string, token: string): Promise<number> {
  const [host, port] = registry.split(':');
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      {
        host,
        port: Number(port),
        path,
        headers: {
          authorization: `Basic ${Buffer.from(`x:${token}`).toString('base64')}`,
          accept: 'application/vnd.oci.image.manifest.v1+json',
        },
      },
      (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      },
    );
    request.once('error', reject);
    request.end();
  });
}

/**
 * A loopback registry that wants the host's login: 401 with a Basic challenge to anything without it,
 * 404 (no such manifest) with it. It records every Authorization header it is sent.
 */
async function credentialRegistry(): Promise<{
  address: string;
  seen: (string | undefined)[];
  close: () => Promise<void>;
}> {
  const seen: (string | undefined)[] = [];
  const server = createServer((request, response) => {
    const headers: IncomingHttpHeaders = request.headers;
    seen.push(headers.authorization);
    response.setHeader('docker-distribution-api-version', 'registry/2.0');
    response.setHeader('content-type', 'application/json');
    if (headers.authorization !== `Basic ${HOST_LOGIN}`) {
      response.writeHead(401, { 'www-authenticate': 'Basic realm="test"' });
      response.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'login first' }] }));
      return;
    }
    response.writeHead(404);
    response.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'no such manifest' }] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function waitFailed(daemon: DaemonProcess, app: string, id: string, token: string): Promise<string> {
  return pollUntil(`machine ${id} to fail its pull`, async () => {
    const machine = (await daemon.call('GET', `/v1/apps/${app}/machines/${id}`, undefined, { token })).body;
    if (machine.state !== 'failed') return undefined;
    const event = (machine.events as Json[]).find((e) => e.type === 'start' && e.status === 'failed');
    return event?.request?.error as string | undefined;
  });
}

test("a hostile tenant gets nothing from Hangar's registry or its pulls", {
  skip: NEEDS_ROOT,
  timeout: 120_000,
}, async (t) => {
  let daemon: DaemonProcess | undefined;
  const closers: (() => Promise<void>)[] = [];
  // Registered before the harness, so it runs first: apps (and their machines) go while hangard runs.
  t.after(async () => {
    if (daemon) {
      for (const app of [A, B])
        await daemon.call('DELETE', `/v1/apps/${app}?force=true`).catch(() => undefined);
      await daemon.stop().catch(() => undefined);
    }
    for (const close of closers) await close();
  });
  const harness = daemonHarness(t);

  // The host's saved credentials, where skopeo looks for them, in a HOME of this test's own.
  const hostHome = harness.makeDataDir();
  const creds = await credentialRegistry();
  closers.push(creds.close);
  const authJson = JSON.stringify({ auths: { [creds.address]: { auth: HOST_LOGIN } } });
  mkdirSync(join(hostHome, '.docker'), { recursive: true });
  mkdirSync(join(hostHome, 'run', 'containers'), { recursive: true });
  writeFileSync(join(hostHome, '.docker', 'config.json'), authJson, { mode: 0o600 });
  writeFileSync(join(hostHome, 'run', 'containers', 'auth.json'), authJson, { mode: 0o600 });
  const hostEnv = { HOME: hostHome, XDG_RUNTIME_DIR: join(hostHome, 'run') };

  const registryPort = await freePort();
  const registry = `127.0.0.1:${registryPort}`;
  const closedPort = await freePort();
  const configFile = join(harness.makeDataDir(), 'hangar.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      registry: {
        port: registryPort,
        // One port of 127.0.0.2 is allowed (nothing listens there), the credential registry too.
        allowed: [`127.0.0.2:${closedPort}`],
        insecure: [creds.address],
      },
    }),
  );
  const dataDir = harness.makeDataDir();
  daemon = await harness.start(
    dataDir,
    { ...hostEnv, HANGAR_RUNTIME: 'required', HANGAR_LOG_LEVEL: 'warn' },
    ['--config', configFile],
  );
  const h = daemon;
  await ok(h, 'POST', '/v1/apps', { app_name: A, org_slug: 'personal' });
  await ok(h, 'POST', '/v1/apps', { app_name: B, org_slug: 'personal' });
  const tokenA = (await ok(h, 'POST', `/v1/apps/${A}/deploy_token`, {})).token as string;
  const tokenB = (await ok(h, 'POST', `/v1/apps/${B}/deploy_token`, {})).token as string;
  const readonly = (await ok(h, 'POST', '/v1/tokens', { type: 'readonly', org_slug: 'personal' }))
    .token as string;

  // Positive controls first: each deploy token pushes into its own app's space.
  const imageB = await buildTestImage({ registry, token: tokenB, repository: `${B}/img`, tag: '1' });
  const imageA = await buildTestImage({ registry, token: tokenA, repository: `${A}/img`, tag: '1' });

  await t.test('the registry wants a token, and answers with the challenge clients expect', async () => {
    const anonymous = await registryCall(registry, 'GET', '/v2/', undefined);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get('www-authenticate'), 'Basic realm="Hangar"');
    assert.equal(anonymous.body.errors[0].code, 'UNAUTHORIZED');
    const forged = await registryCall(registry, 'GET', '/v2/', `hg1_${'0'.repeat(16)}_${'x'.repeat(43)}`);
    assert.equal(forged.status, 401);
    assert.match(forged.body.errors[0].message, /not valid \(unknown, revoked or expired\)/);
    assert.equal((await registryCall(registry, 'GET', '/v2/', tokenA)).status, 200, 'positive control');
    const pulled = await inspect(imageB, undefined);
    assert.notEqual(pulled.code, 0);
    assert.match(pulled.stderr, /authentication required|unauthorized/i);
  });

  await t.test("app A's deploy token can neither pull nor push app B's repositories", async () => {
    const stolen = await inspect(imageB, tokenA);
    assert.notEqual(stolen.code, 0, "A read B's manifest");
    assert.match(stolen.stderr, /denied: this deploy token is for another app and cannot access \\?"atk-b/);
    const manifest = await registryCall(registry, 'GET', `/v2/${B}/img/manifests/1`, tokenA);
    assert.equal(manifest.status, 403);
    assert.equal(manifest.body.errors[0].code, 'DENIED');
    // Positive controls: B pulls its own image, A its own.
    assert.equal((await inspect(imageB, tokenB)).code, 0, 'B pulls its own image');
    assert.equal((await inspect(imageA, tokenA)).code, 0, 'A pulls its own image');

    await assert.rejects(
      buildTestImage({ registry, token: tokenA, repository: `${B}/img`, tag: '1' }),
      // skopeo shows only the status here; the probe below asserts the message.
      /atk-b\/img: 403 \(Forbidden\)/,
      "A overwrote B's tag",
    );
    // A path with `..` is authorized and served as the one it resolves to, never as written.
    const dotted = (path: string) => rawGet(registry, path, tokenA);
    assert.equal(await dotted(`/v2/${A}/img/../../${B}/img/manifests/1`), 403);
    assert.equal(await dotted(`/v2/${B}/img/../../${A}/img/manifests/1`), 200, 'positive control');
    const upload = await registryCall(registry, 'POST', `/v2/${B}/evil/blobs/uploads/`, tokenA);
    assert.equal(upload.status, 403);
    const own = await registryCall(registry, 'POST', `/v2/${A}/other/blobs/uploads/`, tokenA);
    assert.equal(own.status, 202, 'positive control: A starts an upload in its own space');
    assert.equal((await inspect(imageB, tokenB)).code, 0, "B's image is intact");
  });

  await t.test("a cross-repository mount cannot copy B's layers into A's space", async () => {
    const layerOf = async (app: string, token: string) => {
      const manifest = await fetch(`http://${registry}/v2/${app}/img/manifests/1`, {
        headers: {
          authorization: `Basic ${Buffer.from(`x:${token}`).toString('base64')}`,
          accept: 'application/vnd.oci.image.manifest.v1+json',
        },
      });
      return (JSON.parse(await manifest.text()) as Json).layers[0].digest as string;
    };
    const mount = (layer: string, from: string) =>
      `/v2/${A}/copied/blobs/uploads/?mount=${layer}&from=${from}`;
    const fromB = await registryCall(registry, 'POST', mount(await layerOf(B, tokenB), `${B}/img`), tokenA);
    assert.equal(fromB.status, 403);
    assert.match(fromB.body.errors[0].message, /cannot access "atk-b"/);
    const fromA = await registryCall(registry, 'POST', mount(await layerOf(A, tokenA), `${A}/img`), tokenA);
    assert.equal(
      fromA.status,
      201,
      `positive control: a mount within A's space: ${JSON.stringify(fromA.body)}`,
    );
  });

  await t.test('read-only tokens pull, never push; the catalog lists only what a token may see', async () => {
    assert.equal((await inspect(imageB, readonly)).code, 0, 'a read-only org token pulls');
    const push = await registryCall(registry, 'POST', `/v2/${A}/ro/blobs/uploads/`, readonly);
    assert.equal(push.status, 403);
    assert.match(push.body.errors[0].message, /read-only/);
    const outside = await registryCall(registry, 'POST', '/v2/loose/blobs/uploads/', h.token);
    assert.equal(outside.status, 403, 'even an org token pushes only into an app space');
    assert.match(outside.body.errors[0].message, /outside every app's space/);

    const catalogA = await registryCall(registry, 'GET', '/v2/_catalog', tokenA);
    assert.equal(catalogA.status, 200);
    const listed = catalogA.body.repositories as string[];
    assert.ok(listed.includes(`${A}/img`), JSON.stringify(listed));
    assert.deepEqual(
      listed.filter((name) => !name.startsWith(`${A}/`)),
      [],
      "A's catalog names only A's space",
    );
    const catalogOrg = await registryCall(registry, 'GET', '/v2/_catalog', h.token);
    assert.ok(catalogOrg.body.repositories.includes(`${B}/img`), 'positive control: the org token sees B');
  });

  await t.test('the registry behind the proxy is a root-only socket, not a port', async () => {
    const socket = join(dataDir, 'registry', 'registry.sock');
    assert.ok(statSync(socket).isSocket());
    assert.equal(statSync(socket).mode & 0o077, 0, 'only its owner may connect');
    assert.equal(statSync(join(dataDir, 'registry')).mode & 0o077, 0);
    const config = readFileSync(join(dataDir, 'registry', 'config.yml'), 'utf8');
    assert.match(config, /^ {2}net: unix$/m);
  });

  let machineA = '';
  await t.test("a machine of A cannot run B's image, or one outside every app's space", async () => {
    const asA = { token: tokenA };
    const refused = await h.call('POST', `/v1/apps/${A}/machines`, { config: { image: imageB } }, asA);
    assert.equal(refused.status, 403);
    assert.match(refused.body.error, /is in the space of app "atk-b" in Hangar's registry/);
    const loose = await h.call(
      'POST',
      `/v1/apps/${A}/machines`,
      { config: { image: `${registry}/img:1` } },
      asA,
    );
    assert.equal(loose.status, 400);
    assert.match(
      loose.body.error,
      new RegExp(`outside every app's space.*push it to ${registry}/atk-a/<name>`),
    );

    const created = await h.call('POST', `/v1/apps/${A}/machines`, { config: { image: imageA } }, asA);
    assert.equal(created.status, 200, JSON.stringify(created.body));
    machineA = created.body.id;
    const waited = await h.call(
      'GET',
      `/v1/apps/${A}/machines/${machineA}/wait?state=started&timeout=30`,
      undefined,
      asA,
    );
    assert.equal(waited.status, 200, `positive control: A's own image boots: ${JSON.stringify(waited.body)}`);
    const exec = await h.call(
      'POST',
      `/v1/apps/${A}/machines/${machineA}/exec`,
      { command: ['cat', '/www/index.html'] },
      asA,
    );
    assert.equal(exec.body.stdout, `hello from ${A}/img:1\n`);
    // The registry's address inside the machine is the machine's own loopback, where nothing listens.
    const probe = await h.call(
      'POST',
      `/v1/apps/${A}/machines/${machineA}/exec`,
      { command: ['sh', '-c', `nc -w 2 127.0.0.1 ${registryPort} </dev/null 2>&1; echo "exit $?"`] },
      asA,
    );
    assert.match(probe.body.stdout, /Connection refused[\s\S]*exit 1/i, 'a machine reached the registry');

    const update = await h.call(
      'POST',
      `/v1/apps/${A}/machines/${machineA}`,
      { config: { image: imageB } },
      asA,
    );
    assert.equal(update.status, 403);
    assert.match(update.body.error, /is in the space of app "atk-b"/);
    const machines = (await h.call('GET', `/v1/apps/${A}/machines`, undefined, asA)).body as Json[];
    assert.deepEqual(
      machines.map((m) => m.id),
      [machineA],
      'no machine was made by a refused request',
    );
    assert.equal(machines[0].config.image, imageA, 'the refused update changed nothing');
  });

  await t.test('loopback, link-local and private registries are refused before any connection', async () => {
    const asA = { token: tokenA };
    const create = (image: string) =>
      h.call('POST', `/v1/apps/${A}/machines`, { config: { image }, skip_launch: true }, asA);
    for (const [image, why] of [
      [`127.0.0.2:${closedPort + 1}/x:1`, /is refused: it is a loopback, link-local/],
      ['10.0.0.1/x:1', /is refused: it is a private address/],
      ['172.16.5.4:5000/x:1', /is refused: it is a private address/],
      ['100.64.0.1/x:1', /is refused: it is a private address/],
      ['169.254.169.254/x:1', /is refused: it is a loopback, link-local/],
      ['[fd00::1]/x:1', /is refused: it is a private address/],
      ['[fdaa::3]:53/x:1', /is refused: it is a loopback, link-local, private-network/],
      ['[::1]:5000/x:1', /is refused: it is a loopback/],
      [`[::1]:${registryPort}/${A}/img:1`, /is refused: it is a loopback/],
      [`localhost:${closedPort}/x:1`, /its name resolves to a loopback/],
    ] as const) {
      const answer = await create(image);
      assert.equal(answer.status, 403, `${image}: ${JSON.stringify(answer.body)}`);
      assert.match(answer.body.error, why, image);
      assert.match(answer.body.error, /registry\.allowed/);
    }
    // Positive controls: the same host on the allowed port, and Hangar's own registry by name.
    const allowed = await create(`127.0.0.2:${closedPort}/x:1`);
    assert.equal(allowed.status, 200, JSON.stringify(allowed.body));
    const byName = await create(`localhost:${registryPort}/${A}/img:1`);
    assert.equal(byName.status, 200, JSON.stringify(byName.body));
  });

  await t.test("a failed pull tells the tenant what happened, and only hangard's log where", async () => {
    const image = `127.0.0.2:${closedPort}/x:1`;
    const created = await ok(h, 'POST', `/v1/apps/${A}/machines`, { config: { image } });
    const error = await waitFailed(h, A, created.id, tokenA);
    assert.match(error, /could not be reached/);
    // The reference is the tenant's own words; nothing else may name an address, a port or a path.
    const rest = error.replaceAll(image, '<image>');
    assert.doesNotMatch(rest, /\b\d{1,3}(?:\.\d{1,3}){3}\b/, rest);
    assert.doesNotMatch(rest, /\[?[0-9a-f]*::[0-9a-f:]*\]?/i, rest);
    assert.doesNotMatch(rest, /:\d{2,5}\b/, rest);
    assert.doesNotMatch(rest, /\/(?:tmp|var|etc|root|home|proc|run|usr)\//, rest);
    assert.doesNotMatch(rest, /dial tcp|connection refused|lookup|skopeo/i, rest);
    // Positive control: the operator's log has the detail.
    await pollUntil("the pull failure in hangard's log", async () =>
      /pulling image 127\.0\.0\.2:\d+\/x:1 failed \(unreachable\): skopeo: .*127\.0\.0\.2:\d+.*connection refused/.test(
        h.output(),
      )
        ? true
        : undefined,
    );
  });

  await t.test("hangard's pulls never use the host's saved credentials", async () => {
    // Positive control: skopeo run by hand with that HOME does send the host's login.
    const byHand = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${creds.address}/x:1`], {
      ...process.env,
      ...hostEnv,
    });
    assert.match(byHand.stderr, /manifest unknown|no such manifest/i, 'the login was accepted');
    assert.ok(creds.seen.includes(`Basic ${HOST_LOGIN}`), 'skopeo sent the saved login');

    creds.seen.length = 0;
    const created = await ok(h, 'POST', `/v1/apps/${A}/machines`, {
      config: { image: `${creds.address}/x:1` },
    });
    const error = await waitFailed(h, A, created.id, tokenA);
    assert.match(error, /may not be pulled without credentials, which Hangar does not send/);
    assert.ok(creds.seen.length > 0, 'hangard asked the registry');
    // skopeo's anonymous access sends no header, or empty Basic credentials (`:`).
    const sent = creds.seen.filter((header) => header !== undefined && header !== `Basic ${btoa(':')}`);
    assert.deepEqual(sent, [], 'hangard sent credentials');
  });
});

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMachinesApiError, MachinesClient } from '@hangar/sdk';
import { gatewayAddress, networkIdOf, serviceAddress } from '../../src/sixpn/address-plan.js';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { NEEDS_ROOT, pollUntil } from '../helpers/integration.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Tunnels into an app's private network (`GET /v1/apps/{app}/tunnel`, `hangar proxy`), with real machines:
 * HTTP through `hangar proxy` to a machine by name, by 6PN address and through Flycast; then the same
 * endpoint attacked with app A's deploy token, each refusal beside a control that gets through.
 */

const CLI = fileURLToPath(new URL('../../../cli/dist/main.js', import.meta.url));
const APP_A = 'tun-app-a';
const APP_B = 'tun-app-b';
/** Each machine serves its own id on 8080. */
const SERVE_ID = [
  '/bin/busybox',
  'sh',
  '-c',
  'echo "$FLY_MACHINE_ID" > /www/index.html; exec /bin/busybox httpd -f -p 8080 -h /www',
];

interface TunnelAnswer {
  status: number;
  body: { error?: string; status?: string } | undefined;
  socket?: Duplex;
  address?: string;
}

/** One upgrade request to the tunnel endpoint; a 101 leaves the socket open for the caller. */
function tunnel(
  h: TestHangard,
  token: string,
  app: string,
  host: string,
  port: number,
): Promise<TunnelAnswer> {
  const query = new URLSearchParams({ host, port: String(port) });
  return new Promise((resolve, reject) => {
    const request = http.request(`${h.url}/v1/apps/${app}/tunnel?${query}`, {
      headers: { authorization: `Bearer ${token}`, connection: 'Upgrade', upgrade: 'hangar-tunnel' },
    });
    request.on('upgrade', (response, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      resolve({
        status: response.statusCode ?? 0,
        body: undefined,
        socket,
        address: String(response.headers['hangar-tunnel-address']),
      });
    });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) }));
    });
    request.on('error', reject);
    request.end();
  });
}

/** A raw HTTP/1.0 GET over an open tunnel; resolves with the whole answer. */
function getOver(socket: Duplex): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
    socket.write('GET / HTTP/1.0\r\nHost: tunnel\r\n\r\n');
  });
}

/** `hangar proxy 0:REMOTE [host] -a APP` in the background; resolves with the local port it printed. */
async function startProxy(
  t: { after(fn: () => unknown): void },
  h: TestHangard,
  token: string,
  args: string[],
): Promise<{ port: number; child: ChildProcess; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'proxy', ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HANGAR_API_URL: h.url, HANGAR_API_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const port = await pollUntil(
    `hangar proxy ${args.join(' ')} to listen (stderr: ${stderr})`,
    async () => {
      if (child.exitCode !== null) assert.fail(`hangar proxy exited ${child.exitCode}: ${stderr}`);
      const match = /Proxying local port (\d+) to remote \[/.exec(stdout);
      return match ? Number(match[1]) : undefined;
    },
    30_000,
  );
  return { port, child, stderr: () => stderr };
}

/** GET / on the local end of `hangar proxy`. */
function getLocal(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', agent: false }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          body += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** Stops `hangar proxy` with Ctrl-C's signal; resolves with its exit code. */
async function interrupt(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  return exited;
}

test('tunnels: hangar proxy reaches machines, names and Flycast of its app only', {
  skip: NEEDS_ROOT,
  timeout: 300_000,
}, async (t) => {
  const registryPort = await freePort();
  const proxyPort = await freePort();
  const h = await startTestHangard(t, {
    config: {
      runtime: 'required',
      network: { mode: 'required', egress: false },
      registry: { port: registryPort, insecure: [] },
      proxy: { mode: 'on', http: `127.0.0.1:${proxyPort}`, https: 'off', domain: 'tunnel.localhost' },
    },
  });
  const client = new MachinesClient({ baseUrl: h.url, token: h.token, rateLimit: false });
  // Apps go before hangard closes (its after-hook runs first): a finally, not an after-hook.
  try {
    await scenario(t, h, client, registryPort);
  } finally {
    for (const app of [APP_A, APP_B]) {
      await client.apps.delete(app, { force: true }).catch((error: unknown) => {
        if (!isMachinesApiError(error, 'not_found')) throw error;
      });
    }
  }
});

async function scenario(t: TestContext, h: TestHangard, client: MachinesClient, registryPort: number) {
  await client.apps.create({ app_name: APP_A, org_slug: 'personal', network: 'tun-net-a' });
  await client.apps.create({ app_name: APP_B, org_slug: 'personal', network: 'tun-net-b' });
  const launch = async (app: string) => {
    const image = await buildTestImage({
      registry: `127.0.0.1:${registryPort}`,
      token: h.token,
      repository: `${app}/web`,
      config: { cmd: SERVE_ID },
    });
    const machine = await client.machines.launch(app, {
      config: {
        image,
        services: [
          {
            protocol: 'tcp',
            internal_port: 8080,
            ports: [{ port: 80, handlers: ['http'] }],
            autostop: 'off',
          },
        ],
      },
    });
    await client.waitForState(app, machine.id, 'started', { timeoutMs: 60_000 });
    return client.machines.get(app, machine.id);
  };
  const a1 = await launch(APP_A);
  const b1 = await launch(APP_B);
  const a1Ip = a1.private_ip!;
  const b1Ip = b1.private_ip!;
  const flycast = await client.ipAssignments.allocate(APP_A, { type: 'private_v6' });
  const tokenA = (await client.tokens.create({ type: 'deploy', org_slug: 'personal', app_name: APP_A }))
    .token;
  const tokenB = (await client.tokens.create({ type: 'deploy', org_slug: 'personal', app_name: APP_B }))
    .token;
  const readonly = (await client.tokens.create({ type: 'readonly', org_slug: 'personal' })).token;

  // The machine answers once httpd runs (started means its process was launched).
  await pollUntil('the machine of A to serve', async () => {
    const answer = await tunnel(h, tokenA, APP_A, a1Ip, 8080).catch(() => undefined);
    if (answer?.status !== 101) return undefined;
    const text = await getOver(answer.socket!);
    return text.includes(a1.id) ? true : undefined;
  });

  await t.test('hangar proxy: default name, a 6PN address, Flycast by name and address', async (st) => {
    const byName = await startProxy(st, h, tokenA, ['0:8080', '-a', APP_A]);
    assert.deepEqual(await getLocal(byName.port), { status: 200, body: `${a1.id}\n` });
    // A second connection through the same listener: each is its own tunnel.
    assert.deepEqual(await getLocal(byName.port), { status: 200, body: `${a1.id}\n` });
    assert.equal(await interrupt(byName.child), 0, 'Ctrl-C ends hangar proxy with 0');

    const byAddress = await startProxy(st, h, tokenA, ['0:8080', a1Ip, '-a', APP_A]);
    assert.equal((await getLocal(byAddress.port)).body, `${a1.id}\n`);
    await interrupt(byAddress.child);

    const byFlycastName = await startProxy(st, h, tokenA, ['0:80', `${APP_A}.flycast`, '-a', APP_A]);
    assert.equal((await getLocal(byFlycastName.port)).body, `${a1.id}\n`);
    await interrupt(byFlycastName.child);

    const byFlycastIp = await startProxy(st, h, tokenA, ['0:80', flycast.ip, '-a', APP_A]);
    assert.equal((await getLocal(byFlycastIp.port)).body, `${a1.id}\n`);
    await interrupt(byFlycastIp.child);
  });

  await t.test('hangar proxy: a refused destination closes the connection and says why', async (st) => {
    const refused = await startProxy(st, h, tokenA, ['0:8080', b1Ip, '-a', APP_A]);
    await assert.rejects(getLocal(refused.port));
    await pollUntil('the refusal on stderr', async () =>
      /another app's network/.test(refused.stderr()) ? true : undefined,
    );
    await interrupt(refused.child);
  });

  await t.test("attacks with A's deploy token, each beside a control", async () => {
    const networkA = networkIdOf(a1Ip)!;
    const expectRefused = async (host: string, port: number, status: number, reason: RegExp) => {
      const answer = await tunnel(h, tokenA, APP_A, host, port);
      answer.socket?.destroy();
      assert.equal(answer.status, status, `${host} port ${port}: ${JSON.stringify(answer.body)}`);
      assert.match(answer.body?.error ?? '', reason, host);
    };
    const expectOpen = async (token: string, app: string, host: string, port: number) => {
      const answer = await tunnel(h, token, app, host, port);
      assert.equal(answer.status, 101, `${host}: ${JSON.stringify(answer.body)}`);
      answer.socket!.destroy();
    };

    // Another app's network: by address and by name. Control: A's own machine, and B's with B's token.
    await expectOpen(tokenA, APP_A, a1Ip, 8080);
    await expectRefused(b1Ip, 8080, 403, /another app's network/);
    await expectOpen(tokenB, APP_B, b1Ip, 8080);
    await expectOpen(tokenA, APP_A, `${APP_A}.internal`, 8080);
    await expectRefused(`${APP_B}.internal`, 8080, 404, /no address in this app's network/);
    await expectRefused(`${b1.id}.vm.${APP_B}.internal`, 8080, 404, /no address in this app's network/);

    // B's app through A's token: refused as any other call of that token is.
    await expectRefused(b1Ip, 8080, 403, /another app's network/);
    const crossApp = await tunnel(h, tokenA, APP_B, b1Ip, 8080);
    assert.equal(crossApp.status, 403);
    assert.match(crossApp.body?.error ?? '', /deploy token is for another app/);

    // The host: the network's DNS address, the bridge, loopback, the API itself, the private IPv4.
    await expectRefused(serviceAddress(networkA), 53, 403, /no machine or Flycast address/);
    await expectRefused(
      gatewayAddress(networkA, h.config.hostId),
      8080,
      403,
      /no machine or Flycast address/,
    );
    await expectRefused('::1', Number(new URL(h.url).port), 403, /not an address of a private network/);
    await expectRefused('127.0.0.1', Number(new URL(h.url).port), 403, /IPv4/);
    await expectRefused('localhost', Number(new URL(h.url).port), 403, /only .internal and .flycast names/);
    await expectOpen(tokenA, APP_A, `[${a1Ip}]`, 8080);

    // The outside world: a public name and a public address.
    await expectRefused('example.com', 443, 403, /only .internal and .flycast names/);
    await expectRefused('2606:4700:4700::1111', 443, 403, /not an address of a private network/);

    // A read-only token cannot open one even to its own app's machine (a tunnel is an action).
    const ro = await tunnel(h, readonly, APP_A, a1Ip, 8080);
    assert.equal(ro.status, 403);
    assert.match(ro.body?.error ?? '', /read-only/);
    // No token at all.
    const anonymous = await tunnel(h, '', APP_A, a1Ip, 8080);
    assert.equal(anonymous.status, 401);
  });
}

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { type TestContext, test } from 'node:test';
import { runCommand } from '../../src/shared/run.js';
import { bridgeName, networkIdOf } from '../../src/sixpn/address-plan.js';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT, ok, pollUntil } from '../helpers/integration.js';
import { ProbeAgent } from '../helpers/probe-agent.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * The private IPv4 address of each machine, with real machines: hangard with crun, its networking and
 * the proxy on a loopback port. Three apps serve the same CGI on port 8080, bound three ways: to
 * `0.0.0.0` (what Fly's documents tell users), to `::` with IPV6_V6ONLY (the namespace's bindv6only is
 * set before the server starts), and to the machine's 6PN address alone (`fly-local-6pn`); all three
 * answer real requests through the proxy, which dials the IPv4 address first and the 6PN one second.
 * Then machines of the same network and of another one aim at the IPv4 address, routed through the
 * gateway and straight over the bridge: each attempt is dropped and counted by its rule, while the proxy
 * (the control) still reaches it.
 */

const skip = NEEDS_ROOT;
const DOMAIN = 'hangar.localhost';
const NETWORK = 'v4-net';
const OTHER_NETWORK = 'v4-other-net';
/** The CGI names the app and the address the request came from (the gateway's, IPv4 or IPv6). */
const WHO_CGI = {
  content: `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho "$FLY_APP_NAME $REMOTE_ADDR"\n`,
  mode: 0o755,
};
/** Waits for /tmp/go before serving: the test sets the namespace's bindv6only first. */
const GATED = (listen: string) => [
  '/bin/sh',
  '-c',
  `while [ ! -e /tmp/go ]; do sleep 0.05; done; exec httpd -f -p ${listen} -h /www`,
];

const must = async (file: string, args: string[]) => {
  const result = await runCommand(file, args, { timeoutMs: 30_000 });
  assert.equal(result.code, 0, `${file} ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
};

async function dropCount(family: 'inet' | 'bridge', chain: string, comment: string): Promise<number> {
  const text = await must('nft', ['list', 'chain', family, 'hangar', chain]);
  const match = new RegExp(`counter packets (\\d+) bytes \\d+ drop comment "${comment}"`).exec(text);
  assert.ok(match, `no "${comment}" counter in ${family} ${chain}:\n${text}`);
  return Number(match[1]);
}

function get(proxyPort: number, app: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port: proxyPort,
        path: '/cgi-bin/who',
        headers: { host: `${app}.${DOMAIN}` },
        agent: false,
        timeout: 30_000,
      },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          body += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: body.trim() }));
      },
    );
    request.on('timeout', () => request.destroy(new Error('no answer within 30 s')));
    request.on('error', reject);
    request.end();
  });
}

/** Turns IPv4 forwarding on for the bridges (so only the rules keep machines apart); undone in t.after. */
async function forwardV4(t: TestContext, bridges: string[]): Promise<void> {
  for (const bridge of bridges) {
    const path = `/proc/sys/net/ipv4/conf/${bridge}/forwarding`;
    const prior = (await readFile(path, 'utf8')).trim();
    t.after(() => writeFile(path, prior).catch(() => undefined));
    await writeFile(path, '1');
  }
}

test('each machine has a private IPv4 address that only the host reaches', {
  skip,
  timeout: 240_000,
}, async (t) => {
  const registryPort = await freePort();
  const proxyPort = await freePort();
  const h: TestHangard = await startTestHangard(t, {
    config: {
      runtime: 'required',
      network: { mode: 'required', egress: false },
      registry: { port: registryPort, insecure: [] },
      proxy: {
        mode: 'on',
        http: `127.0.0.1:${proxyPort}`,
        https: 'off',
        domain: DOMAIN,
        idleStopMs: 600_000,
        autostopIntervalMs: 60_000,
        wakeTimeoutMs: 30_000,
        queueTimeoutMs: 1_500,
      },
    },
  });
  const agents: ProbeAgent[] = [];
  t.after(async () => {
    for (const agent of agents) await agent.stop();
  });
  const imageFor = (app: string, cmd: string[]) =>
    buildTestImage({
      registry: `127.0.0.1:${registryPort}`,
      token: h.token,
      repository: `${app}/who`,
      config: { cmd },
      files: { '/www/cgi-bin/who': WHO_CGI },
    });
  const service = {
    protocol: 'tcp',
    internal_port: 8080,
    autostop: 'off',
    ports: [{ port: 80, handlers: ['http'] }],
  };
  const run = async (app: string, network: string, cmd: string[], extra: Json = {}) => {
    await ok(h, 'POST', '/v1/apps', { app_name: app, org_slug: 'personal', network });
    const created = await ok(h, 'POST', `/v1/apps/${app}/machines`, {
      config: { image: await imageFor(app, cmd), guest: { memory_mb: 128 }, ...extra },
    });
    await ok(h, 'GET', `/v1/apps/${app}/machines/${created.id}/wait?state=started&timeout=60`);
    await ok(h, 'POST', `/v1/apps/${app}/ip_assignments`, { type: 'v6' });
    return (await ok(h, 'GET', `/v1/apps/${app}/machines/${created.id}`)) as Json;
  };

  const v4Only = await run('v4-any', NETWORK, GATED('0.0.0.0:8080'), { services: [service] });
  const v6Only = await run('v4-v6only', NETWORK, GATED('8080'), { services: [service] });
  const sixPn = await run('v4-6pn', NETWORK, GATED('"[$FLY_PRIVATE_IP]:8080"'), { services: [service] });
  const neighbour = await run('v4-neighbour', NETWORK, ['/bin/busybox', 'sleep', '3600']);
  const stranger = await run('v4-stranger', OTHER_NETWORK, ['/bin/busybox', 'sleep', '3600']);
  const ipv4Of = async (id: string) =>
    /inet (\S+)\/32/.exec(await must('ip', ['-n', `hangar-${id}`, '-4', 'addr', 'show', 'dev', 'eth0']))?.[1];
  // bindv6only in the v6only machine's namespace, before its server binds `::`.
  await must('ip', ['netns', 'exec', `hangar-${v6Only.id}`, 'sysctl', '-qw', 'net.ipv6.bindv6only=1']);
  for (const [app, m] of [
    ['v4-any', v4Only],
    ['v4-v6only', v6Only],
    ['v4-6pn', sixPn],
  ] as const) {
    await ok(h, 'POST', `/v1/apps/${app}/machines/${m.id}/exec`, {
      command: ['/bin/busybox', 'touch', '/tmp/go'],
    });
  }
  const gateway6 = (id: string) =>
    must('ip', ['-n', `hangar-${id}`, '-6', 'route', 'show', 'default']).then(
      (s) => /via (\S+)/.exec(s)![1]!,
    );

  await t.test('every machine has its own address from the range, with a route from the host', async () => {
    const addresses = [];
    for (const m of [v4Only, v6Only, sixPn, neighbour, stranger]) {
      const address = await ipv4Of(m.id);
      assert.ok(address?.startsWith('10.213.'), `machine ${m.id} has ${address}`);
      const route = await must('ip', ['-4', 'route', 'show', `${address}/32`]);
      assert.match(route, /dev hgn[0-9a-f]+ .*src 10\.213\.0\.1/, route);
      addresses.push(address);
    }
    assert.equal(new Set(addresses).size, addresses.length, 'no two machines share one');
  });

  await t.test(
    'apps bound to 0.0.0.0, to :: (v6only) and to their 6PN address all answer the proxy',
    async () => {
      const answers = await Promise.all(
        ['v4-any', 'v4-v6only', 'v4-6pn'].map((app) =>
          pollUntil(`${app} answers`, async () => {
            const reply = await get(proxyPort, app);
            return reply.status === 200 ? reply : undefined;
          }),
        ),
      );
      // The source each saw tells the path: the IPv4 gateway for 0.0.0.0, the bridge's 6PN address else.
      assert.equal(answers[0]!.body, 'v4-any 10.213.0.1');
      // busybox writes an IPv6 REMOTE_ADDR in brackets.
      assert.equal(answers[1]!.body, `v4-v6only [${await gateway6(v6Only.id)}]`);
      assert.equal(answers[2]!.body, `v4-6pn [${await gateway6(sixPn.id)}]`);
    },
  );

  await t.test('machines of the same network and of another one cannot reach that address', async () => {
    const target = (await ipv4Of(v4Only.id))!;
    const networkId = networkIdOf(v4Only.private_ip)!;
    const otherBridge = bridgeName(networkIdOf(stranger.private_ip)!);
    // With forwarding on, the kernel would route the probes: only the rules stop them.
    await forwardV4(t, [bridgeName(networkId), otherBridge]);
    const fromNeighbour = new ProbeAgent(`hangar-${neighbour.id}`, 'neighbour');
    const fromStranger = new ProbeAgent(`hangar-${stranger.id}`, 'stranger');
    agents.push(fromNeighbour, fromStranger);
    await Promise.all([fromNeighbour.ready, fromStranger.ready]);

    // Through the gateway, as any socket of the machine would go; and to an address no machine holds,
    // which must look the same (silence, not "host unreachable"), so that none can be told apart.
    const routedBefore = await dropCount('inet', 'prerouting', "to a machine's private IPv4");
    const routed = await Promise.all([
      fromNeighbour.probe({ kind: 'tcp', to: target, port: 8080 }),
      fromStranger.probe({ kind: 'tcp', to: target, port: 8080 }),
      fromNeighbour.probe({ kind: 'tcp', to: '10.213.255.200', port: 8080 }),
    ]);
    assert.deepEqual(
      routed.map((r) => [r.ok, r.detail]),
      [
        [false, 'timeout'],
        [false, 'timeout'],
        [false, 'timeout'],
      ],
    );
    const routedDropped =
      (await dropCount('inet', 'prerouting', "to a machine's private IPv4")) - routedBefore;
    assert.ok(routedDropped >= 3, `the prerouting rule dropped ${routedDropped}`);

    // Straight over the bridge: the neighbour points the address at the target's MAC itself.
    const [eth0] = JSON.parse(
      await must('ip', ['-n', `hangar-${v4Only.id}`, '-j', 'link', 'show', 'dev', 'eth0']),
    ) as {
      address: string;
    }[];
    await must('ip', [
      '-n',
      `hangar-${neighbour.id}`,
      '-4',
      'route',
      'replace',
      `${target}/32`,
      'dev',
      'eth0',
    ]);
    await must('ip', [
      '-n',
      `hangar-${neighbour.id}`,
      'neigh',
      'replace',
      target,
      'lladdr',
      eth0!.address,
      'dev',
      'eth0',
    ]);
    const l2Before = await dropCount('bridge', 'ipv4_from_machine', 'IPv4 past the gateway');
    const direct = await fromNeighbour.probe({ kind: 'tcp', to: target, port: 8080 });
    assert.deepEqual([direct.ok, direct.detail], [false, 'timeout']);
    const l2Dropped = (await dropCount('bridge', 'ipv4_from_machine', 'IPv4 past the gateway')) - l2Before;
    assert.ok(l2Dropped >= 1, `the bridge dropped ${l2Dropped}`);
    // And asking the bridge who has the address is refused too (only the gateway may be asked).
    await must('ip', ['-n', `hangar-${neighbour.id}`, 'neigh', 'del', target, 'dev', 'eth0']);
    const arpBefore = await dropCount('bridge', 'arp_from_machine', 'ARP beyond the gateway');
    const asked = await fromNeighbour.probe({ kind: 'tcp', to: target, port: 8080 });
    assert.equal(asked.ok, false);
    const arpDropped = (await dropCount('bridge', 'arp_from_machine', 'ARP beyond the gateway')) - arpBefore;
    assert.ok(arpDropped >= 1, `the bridge dropped ${arpDropped} ARP requests`);

    // Control: the proxy still reaches the machine on that address.
    assert.equal((await get(proxyPort, 'v4-any')).body, 'v4-any 10.213.0.1');
  });

  await t.test(
    'destroying a machine releases its address: route gone, not handed out again at once',
    async () => {
      const address = (await ipv4Of(neighbour.id))!;
      await ok(h, 'DELETE', `/v1/apps/v4-neighbour/machines/${neighbour.id}?force=true`);
      await pollUntil('the route goes', async () =>
        (await must('ip', ['-4', 'route', 'show', `${address}/32`])).trim() === '' ? true : undefined,
      );
      const next = await ok(h, 'POST', '/v1/apps/v4-neighbour/machines', {
        config: {
          image: await imageFor('v4-neighbour', ['/bin/busybox', 'sleep', '3600']),
          guest: { memory_mb: 128 },
        },
      });
      await ok(h, 'GET', `/v1/apps/v4-neighbour/machines/${next.id}/wait?state=started&timeout=60`);
      const given = await ipv4Of(next.id);
      assert.ok(given?.startsWith('10.213.'), `the new machine has ${given}`);
      assert.notEqual(given, address, 'the released address waits its turn');
    },
  );
});

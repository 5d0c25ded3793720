import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { machinePaths } from '../../src/runtime/machine-paths.js';
import { runCommand } from '../../src/shared/run.js';
import { bridgeName, networkIdOf, serviceAddress } from '../../src/sixpn/address-plan.js';
import { RESOLVER_ADDRESS } from '../../src/sixpn/resolver.js';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { NEEDS_ROOT, ok, pollUntil, readFromHost } from '../helpers/integration.js';
import { ProbeAgent } from '../helpers/probe-agent.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * What a hostile tenant tries against the host, with real machines through the API: hangard with crun
 * and its networking, an app serving one TCP and one UDP port behind a Flycast address, and an attacker
 * machine of another app in the same network. The host runs listeners on `[::]` and `0.0.0.0` (a
 * stand-in for sshd, a database, hangard itself, and on the service ports for the proxy). Every probe
 * that must fail has its control beside it (the same listener answering where it should), and asserts
 * why it failed: a silent drop (a timeout, never a refusal from the host's stack), counted by the rule
 * that is meant to drop it, and never seen by the listener.
 *
 * Also here: a deploy token placing a Flycast address into another network, and the files a machine
 * gets (secrets among them): 0400 by default, in a directory no host user but root can open.
 */

const skip = NEEDS_ROOT;
const DNS_PROBE = fileURLToPath(new URL('./dns-probe.mjs', import.meta.url));
const NETWORK = 'atk-net';
const OTHER_NETWORK = 'atk-other-net';
const SECRET = 'tok-3f9c2e7d-not-for-other-users';
const CONFIG_TEXT = 'listen = 8080\n';
/** An unprivileged host user: what a local account on the server would be. */
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

const must = async (file: string, args: string[]) => {
  const result = await runCommand(file, args, { timeoutMs: 30_000 });
  assert.equal(result.code, 0, `${file} ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
};

/** The packets a named drop rule has counted (`counter packets N bytes M drop comment "<comment>"`). */
async function dropCount(family: 'inet' | 'bridge', chain: string, comment: string): Promise<number> {
  const text = await must('nft', ['list', 'chain', family, 'hangar', chain]);
  const match = new RegExp(`counter packets (\\d+) bytes \\d+ drop comment "${comment}"`).exec(text);
  assert.ok(match, `no "${comment}" counter in ${family} ${chain}:\n${text}`);
  return Number(match[1]);
}

/** A host socket standing in for a service on the host; it records who reached it. */
interface HostListener {
  port: number;
  /** `<local address> <- <remote address>` of each TCP connection or UDP datagram received. */
  seen: string[];
}

/**
 * A TCP server that answers each connection with `host socket <where>` and records it. Closing it also
 * drops the connections it accepted: a machine destroyed mid-connection never sends its FIN, and an
 * accepted socket left half-open would keep this process alive.
 */
function answeringServer(
  listener: HostListener,
  where: (socket: net.Socket) => string,
): { server: net.Server; close: () => void } {
  const open = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {});
    listener.seen.push(`${socket.localAddress} <- ${socket.remoteAddress}`);
    socket.end(`host socket ${where(socket)}\n`);
  });
  const close = () => {
    server.close();
    for (const socket of open) socket.destroy();
  };
  return { server, close };
}

/**
 * TCP listeners on [::] (dual stack) at `port` and `port + 1`, a UDP socket on [::] at `port + 2`, each
 * answering with the address it was reached on; the three ports must be free. Retried on a clash.
 */
async function hostListeners(t: TestContext): Promise<[HostListener, HostListener, HostListener]> {
  for (let attempt = 0; ; attempt++) {
    const base = await freePort();
    const listeners: HostListener[] = [0, 1, 2].map((i) => ({ port: base + i, seen: [] }));
    const closers: (() => void)[] = [];
    try {
      for (const listener of listeners.slice(0, 2)) {
        const { server, close } = answeringServer(
          listener,
          (socket) => `${socket.localAddress}:${listener.port}`,
        );
        closers.push(close);
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: '::', port: listener.port }, resolve);
        });
      }
      const udpListener = listeners[2]!;
      const udp = dgram.createSocket({ type: 'udp6' });
      udp.on('message', (_message, peer) => {
        udpListener.seen.push(`udp <- ${peer.address}`);
        udp.send(`host socket udp:${udpListener.port}`, peer.port, peer.address);
      });
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(udpListener.port, '::', resolve);
      });
      closers.push(() => udp.close());
      t.after(() => {
        for (const close of closers) close();
      });
      return listeners as [HostListener, HostListener, HostListener];
    } catch (error) {
      for (const close of closers) close();
      if (attempt >= 5) throw error;
    }
  }
}

/** An IPv4-only listener on 0.0.0.0 (what binds all IPv4 addresses on a real server). */
async function ipv4Listener(t: TestContext): Promise<HostListener> {
  const listener: HostListener = { port: 0, seen: [] };
  const { server, close } = answeringServer(listener, (socket) => `${socket.localAddress}`);
  t.after(close);
  await new Promise<void>((resolve) => server.listen({ host: '0.0.0.0', port: 0 }, resolve));
  listener.port = (server.address() as net.AddressInfo).port;
  return listener;
}

/** The host's own addresses a machine could aim at: every global IPv6 and IPv4 address it has. */
async function hostAddresses(): Promise<{ v6: string[]; v4: string[] }> {
  const links = JSON.parse(await must('ip', ['-j', 'addr', 'show'])) as {
    addr_info: { family: string; local: string; scope: string }[];
  }[];
  const all = links.flatMap((l) => l.addr_info).filter((a) => a.scope === 'global');
  return {
    v6: all.filter((a) => a.family === 'inet6').map((a) => a.local),
    v4: all.filter((a) => a.family === 'inet').map((a) => a.local),
  };
}

test('a hostile tenant gets nothing of the host', { skip, timeout: 300_000 }, async (t) => {
  const [service, next, udpService] = await hostListeners(t);
  const v4 = await ipv4Listener(t);
  const registryPort = await freePort();
  const h: TestHangard = await startTestHangard(t, {
    config: {
      runtime: 'required',
      network: { mode: 'required', egress: false },
      registry: { port: registryPort, insecure: [] },
    },
  });
  const agents: ProbeAgent[] = [];
  t.after(async () => {
    for (const agent of agents) await agent.stop();
  });
  // Each app runs the same probe image from its own space of Hangar's registry.
  const imageFor = (app: string) =>
    buildTestImage({
      registry: `127.0.0.1:${registryPort}`,
      token: h.token,
      repository: `${app}/probe`,
      // Not on 8080, where the probe agent serves inside the attacker's namespace.
      config: { cmd: ['/bin/busybox', 'httpd', '-f', '-p', '8081', '-h', '/www'] },
      files: {
        '/etc/passwd': 'root:x:0:0:root:/:/bin/sh\nguest:x:1000:1000:guest:/tmp:/bin/sh\n',
        '/etc/group': 'root:x:0:\nguest:x:1000:\n',
      },
    });

  // The victim app serves TCP on service.port and UDP on udpService.port (the proxy's listeners, once
  // it exists; the host listeners stand in for it), with a secret file and a plain one.
  await ok(h, 'POST', '/v1/apps', { app_name: 'atk-web', org_slug: 'personal', network: NETWORK });
  await ok(h, 'POST', '/v1/apps', { app_name: 'atk-tenant', org_slug: 'personal', network: NETWORK });
  await ok(h, 'POST', '/v1/apps', { app_name: 'atk-other', org_slug: 'personal', network: OTHER_NETWORK });
  // A file's secret holds the file's content in base64, as on Fly.
  await ok(h, 'POST', '/v1/apps/atk-web/secrets', {
    values: { TOKEN: Buffer.from(SECRET).toString('base64') },
  });
  const webImage = await imageFor('atk-web');
  const web = await ok(h, 'POST', '/v1/apps/atk-web/machines', {
    config: {
      image: webImage,
      guest: { memory_mb: 128 },
      services: [
        { protocol: 'tcp', internal_port: 8081, ports: [{ port: service.port }] },
        { protocol: 'udp', internal_port: 8081, ports: [{ port: udpService.port }] },
      ],
      files: [
        { guest_path: '/run/secrets/token', secret_name: 'TOKEN' },
        { guest_path: '/etc/app.conf', raw_value: Buffer.from(CONFIG_TEXT).toString('base64') },
      ],
    },
  });
  const tenant = await ok(h, 'POST', '/v1/apps/atk-tenant/machines', {
    config: { image: await imageFor('atk-tenant'), guest: { memory_mb: 128 } },
  });
  for (const [app, machine] of [
    ['atk-web', web],
    ['atk-tenant', tenant],
  ] as const) {
    const wait = await h.call('GET', `/v1/apps/${app}/machines/${machine.id}/wait?state=started&timeout=60`);
    assert.equal(wait.status, 200, JSON.stringify(wait.body));
  }
  const flycast = (await ok(h, 'POST', '/v1/apps/atk-web/ip_assignments', { type: 'private_v6' }))
    .ip as string;
  const networkId = networkIdOf(flycast)!;
  const netns = `hangar-${tenant.id}`;
  // The machine's gateway is the host's address on the network's bridge.
  const gateway = /default via (\S+)/.exec(
    await must('ip', ['-n', netns, '-6', 'route', 'show', 'default']),
  )![1]!;
  const attacker = new ProbeAgent(netns, 'attacker');
  agents.push(attacker);
  await attacker.ready;
  const tenantIp = (await ok(h, 'GET', `/v1/apps/atk-tenant/machines/${tenant.id}`)).private_ip as string;
  const sh = (app: string, id: string, script: string) =>
    ok(h, 'POST', `/v1/apps/${app}/machines/${id}/exec`, { command: ['/bin/sh', '-c', script] });

  // The rules follow the allocation through the store's change feed: wait for the open port first.
  await pollUntil('the Flycast service port opens', async () => {
    const r = await attacker.probe({ kind: 'tcp', to: flycast, port: service.port });
    return r.ok ? r : undefined;
  });

  await t.test(
    'Flycast opens exactly the service ports; ::3, fdaa::3 and host addresses nothing',
    async () => {
      const { v6, v4: hostV4 } = await hostAddresses();
      const own3 = serviceAddress(networkId);
      // What must be blocked: the listener next to the service port on Flycast, every host socket on ::3,
      // fdaa::3, the bridge's gateway and the host's own addresses, on either port; UDP outside the UDP
      // service; the TCP service port over UDP and the UDP one over TCP.
      // (The UDP service port over TCP has no TCP listener: a refusal would mean it got in.)
      const blocked: { to: string; port: number; kind: 'tcp' | 'udp'; why: string; control?: false }[] = [
        { to: flycast, port: next.port, kind: 'tcp', why: 'Flycast, the port next to the service' },
        {
          to: flycast,
          port: udpService.port,
          kind: 'tcp',
          why: 'Flycast, UDP service port over TCP',
          control: false,
        },
      ];
      for (const [to, label] of [
        [own3, "the network's ::3"],
        [RESOLVER_ADDRESS, 'fdaa::3'],
        [gateway, 'the gateway'],
        ...v6.map((a) => [a, `host address ${a}`]),
      ] as const) {
        for (const port of [service.port, next.port]) blocked.push({ to, port, kind: 'tcp', why: label });
        blocked.push({ to, port: udpService.port, kind: 'udp', why: label });
      }
      // Controls: each blocked target answers from the host itself, so a listener is there and it is the
      // rules that keep the machine out.
      for (const { to, port, kind, control } of blocked) {
        if (kind !== 'tcp' || control === false) continue;
        assert.equal(
          await readFromHost(to, port),
          `host socket ${to}:${port}`,
          `control: the host reaches ${to}:${port}`,
        );
      }
      const before = await dropCount('inet', 'machine_to_host', 'machine to host');
      service.seen.length = 0;
      next.seen.length = 0;
      udpService.seen.length = 0;
      const results = await Promise.all(
        blocked.map(async (b) => ({ b, r: await attacker.probe({ kind: b.kind, to: b.to, port: b.port }) })),
      );
      const wrong = results
        .filter(
          ({ b, r }) =>
            r.ok || r.detail !== 'timeout' || (b.kind === 'udp' && r.sent !== 'from attacker'.length),
        )
        .map(({ b, r }) => `${b.why} ${b.kind} [${b.to}]:${b.port}: ${JSON.stringify(r)}`);
      assert.deepEqual(wrong, [], 'every probe was sent and silently dropped');
      const dropped = (await dropCount('inet', 'machine_to_host', 'machine to host')) - before;
      assert.ok(
        dropped >= blocked.length,
        `the "machine to host" rule dropped ${dropped} of ${blocked.length}`,
      );
      const fromTenant = (l: HostListener) => l.seen.filter((s) => s.endsWith(tenantIp));
      assert.deepEqual(
        [...fromTenant(service), ...fromTenant(next), ...fromTenant(udpService)],
        [],
        'no host socket heard the machine',
      );

      // Controls beside them: the service ports on the Flycast address, TCP and UDP, reach the stand-in.
      const tcpOpen = await attacker.probe({ kind: 'tcp', to: flycast, port: service.port });
      assert.deepEqual(
        [tcpOpen.ok, tcpOpen.answer],
        [true, `host socket ${flycast}:${service.port}`],
        JSON.stringify(tcpOpen),
      );
      const udpOpen = await attacker.probe({ kind: 'udp', to: flycast, port: udpService.port });
      assert.equal(udpOpen.answer, `host socket udp:${udpService.port}`, JSON.stringify(udpOpen));
      // DNS on ::3:53 and fdaa::3:53 answers the machine.
      const dns = JSON.parse(
        await must('ip', [
          'netns',
          'exec',
          `hangar-${tenant.id}`,
          process.execPath,
          DNS_PROBE,
          JSON.stringify(
            [own3, RESOLVER_ADDRESS].flatMap((server) =>
              ['udp', 'tcp'].map((transport) => ({
                server,
                name: 'atk-web.flycast',
                type: 'AAAA',
                transport,
              })),
            ),
          ),
        ]),
      );
      assert.deepEqual(dns, Array(4).fill({ rcode: 'NOERROR', answers: [flycast] }));
      // And from inside the container, as the tenant's own process would: the service port answers, the
      // one next to it does not.
      const inside = await sh(
        'atk-tenant',
        tenant.id,
        `timeout 3 nc ${flycast} ${service.port} </dev/null; echo "exit $?"; timeout 3 nc ${flycast} ${next.port} </dev/null; echo "exit $?"`,
      );
      assert.match(
        inside.stdout,
        new RegExp(`^host socket ${flycast}:${service.port}`),
        JSON.stringify(inside),
      );
      // nc got no connection (a drop: timeout ends it), never an answer from the listener next door.
      assert.match(inside.stdout, /\nexit 0\nexit 143\n$/, JSON.stringify(inside));
      assert.ok(!inside.stdout.includes(`:${next.port}`), JSON.stringify(inside));
      assert.equal(fromTenant(next).length, 0);

      // IPv4: the machine gives itself an address and aims at the host's IPv4 addresses (its listener on
      // 0.0.0.0), with the bridge's MAC as the next hop so the frames really leave. The bridge table drops
      // them as IPv4; control: the host reaches the listener on each of those addresses.
      const [bridgeLink] = JSON.parse(
        await must('ip', ['-j', 'link', 'show', 'dev', bridgeName(networkId)]),
      ) as {
        address: string;
      }[];
      await must('ip', ['-n', netns, '-4', 'addr', 'add', '198.18.0.2/32', 'dev', 'eth0']);
      const v4Targets = hostV4;
      assert.ok(v4Targets.length > 0, 'the host has an IPv4 address to aim at');
      for (const address of v4Targets) {
        assert.equal(await readFromHost(address, v4.port), `host socket ${address}`, `control: ${address}`);
        await must('ip', ['-n', netns, '-4', 'route', 'replace', `${address}/32`, 'dev', 'eth0']);
        await must('ip', [
          '-n',
          netns,
          'neigh',
          'replace',
          address,
          'lladdr',
          bridgeLink!.address,
          'dev',
          'eth0',
        ]);
      }
      const v4Before = await dropCount('bridge', 'from_machine', '6PN is IPv6 only');
      const v4Results = await Promise.all(
        v4Targets.map((to) => attacker.probe({ kind: 'tcp', to, port: v4.port })),
      );
      assert.deepEqual(
        v4Results.map((r) => [r.ok, r.detail]),
        v4Targets.map(() => [false, 'timeout']),
      );
      const v4Dropped = (await dropCount('bridge', 'from_machine', '6PN is IPv6 only')) - v4Before;
      assert.ok(v4Dropped >= v4Targets.length, `the bridge dropped ${v4Dropped} IPv4 frames`);
      assert.deepEqual(
        v4.seen.filter((s) => s.endsWith('198.18.0.2')),
        [],
      );
    },
  );

  await t.test('the open ports follow the services of the app’s machines', async () => {
    // A machine of the app that serves next.port (never started: the proxy would start it) opens it;
    // destroying it closes it again.
    const extra = await ok(h, 'POST', '/v1/apps/atk-web/machines', {
      config: {
        image: webImage,
        services: [{ protocol: 'tcp', internal_port: 8081, ports: [{ port: next.port }] }],
      },
      skip_launch: true,
    });
    const opened = await pollUntil('next.port opens', async () => {
      const r = await attacker.probe({ kind: 'tcp', to: flycast, port: next.port });
      return r.ok ? r : undefined;
    });
    assert.equal(opened.answer, `host socket ${flycast}:${next.port}`);
    await ok(h, 'DELETE', `/v1/apps/atk-web/machines/${extra.id}?force=true`);
    await pollUntil('next.port closes', async () => {
      const r = await attacker.probe({ kind: 'tcp', to: flycast, port: next.port });
      return r.detail === 'timeout' ? r : undefined;
    });
    // Releasing the address closes the service port too.
    await ok(h, 'DELETE', `/v1/apps/atk-web/ip_assignments/${encodeURIComponent(flycast)}`);
    await pollUntil('the released address closes', async () => {
      const r = await attacker.probe({ kind: 'tcp', to: flycast, port: service.port });
      return r.detail === 'timeout' ? r : undefined;
    });
  });

  await t.test(
    'a deploy token cannot place a Flycast address in another network; an org token can',
    async () => {
      const deploy = (await ok(h, 'POST', '/v1/apps/atk-web/deploy_token', { expiry: '1h' })).token as string;
      const refused = await h.call(
        'POST',
        '/v1/apps/atk-web/ip_assignments',
        { type: 'private_v6', network: OTHER_NETWORK },
        { token: deploy },
      );
      assert.equal(refused.status, 403, JSON.stringify(refused.body));
      assert.equal(refused.body.status, 'forbidden');
      assert.match(
        refused.body.error,
        new RegExp(`only in its app's own network "${NETWORK}", not in "${OTHER_NETWORK}"`),
      );
      // Controls: the same token in its own network; the org token in the other one.
      const own = await h.call(
        'POST',
        '/v1/apps/atk-web/ip_assignments',
        { type: 'private_v6' },
        { token: deploy },
      );
      assert.equal(own.status, 200, JSON.stringify(own.body));
      const placed = await h.call('POST', '/v1/apps/atk-web/ip_assignments', {
        type: 'private_v6',
        network: OTHER_NETWORK,
      });
      assert.equal(placed.status, 200, JSON.stringify(placed.body));
      assert.equal(placed.body.network.name, OTHER_NETWORK);
    },
  );

  await t.test(
    'machine files: 0400 by default, readable by the machine’s root only, hidden from host users',
    async () => {
      const inside = await sh(
        'atk-web',
        web.id,
        [
          'ls -ln /run/secrets/token /etc/app.conf',
          'cat /run/secrets/token; echo',
          'su -s /bin/sh guest -c "cat /run/secrets/token" 2>&1; echo "guest exit $?"',
          'su -s /bin/sh guest -c "cat /etc/hosts" >/dev/null 2>&1; echo "guest hosts exit $?"',
        ].join('; '),
      );
      const lines = inside.stdout.split('\n');
      assert.match(lines[0]!, /^-r-------- +1 0 +0 .* \/etc\/app\.conf$/, inside.stdout);
      assert.match(lines[1]!, /^-r-------- +1 0 +0 .* \/run\/secrets\/token$/, inside.stdout);
      assert.equal(lines[2], SECRET, 'root in the machine reads it');
      assert.match(inside.stdout, /Permission denied\nguest exit 1\n/, 'another uid in the machine does not');
      assert.match(inside.stdout, /guest hosts exit 0\n/, 'control: that uid reads a world-readable file');

      // On the host: the files dir is root's alone. An unprivileged user reaches it (the dirs above are
      // 0711) but can neither list it nor open a file in it by its predictable name.
      const files = machinePaths(h.dataDir, web.id).files;
      const dirStat = await stat(files);
      assert.equal((dirStat.mode & 0o777).toString(8), '700');
      assert.equal(dirStat.uid, 0);
      const asNobody = (args: string[]) => runCommand('setpriv', [...NOBODY, ...args], { timeoutMs: 10_000 });
      const seen = await asNobody(['stat', '-c', '%a %u', files]);
      assert.equal(seen.stdout.trim(), '700 0', `control: the user gets as far as the dir: ${seen.stderr}`);
      const list = await asNobody(['ls', files]);
      assert.match(list.stderr, /Permission denied/, `list: ${list.code} ${list.stdout}`);
      const secretPath = join(files, '2');
      assert.equal(
        (await must('cat', [secretPath])).toString(),
        SECRET,
        'the secret is file 2 (root reads it)',
      );
      const read = await asNobody(['cat', secretPath]);
      assert.match(read.stderr, /Permission denied/, `read: ${read.code} ${read.stdout}`);
      // Control: the same user reads a world-readable file of the test's own.
      const scratch = await mkdtemp(join(tmpdir(), 'hangar-atk-'));
      t.after(() => rm(scratch, { recursive: true, force: true }));
      await chmod(scratch, 0o755);
      await writeFile(join(scratch, 'open'), 'readable\n', { mode: 0o644 });
      assert.equal((await asNobody(['cat', join(scratch, 'open')])).stdout, 'readable\n');
    },
  );
});

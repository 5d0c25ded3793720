import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Hangard, startHangard } from '../../src/daemon.js';
import { acquireHostNetworkLock, DEFAULT_HOST_LOCK_PATH } from '../../src/net/host-lock.js';
import { LinuxNetwork } from '../../src/net/linux-net.js';
import { runCommand } from '../../src/shared/run.js';
import {
  bridgeName,
  networkIdOf,
  sameNetwork,
  serviceAddress,
  vethName,
} from '../../src/sixpn/address-plan.js';
import { parseIpv6 } from '../../src/sixpn/ipv6.js';
import { RESOLVER_ADDRESS } from '../../src/sixpn/resolver.js';
import { enableForwarding, forwardingOn } from '../helpers/forwarding.js';
import { callApi, testConfig } from '../helpers/hangard.js';
import { NEEDS_ROOT, ok, pollUntil } from '../helpers/integration.js';
import { ProbeAgent } from '../helpers/probe-agent.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Private networks with real machines: hangard with the host's OCI runtime and its networking, three
 * apps on two custom networks and the default network, two machines each. Probes run inside each
 * machine's own network namespace (the admin entry's way in), DNS is asked from there and from inside
 * the containers, and the plumbing is checked on the host: what destroying an app removes, and that a
 * restarted hangard rebuilds it with no duplicate rules. Everything is removed at the end, checked.
 */

const skip = NEEDS_ROOT;
const DNS_PROBE = fileURLToPath(new URL('./dns-probe.mjs', import.meta.url));
/** The machines' own process: an HTTP server on 8081 answering with the machine id. */
const SERVE_ID = [
  '/bin/sh',
  '-c',
  'echo "$FLY_MACHINE_ID" > /www/index.html && exec httpd -f -p 8081 -h /www',
];

interface Machine {
  id: string;
  app: string;
  /** Which of the three networks: a, b, or d (default). */
  net: 'a' | 'b' | 'd';
  ip: string;
  agent?: ProbeAgent;
}

const APPS = { a: 'pn-app-a', b: 'pn-app-b', d: 'pn-app-d' } as const;
const NETWORK_NAMES = { a: 'pn-net-a', b: 'pn-net-b' } as const;

const must = async (file: string, args: string[]) => {
  const result = await runCommand(file, args, { timeoutMs: 30_000 });
  assert.equal(result.code, 0, `${file} ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
};

/** Hangar's networking on the host: tables, hg* links, fdaa::3 on lo, the rules as nft prints them. */
async function hostNetworking() {
  const tables = (await must('nft', ['list', 'tables'])).split('\n').filter((l) => /\bhangar$/.test(l));
  const links = (
    JSON.parse(await must('ip', ['-j', 'link', 'show'])) as { ifname: string; master?: string }[]
  )
    .filter((l) => /^hg[nvw][0-9a-f]+$/.test(l.ifname))
    .map((l) => `${l.ifname}${l.master ? `@${l.master}` : ''}`)
    .sort();
  const resolver = (await must('ip', ['-6', 'addr', 'show', 'dev', 'lo'])).includes(
    `${RESOLVER_ADDRESS}/128`,
  );
  const rules = tables.length
    ? (await must('nft', ['-s', 'list', 'table', 'inet', 'hangar'])) +
      (await must('nft', ['-s', 'list', 'table', 'bridge', 'hangar']))
    : '';
  return { tables, links, resolver, rules };
}

/** The packets a named drop rule of Hangar's tables has counted so far. */
async function dropCount(family: 'inet' | 'bridge', chain: string, comment: string): Promise<number> {
  const text = await must('nft', ['list', 'chain', family, 'hangar', chain]);
  const match = new RegExp(`counter packets (\\d+) bytes \\d+ drop comment "${comment}"`).exec(text);
  assert.ok(match, `no "${comment}" counter in ${family} ${chain}:\n${text}`);
  return Number(match[1]);
}

/** DNS queries from inside a machine's network namespace (dns-probe.mjs). */
async function dnsFrom(
  machine: Machine,
  queries: { server: string; name: string; type: string; transport?: 'udp' | 'tcp' }[],
): Promise<{ rcode?: string; answers?: string[]; error?: string }[]> {
  const list = queries.map((q) => ({ transport: 'udp', ...q }));
  const out = await must('ip', [
    'netns',
    'exec',
    `hangar-${machine.id}`,
    process.execPath,
    DNS_PROBE,
    JSON.stringify(list),
  ]);
  return JSON.parse(out);
}

test('private networks with real machines', { skip, timeout: 540_000 }, async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'hangar-pn-'));
  const registryPort = await freePort();
  const config = testConfig(dataDir, {
    runtime: 'required',
    network: { mode: 'required', egress: false },
    registry: { port: registryPort, insecure: [] },
  });
  const warnings: string[] = [];
  // Held for the whole test, across the restart: no other test may take the host in between.
  const hostLock = await acquireHostNetworkLock({ waitMs: 300_000 });
  const start = (removeMachinesOnClose: boolean) =>
    startHangard(config, {
      removeMachinesOnClose,
      hostLock: { held: hostLock },
      onWarning: (message) => warnings.push(message),
    });
  const machines: Machine[] = [];
  const hostServers: net.Server[] = [];
  // The hangard that is running; the first one keeps its machines and plumbing when it closes (that is
  // the restart being tested), so cleanup starts a removing one if that is the last that ran.
  let live: { hangard: Hangard; removes: boolean } | undefined;
  let restoreForwarding: (() => Promise<void>) | undefined;
  t.after(async () => {
    await restoreForwarding?.();
    for (const machine of machines) await machine.agent?.stop();
    for (const server of hostServers) server.close();
    if (live && !live.removes) {
      await live.hangard.close();
      live = { hangard: await start(true), removes: true };
    }
    await live?.hangard.close();
    await rm(dataDir, { recursive: true, force: true });
    const left = await hostNetworking();
    if (left.tables.length || left.links.length || left.resolver) {
      await new LinuxNetwork().removeAll(); // leave the host usable, then fail
    }
    hostLock.release();
    assert.deepEqual(
      { ...left, rules: undefined },
      { tables: [], links: [], resolver: false, rules: undefined },
    );
    // Released by this process: another test file may hold it again by now, under its own pid.
    const holder = await readFile(DEFAULT_HOST_LOCK_PATH, 'utf8').catch(() => '');
    assert.notEqual(holder.split(' ')[0], String(process.pid), 'the host network lock is released');
    assert.deepEqual(
      (await must('ip', ['netns', 'list']))
        .split('\n')
        .filter((l) => machines.some((m) => l.startsWith(`hangar-${m.id}`))),
      [],
    );
  });

  live = { hangard: await start(false), removes: false };
  t.diagnostic(`network: ${JSON.stringify(live.hangard.network)}`);
  assert.ok('description' in live.hangard.network, JSON.stringify(live.hangard.network));
  const token = live.hangard.createdToken!;
  const call = (method: string, path: string, body?: unknown) =>
    callApi(live!.hangard.url, token, method, path, body);
  const api = { call };

  const images: Partial<Record<Machine['net'], string>> = {};
  for (const key of ['a', 'b', 'd'] as const) {
    await ok(api, 'POST', '/v1/apps', {
      app_name: APPS[key],
      org_slug: 'personal',
      ...(key === 'd' ? {} : { network: NETWORK_NAMES[key] }),
    });
    // Each app runs the probe from its own space of Hangar's registry.
    const image = await buildTestImage({
      registry: `127.0.0.1:${registryPort}`,
      token,
      repository: `${APPS[key]}/probe`,
      config: { cmd: SERVE_ID },
    });
    images[key] = image;
    for (let i = 0; i < 2; i++) {
      const body = await ok(api, 'POST', `/v1/apps/${APPS[key]}/machines`, {
        config: { image, guest: { memory_mb: 128 } },
      });
      machines.push({ id: body.id, app: APPS[key], net: key, ip: '' });
    }
  }
  for (const machine of machines) {
    const wait = await call(
      'GET',
      `/v1/apps/${machine.app}/machines/${machine.id}/wait?state=started&timeout=60`,
    );
    assert.equal(wait.status, 200, JSON.stringify(wait.body));
    const body = await ok(api, 'GET', `/v1/apps/${machine.app}/machines/${machine.id}`);
    machine.ip = body.private_ip;
  }
  const byNet = (key: Machine['net']) => machines.filter((m) => m.net === key);
  const networkOf = (key: Machine['net']) => networkIdOf(byNet(key)[0]!.ip)!;
  // With IPv6 forwarding on for the bridges, the kernel would route between networks: what keeps them
  // apart below is then the rule set, not the kernel's default (restored in cleanup, even on failure).
  const bridges = (['a', 'b', 'd'] as const).map((k) => bridgeName(networkOf(k)));
  const forwarding = await enableForwarding(bridges);
  restoreForwarding = forwarding.restore;
  t.diagnostic(`forwarding: ${forwarding.how}`);

  await t.test(
    'addresses: one /48 per network, fixed at create, in the machine as FLY_PRIVATE_IP',
    async () => {
      for (const machine of machines) {
        assert.match(
          machine.ip,
          /^fdaa:[0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:2$/,
        );
        assert.equal(
          networkIdOf(machine.ip),
          networkOf(machine.net),
          `${machine.id} is in its app's network`,
        );
      }
      assert.equal(new Set(['a', 'b', 'd'].map((k) => networkOf(k as Machine['net']))).size, 3);
      const a1 = byNet('a')[0]!;
      const inside = await ok(api, 'POST', `/v1/apps/${a1.app}/machines/${a1.id}/exec`, {
        command: [
          '/bin/sh',
          '-c',
          'echo "$FLY_PRIVATE_IP"; cat /etc/resolv.conf; grep fly-local-6pn /etc/hosts',
        ],
      });
      assert.equal(inside.stdout, `${a1.ip}\nnameserver fdaa::3\n${a1.ip}\tfly-local-6pn\n`);
    },
  );

  await t.test('the isolation matrix: same network reachable, every cross-network pair not', async () => {
    for (const bridge of bridges) assert.ok(await forwardingOn(bridge), `${bridge} forwards`);
    const crossBefore = await dropCount('inet', 'leaving_network', 'cross-network or egress off');
    let crossProbes = 0;
    for (const machine of machines) {
      machine.agent = new ProbeAgent(`hangar-${machine.id}`, machine.id);
      await machine.agent.ready;
    }
    let tried = 0;
    const wrong: string[] = [];
    const expect = async (
      from: Machine,
      kind: 'tcp' | 'udp' | 'icmp',
      to: string,
      reachable: boolean,
      label: string,
    ) => {
      tried++;
      const result = await from.agent!.probe({ kind, to });
      if (result.ok !== reachable)
        wrong.push(
          `${label} ${kind}: ${reachable ? 'blocked' : 'reached'} (${result.detail ?? result.answer})`,
        );
    };
    let pairs = 0;
    for (const from of machines) {
      const probes: Promise<void>[] = [];
      for (const to of machines) {
        if (to === from) continue;
        pairs++;
        if (to.net !== from.net) crossProbes += 3;
        for (const kind of ['tcp', 'udp', 'icmp'] as const) {
          probes.push(
            expect(from, kind, to.ip, to.net === from.net, `${from.net}:${from.id} → ${to.net}:${to.id}`),
          );
        }
      }
      // Another network's service address (its DNS): nothing of it is reachable, not even ping.
      for (const other of ['a', 'b', 'd'] as const) {
        if (other === from.net) continue;
        for (const kind of ['tcp', 'udp', 'icmp'] as const) {
          probes.push(
            expect(
              from,
              kind,
              serviceAddress(networkOf(other)),
              false,
              `${from.net}:${from.id} → ::3 of ${other}`,
            ),
          );
        }
      }
      await Promise.all(probes);
    }
    t.diagnostic(
      `isolation matrix: ${machines.length} machines, ${pairs} ordered pairs × tcp/udp/icmp, plus other networks' ::3: ${tried} probes, ${wrong.length} wrong`,
    );
    // A probe that got no answer may still have been delivered one way: every datagram each machine
    // received came from its own network.
    for (const machine of machines) {
      for (const source of await machine.agent!.heard()) {
        if (!sameNetwork(source, machine.ip)) wrong.push(`${machine.net}:${machine.id} heard ${source}`);
      }
    }
    assert.deepEqual(wrong, []);
    // Why they failed: routed (forwarding is on) and dropped by the rule between bridges. With
    // forwarding off the kernel would have dropped them before that rule, and it would count nothing.
    const crossDropped =
      (await dropCount('inet', 'leaving_network', 'cross-network or egress off')) - crossBefore;
    assert.ok(
      crossDropped >= crossProbes,
      `the cross-network rule dropped ${crossDropped} packets for ${crossProbes} probes`,
    );
  });

  await t.test('spoofed sources are dropped before they reach anyone', async () => {
    // Fresh agents: what they hear from now on is only what this test sends.
    for (const machine of machines) {
      await machine.agent!.stop();
      machine.agent = new ProbeAgent(`hangar-${machine.id}`, machine.id);
      await machine.agent.ready;
    }
    // Each machine borrows addresses and sends UDP with them: a same-network peer's (to a foreign
    // machine), a foreign machine's (to its own peer, and to that foreign machine's peer, as if it were
    // in that network), and an unused one of its own block (to its peer). A borrowed address is never
    // the target's own: that one would be delivered inside the sender's namespace.
    const claims: { from: Machine; as: string; to: Machine }[] = [];
    const unsent: string[] = [];
    const spoofBefore = await dropCount('bridge', 'from_machine', 'spoofed source address');
    for (const from of machines) {
      const peer = machines.find((m) => m.net === from.net && m !== from)!;
      const foreign = machines.find((m) => m.net !== from.net)!;
      const foreignPeer = machines.find((m) => m.net === foreign.net && m !== foreign)!;
      const unused = from.ip.replace(/:[0-9a-f]+:[0-9a-f]+:2$/, ':ffff:fffe:2');
      const plan = [
        { as: peer.ip, to: foreign },
        { as: foreign.ip, to: peer },
        { as: foreign.ip, to: foreignPeer },
        { as: unused, to: peer },
      ];
      const netns = `hangar-${from.id}`;
      for (const { as, to } of plan) {
        await must('ip', ['-n', netns, '-6', 'addr', 'add', `${as}/128`, 'dev', 'eth0', 'nodad']);
        const result = await from.agent!.probe({ kind: 'udp', to: to.ip, from: as });
        await must('ip', ['-n', netns, '-6', 'addr', 'del', `${as}/128`, 'dev', 'eth0']);
        // It was sent (a datagram that never left would prove nothing) and got no answer.
        if (result.sent !== `from ${from.id}`.length || result.ok)
          unsent.push(`${from.id} as ${as} → ${to.id}: ${JSON.stringify(result)}`);
        claims.push({ from, as, to });
      }
    }
    assert.deepEqual(unsent, [], 'every spoofed datagram was sent, none answered');
    const arrived: string[] = [];
    for (const machine of machines) {
      for (const source of await machine.agent!.heard()) arrived.push(`${machine.id} heard ${source}`);
    }
    const spoofDropped = (await dropCount('bridge', 'from_machine', 'spoofed source address')) - spoofBefore;
    t.diagnostic(
      `spoofing: ${claims.length} datagrams with a borrowed source sent, ${spoofDropped} dropped as spoofed, ${arrived.length} arrived`,
    );
    assert.deepEqual(arrived, []);
    assert.ok(spoofDropped >= claims.length, 'the anti-spoofing rule dropped them');
  });

  await t.test("DNS answers from the caller's network only, on fdaa::3 and its own ::3", async () => {
    const [a1, a2] = byNet('a') as [Machine, Machine];
    const b1 = byNet('b')[0]!;
    const own = serviceAddress(networkOf('a'));
    const [aaaa, aaaaTcp, atOwn, vm, apps, foreign, otherService] = await dnsFrom(a1, [
      { server: RESOLVER_ADDRESS, name: `${APPS.a}.internal`, type: 'AAAA' },
      { server: RESOLVER_ADDRESS, name: `${APPS.a}.internal`, type: 'AAAA', transport: 'tcp' },
      { server: own, name: `${APPS.a}.internal`, type: 'AAAA' },
      { server: RESOLVER_ADDRESS, name: `${a2.id}.vm.${APPS.a}.internal`, type: 'AAAA' },
      { server: RESOLVER_ADDRESS, name: '_apps.internal', type: 'TXT' },
      { server: RESOLVER_ADDRESS, name: `${APPS.b}.internal`, type: 'AAAA' },
      { server: serviceAddress(networkOf('b')), name: `${APPS.b}.internal`, type: 'AAAA' },
    ]);
    const both = [a1.ip, a2.ip].sort();
    assert.deepEqual(aaaa!.answers!.slice().sort(), both);
    assert.deepEqual(aaaaTcp!.answers!.slice().sort(), both);
    assert.deepEqual(atOwn!.answers!.slice().sort(), both);
    assert.deepEqual(vm, { rcode: 'NOERROR', answers: [a2.ip] });
    assert.deepEqual(apps, { rcode: 'NOERROR', answers: [APPS.a] });
    assert.equal(foreign!.rcode, 'NXDOMAIN', "another network's app does not exist for a caller");
    assert.equal(otherService!.error, 'timeout', "another network's ::3 never answers");
    const [fromB] = await dnsFrom(b1, [
      { server: RESOLVER_ADDRESS, name: `${APPS.a}.internal`, type: 'AAAA' },
    ]);
    assert.equal(fromB!.rcode, 'NXDOMAIN');
  });

  await t.test('inside the containers: peers by name and address, nothing across networks', async () => {
    const [a1, a2] = byNet('a') as [Machine, Machine];
    const b1 = byNet('b')[0]!;
    const sh = async (m: Machine, script: string) =>
      ok(api, 'POST', `/v1/apps/${m.app}/machines/${m.id}/exec`, { command: ['/bin/sh', '-c', script] });
    const peer = await sh(a1, `timeout 5 wget -qO- "http://[${a2.ip}]:8081/"`);
    assert.equal(peer.stdout, `${a2.id}\n`, JSON.stringify(peer));
    const byName = await sh(a1, `nslookup -type=aaaa ${a2.id}.vm.${APPS.a}.internal`);
    assert.match(byName.stdout, new RegExp(`Address:\\s+${a2.ip}`), JSON.stringify(byName));
    const across = await sh(a1, `timeout 3 wget -qO- "http://[${b1.ip}]:8081/"; echo "exit $?"`);
    assert.doesNotMatch(across.stdout, new RegExp(b1.id));
    const hidden = await sh(b1, `nslookup -type=aaaa ${APPS.a}.internal; echo "exit $?"`);
    assert.doesNotMatch(hidden.stdout, new RegExp(a1.ip));
  });

  await t.test('Flycast: an address per network, reachable from that network only', async () => {
    // The host listens where a proxy will: on [::], for whatever Flycast address a connection targets.
    const server = net.createServer((socket) => socket.end(`flycast ${socket.localAddress}\n`));
    hostServers.push(server);
    await new Promise<void>((resolve) => server.listen({ host: '::', port: 0, ipv6Only: true }, resolve));
    const port = (server.address() as net.AddressInfo).port;
    // App a serves that port (a machine that is never started is enough: the proxy would start it), so
    // its Flycast addresses open it; every other port stays closed (attacks-network.test.ts).
    await ok(api, 'POST', `/v1/apps/${APPS.a}/machines`, {
      config: { image: images.a, services: [{ protocol: 'tcp', internal_port: 8081, ports: [{ port }] }] },
      skip_launch: true,
    });
    const own = await ok(api, 'POST', `/v1/apps/${APPS.a}/ip_assignments`, { type: 'private_v6' });
    const inB = await ok(api, 'POST', `/v1/apps/${APPS.a}/ip_assignments`, {
      type: 'private_v6',
      network: NETWORK_NAMES.b,
    });
    assert.equal(networkIdOf(own.ip), networkOf('a'));
    assert.equal(networkIdOf(inB.ip), networkOf('b'));
    // The rules follow the allocations through the store's change feed. Reachable pairs are polled
    // first: once the last one answers, the rules hold both addresses, and the blocked pairs are real.
    const cases = machines.flatMap((from) =>
      [
        { address: own.ip, want: from.net === 'a' },
        { address: inB.ip, want: from.net === 'b' },
      ].map((c) => ({ from, ...c })),
    );
    cases.sort((x, y) => Number(y.want) - Number(x.want));
    const wrong: string[] = [];
    for (const { from, address, want } of cases) {
      const result = await pollUntil(
        `${from.id} → ${address}`,
        async () => {
          const r = await from.agent!.probe({ kind: 'tcp', to: address, port });
          return r.ok === want ? r : undefined;
        },
        want ? 5_000 : 0,
      ).catch(() => undefined);
      if (!result)
        wrong.push(`${from.net}:${from.id} → ${address} should be ${want ? 'reached' : 'blocked'}`);
      else if (want) assert.equal(result.answer, `flycast ${address}`);
    }
    t.diagnostic(`Flycast: ${cases.length} probes, ${wrong.length} wrong`);
    assert.deepEqual(wrong, []);
    const [flycastA] = await dnsFrom(byNet('a')[0]!, [
      { server: RESOLVER_ADDRESS, name: `${APPS.a}.flycast`, type: 'AAAA' },
    ]);
    assert.deepEqual(flycastA, { rcode: 'NOERROR', answers: [own.ip] });
    const [flycastB] = await dnsFrom(byNet('b')[0]!, [
      { server: RESOLVER_ADDRESS, name: `${APPS.a}.flycast`, type: 'AAAA' },
    ]);
    assert.deepEqual(flycastB, { rcode: 'NOERROR', answers: [inB.ip] });
    const [flycastD] = await dnsFrom(byNet('d')[0]!, [
      { server: RESOLVER_ADDRESS, name: `${APPS.a}.flycast`, type: 'AAAA' },
    ]);
    assert.equal(flycastD!.rcode, 'NXDOMAIN');
  });

  await t.test('destroying the last app of a network removes its bridge, veths and rules', async () => {
    for (const machine of machines) await machine.agent?.stop();
    const bNet = networkOf('b');
    const bMachines = byNet('b');
    const before = await hostNetworking();
    assert.ok(
      before.links.some((l) => l === bridgeName(bNet)),
      JSON.stringify(before.links),
    );
    // An app that shares network a goes, network a stays.
    await ok(api, 'POST', '/v1/apps', {
      app_name: 'pn-app-a2',
      org_slug: 'personal',
      network: NETWORK_NAMES.a,
    });
    await ok(api, 'DELETE', '/v1/apps/pn-app-a2');
    await ok(api, 'DELETE', `/v1/apps/${APPS.b}?force=true`);
    const after = await pollUntil('network b removed', async () => {
      const state = await hostNetworking();
      return state.links.some((l) => l.startsWith(bridgeName(bNet))) ? undefined : state;
    });
    for (const m of bMachines) {
      const veth = vethName(numberOf(m));
      assert.ok(!after.links.some((l) => l === veth || l.startsWith(`${veth}@`)), `${veth} is gone`);
      assert.ok(!after.rules.includes(m.ip), `the rules name no address of ${m.id}`);
    }
    assert.doesNotMatch(
      after.rules,
      new RegExp(`"${bridgeName(bNet)}"`),
      'rules name no bridge of network b',
    );
    assert.ok(after.links.includes(bridgeName(networkOf('a'))), 'network a keeps its bridge');
    machines.splice(0, machines.length, ...machines.filter((m) => m.net !== 'b'));
    // The network id stays reserved: a new app naming it gets it back, a new network gets a new id.
    await ok(api, 'POST', '/v1/apps', {
      app_name: 'pn-app-b2',
      org_slug: 'personal',
      network: NETWORK_NAMES.b,
    });
    await ok(api, 'POST', '/v1/apps', { app_name: 'pn-app-c', org_slug: 'personal', network: 'pn-net-c' });
    const probe = async (app: string) => {
      // Never launched: the image needs to name the app's own space, not to exist.
      const body = await ok(api, 'POST', `/v1/apps/${app}/machines`, {
        config: { image: `127.0.0.1:${registryPort}/${app}/probe` },
        skip_launch: true,
      });
      return networkIdOf(body.private_ip)!;
    };
    assert.equal(await probe('pn-app-b2'), bNet);
    const cNet = await probe('pn-app-c');
    assert.ok(cNet > Math.max(networkOf('a'), bNet, networkOf('d')));
    // Both networks come up with their first app, bridge and rules (the rules last).
    await pollUntil('networks b and c up, with their rules', async () => {
      const state = await hostNetworking();
      return [bNet, cNet].every(
        (id) => state.links.includes(bridgeName(id)) && state.rules.includes(`"${bridgeName(id)}"`),
      )
        ? true
        : undefined;
    });
  });

  await t.test('a restarted hangard rebuilds what went missing, with no duplicate rules', async () => {
    const before = await hostNetworking();
    await live!.hangard.close(); // machines and plumbing stay (cleanup starts a removing one if need be)
    const kept = await hostNetworking();
    assert.deepEqual(kept, before, 'a clean stop leaves bridges, veths and rules in place');
    // While hangard is down: a bridge disappears (its veths fall out of it) and the rules are flushed.
    const aBridge = bridgeName(networkOf('a'));
    await must('ip', ['link', 'del', aBridge]);
    await must('nft', ['flush', 'table', 'inet', 'hangar']);
    live = { hangard: await start(true), removes: true };
    const after = await hostNetworking();
    assert.deepEqual(after.links, before.links, 'the same links, each in its bridge');
    assert.equal(after.rules, before.rules, 'the same rules, once');
    for (const machine of byNet('a')) {
      machine.agent = new ProbeAgent(`hangar-${machine.id}`, machine.id);
      await machine.agent.ready;
    }
    const [a1, a2] = byNet('a') as [Machine, Machine];
    const again = await a1.agent!.probe({ kind: 'tcp', to: a2.ip });
    assert.ok(again.ok, JSON.stringify(again));
    const [dns] = await dnsFrom(a1, [
      { server: RESOLVER_ADDRESS, name: `${a2.id}.vm.${APPS.a}.internal`, type: 'AAAA' },
    ]);
    assert.deepEqual(dns, { rcode: 'NOERROR', answers: [a2.ip] });
    assert.deepEqual(warnings, []);
  });
});

/** A machine's number on its host, from groups 6-7 of its address. */
function numberOf(machine: Machine): number {
  const groups = parseIpv6(machine.ip)!;
  return groups[5]! * 0x10000 + groups[6]!;
}

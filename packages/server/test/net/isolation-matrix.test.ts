import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { after, test } from 'node:test';
import { netnsPathOf, runInMachineNetns } from '../../src/net/admin.js';
import { acquireHostNetworkLock, type HostLock } from '../../src/net/host-lock.js';
import { LinuxNetwork } from '../../src/net/linux-net.js';
import { type DesiredNetState, deleteRulesetText, flycastBlock } from '../../src/net/ruleset.js';
import { runCommand } from '../../src/shared/run.js';
import {
  type Attachment,
  machineAddress,
  type NetworkPlan,
  networkIdOf,
  planAttachment,
  planNetwork,
  sameNetwork,
} from '../../src/sixpn/address-plan.js';
import { flycastAddress } from '../../src/sixpn/ipv6.js';
import { DNS_PORT, RESOLVER_ADDRESS } from '../../src/sixpn/resolver.js';
import { enableForwarding } from '../helpers/forwarding.js';
import { NEEDS_ROOT, readFromHost } from '../helpers/integration.js';
import { ProbeAgent, type ProbeRequest } from '../helpers/probe-agent.js';

/**
 * The isolation matrix, with real network namespaces standing in for machines: two custom networks
 * and the default network, two machines each, plugged in by LinuxNetwork exactly as hangard will, and
 * the real `hangar` nftables tables. Every machine tries every other machine over TCP, UDP and ICMPv6,
 * every network's ::3 and fdaa::3, the Flycast addresses of networks a and b (served by one listener on
 * the host's `::`, as the proxy will be), and then does it again with spoofed source addresses. Then
 * the reconcile pass: applying twice, restarting, removing a network, cleaning up leftovers.
 *
 * The test works on the host's own network stack (where hangard works) with names no one else uses. It
 * holds the host network lock from before its first look at the host until everything is removed (a
 * test file that starts hangard with networking may run at the same time and waits for it), refuses to
 * run when the host already has Hangar networking (a running hangard's would be destroyed), and removes
 * everything it made, checked at the end.
 */

const HOST = '7e57ab01';
const NETWORKS = { a: 0x7e570a01, b: 0x7e570b02, d: 0x7e570d03 } as const;
type NetKey = keyof typeof NETWORKS;
/** One Flycast address in each custom network; the default network (d) has none. */
const FLYCAST: Partial<Record<NetKey, string>> = {
  a: flycastAddress(NETWORKS.a, 1),
  b: flycastAddress(NETWORKS.b, 1),
};
const MACHINE_BASE = 0x7e570000;
const NETNS_PREFIX = `hgtest${process.pid}-`;
/** Links the reconcile test plants as leftovers for reconcile to remove. */
const STRAY_BRIDGE = 'hgn7e57dead';
const STRAY_VETH = 'hgw7e57beef';

const plans = Object.fromEntries(
  Object.entries(NETWORKS).map(([key, id]) => [key, planNetwork(id, HOST)]),
) as Record<NetKey, NetworkPlan>;

interface TestMachine {
  name: string;
  net: NetKey;
  netns: string;
  attachment: Attachment;
  agent?: ProbeAgent;
}

const run = (file: string, args: string[], input?: string) =>
  runCommand(file, args, { timeoutMs: 30_000, ...(input === undefined ? {} : { input }) });

async function must(file: string, args: string[], input?: string): Promise<string> {
  const result = await run(file, args, input);
  assert.equal(result.code, 0, `${file} ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

/** What the host has of Hangar's networking: tables, hg* links, fdaa::3 on lo. */
async function hangarState(): Promise<{ tables: string[]; links: string[]; resolver: boolean }> {
  const tables = (await must('nft', ['list', 'tables'])).split('\n').filter((l) => /\bhangar$/.test(l));
  const links = (JSON.parse(await must('ip', ['-j', 'link', 'show'])) as { ifname: string }[])
    .map((l) => l.ifname)
    .filter((name) => /^hg[nvw][0-9a-f]+$/.test(name));
  const resolver = (await must('ip', ['-6', 'addr', 'show', 'dev', 'lo'])).includes(
    `${RESOLVER_ADDRESS}/128`,
  );
  return { tables, links, resolver };
}

/** Held while this file may touch the host's Hangar networking; cleanup() releases it. */
let lock: HostLock | undefined;

async function whyNotClean(): Promise<string | false> {
  if (NEEDS_ROOT) return NEEDS_ROOT;
  if ((await run('nft', ['--version'])).code !== 0) return 'nft is not installed';
  // Before looking: a hangard started by another test file could otherwise set up (or be removing)
  // its networking between this check and the fixture.
  lock = await acquireHostNetworkLock({ waitMs: 300_000 });
  const state = await hangarState();
  if (state.tables.length > 0 || state.links.length > 0 || state.resolver) {
    lock.release();
    lock = undefined;
    return `the host already has Hangar networking (${[...state.tables, ...state.links].join(', ') || RESOLVER_ADDRESS}); not touching it`;
  }
  return false;
}

const skip = await whyNotClean();

// ---- the fixture: shared by the tests below, removed at the end (and on any failure) -------------------

const machines: TestMachine[] = [];
const hostServers: { close(): void }[] = [];
/** UDP sources the host's stand-in DNS heard, by the address it listens on. */
const hostHeard = new Map<string, Set<string>>();
/** The stand-in Flycast proxy's port, and each connection it accepted as [to, from]. */
let flycastPort = 0;
/** A second port the same listener serves that no app's services expose: it must stay closed. */
let flycastClosedPort = 0;
/** Undoes the test's forwarding sysctls; run by cleanup (and so on failure too). */
let restoreForwarding: (() => Promise<void>) | undefined;
const flycastAccepted: [string, string][] = [];
const warnings: string[] = [];
let network: LinuxNetwork | undefined;

function makeMachines(): void {
  let n = 1;
  for (const key of ['a', 'b', 'd'] as const) {
    for (const i of [1, 2]) {
      const name = `${key}${i}`;
      const machineId = (MACHINE_BASE + n).toString(16).padStart(14, '0');
      machines.push({
        name,
        net: key,
        // d1 gets the runtime's own namespace name, so the admin entry (which finds a machine's
        // namespace by machine id) is tried on it.
        netns: name === 'd1' ? `hangar-${machineId}` : `${NETNS_PREFIX}${name}`,
        attachment: planAttachment({
          machineId,
          machineNumber: MACHINE_BASE + n++,
          networkId: NETWORKS[key],
          hostId: HOST,
        }),
      });
    }
  }
}

function desired(without: NetKey[] = []): DesiredNetState {
  return {
    networks: (Object.keys(plans) as NetKey[]).filter((k) => !without.includes(k)).map((k) => plans[k]),
    attachments: machines.filter((m) => !without.includes(m.net)).map((m) => m.attachment),
    // All of them, even those of networks left out: the rules must ignore what has no bridge here.
    // Each opens the stand-in proxy's port, as an app whose services expose that port would.
    flycast: Object.entries(FLYCAST).map(([key, address]) => ({
      networkId: NETWORKS[key as NetKey],
      address,
      ports: [{ protocol: 'tcp' as const, start: flycastPort, end: flycastPort }],
    })),
    // Egress on: the bridges then forward (force_forwarding), the worst case for isolation, where only
    // the rules stand between two networks.
    egress: true,
  };
}

/** Stand-in DNS on the host: answers on port 53 with the network the caller's source address is in. */
async function startDnsStandIns(addresses: string[]): Promise<void> {
  for (const address of addresses) {
    const tcp = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.end(`dns ${address} for network ${networkIdOf(socket.remoteAddress ?? '')}\n`);
    });
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen({ host: address, port: DNS_PORT }, resolve);
    });
    hostServers.push(tcp);
    const udp = dgram.createSocket({ type: 'udp6', reuseAddr: true });
    hostHeard.set(address, new Set());
    udp.on('message', (_m, peer) => {
      hostHeard.get(address)!.add(peer.address);
      udp.send(`dns ${address} for network ${networkIdOf(peer.address)}`, peer.port, peer.address);
    });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(DNS_PORT, address, resolve);
    });
    hostServers.push(udp);
  }
}

/**
 * Stand-in Flycast proxy: TCP listeners on the host's `::` (any address), as the proxy will be, on the
 * service port and on one more port no service exposes; each answers with the address it was reached
 * on and the network the caller's source address is in.
 */
async function startFlycastStandIn(): Promise<void> {
  const ports: number[] = [];
  for (let i = 0; i < 2; i++) {
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      const [to, from] = [socket.localAddress ?? '', socket.remoteAddress ?? ''];
      flycastAccepted.push([to, from]);
      socket.end(`flycast ${to} for network ${networkIdOf(from)}\n`);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '::', port: 0 }, resolve);
    });
    ports.push((server.address() as net.AddressInfo).port);
    hostServers.push(server);
  }
  [flycastPort, flycastClosedPort] = ports as [number, number];
}

/** Only with the lock, so never once another process may own the host's Hangar networking. */
async function cleanup(): Promise<void> {
  if (!lock) return;
  await Promise.all(machines.map((m) => m.agent?.stop()));
  for (const server of hostServers.splice(0)) server.close();
  await network?.close().catch(() => {});
  await restoreForwarding?.();
  // Only what this test made, by name: its namespaces (their eth0 ends take the veths along), its
  // bridges and leftovers, the tables and fdaa::3 (the host had none of them before the test).
  for (const m of machines) await run('ip', ['netns', 'delete', m.netns]);
  const ours = [
    ...Object.values(plans).map((p) => p.bridge),
    ...machines.flatMap((m) => [m.attachment.veth, `hgw${m.attachment.machineNumber.toString(16)}`]),
    STRAY_BRIDGE,
    STRAY_VETH,
  ];
  for (const name of ours) await run('ip', ['link', 'delete', 'dev', name]);
  await run('nft', ['-f', '-'], deleteRulesetText());
  await run('ip', ['-6', 'addr', 'del', `${RESOLVER_ADDRESS}/128`, 'dev', 'lo']);
  // The Flycast routes went with the bridges.
  lock.release();
  lock = undefined;
}

after(async () => {
  if (!skip) await cleanup();
});

async function setUp(): Promise<void> {
  makeMachines();
  network = new LinuxNetwork({ onWarning: (w) => warnings.push(w) });
  for (const plan of Object.values(plans)) await network.ensureNetwork(plan);
  for (const m of machines) {
    await must('ip', ['netns', 'add', m.netns]);
    await network.attach(m.netns, m.attachment);
  }
  for (const m of machines) m.agent = new ProbeAgent(m.netns, m.name);
  await Promise.all(machines.map((m) => m.agent!.ready));
  await startDnsStandIns([
    RESOLVER_ADDRESS,
    ...Object.values(plans).flatMap((p) => [p.serviceAddress, p.gateway]),
  ]);
  await startFlycastStandIn();
}

/** The answer of the stand-in Flycast proxy to a machine of network `from` calling `address`. */
const flycastAnswer = (address: string, from: NetKey) => `flycast ${address} for network ${NETWORKS[from]}`;

const machine = (name: string) => machines.find((m) => m.name === name)!;

interface Case {
  from: TestMachine;
  source?: string;
  target: string;
  to: string;
  kind: ProbeRequest['kind'];
  port?: number;
  expect: boolean;
  /** For a success: the answer that proves the right peer answered. */
  answer?: string;
  group: string;
}

/** Runs every case at once (failures cost their timeout once, not once each); returns the mismatches. */
async function runCases(cases: Case[]): Promise<string[]> {
  const outcomes = await Promise.all(
    cases.map(async (c) => {
      const request: ProbeRequest = {
        kind: c.kind,
        to: c.to,
        ...(c.port ? { port: c.port } : {}),
        ...(c.source ? { from: c.source } : {}),
      };
      let result = await c.from.agent!.probe(request);
      // A first packet can be lost while neighbour discovery settles: an expected success gets a second
      // try. An expected failure gets none (a blocked probe that got through is reported at once).
      if (c.expect && !result.ok) result = await c.from.agent!.probe(request);
      return { c, result };
    }),
  );
  const wrong: string[] = [];
  for (const { c, result } of outcomes) {
    const label = `${c.from.name}${c.source ? ` (spoofing ${c.source})` : ''} → ${c.target} ${c.kind}`;
    // A blocked datagram must have left the machine: one that was never sent proves nothing.
    if (c.kind === 'udp' && typeof result.sent !== 'number') {
      wrong.push(`${label}: the datagram was never sent (${result.sent ?? result.detail})`);
    } else if (result.ok !== c.expect) {
      wrong.push(
        `${label}: expected ${c.expect ? 'success' : 'blocked'}, got ${result.ok ? `answer "${result.answer ?? ''}"` : result.detail}`,
      );
    } else if (c.expect && c.answer !== undefined && result.answer !== c.answer) {
      wrong.push(`${label}: answered "${result.answer}", expected "${c.answer}"`);
    }
  }
  return wrong;
}

const PROTOCOLS = ['tcp', 'udp', 'icmp'] as const;

test('isolation matrix: same network reachable, every cross-network pair blocked, spoofing blocked', {
  skip,
}, async () => {
  await setUp();
  assert.ok(network);

  // Control: with the bridges forwarding and no rules yet, the kernel routes between networks. So what
  // blocks the cross-network probes below is the rule set, not a missing route.
  // Forwarding stays on for the whole matrix (restored at cleanup), per bridge where the kernel can.
  const forwarding = await enableForwarding(Object.values(plans).map((p) => p.bridge));
  restoreForwarding = forwarding.restore;
  const control = await runCases([
    {
      from: machine('a1'),
      target: 'b1',
      to: machine('b1').attachment.address,
      kind: 'icmp',
      expect: true,
      group: 'control',
    },
    {
      from: machine('b2'),
      target: 'a2',
      to: machine('a2').attachment.address,
      kind: 'tcp',
      expect: true,
      answer: 'a2',
      group: 'control',
    },
    {
      from: machine('a1'),
      target: `${plans.b.serviceAddress} (::3 of b)`,
      to: plans.b.serviceAddress,
      kind: 'udp',
      port: DNS_PORT,
      expect: true,
      group: 'control',
    },
    // Every bridge's Flycast block is local to the host: only the rules keep b out of a's.
    {
      from: machine('b1'),
      target: 'Flycast of a',
      to: FLYCAST.a!,
      kind: 'tcp',
      port: flycastPort,
      expect: true,
      answer: flycastAnswer(FLYCAST.a!, 'b'),
      group: 'control',
    },
  ]);
  assert.deepEqual(
    control,
    [],
    'without rules, networks must reach each other (or the matrix proves nothing)',
  );
  for (const sources of hostHeard.values()) sources.clear();
  flycastAccepted.length = 0;

  const applied = await network.applyRules(desired());
  assert.deepEqual([applied.networks, applied.machines, applied.mode], [3, 6, 'full']);

  const cases: Case[] = [];
  // 1. Every ordered pair of machines, every protocol.
  for (const from of machines) {
    for (const to of machines) {
      if (from === to) continue;
      for (const kind of PROTOCOLS) {
        const same = from.net === to.net;
        const answer = kind === 'icmp' ? {} : { answer: to.name };
        cases.push({
          from,
          target: to.name,
          to: to.attachment.address,
          kind,
          expect: same,
          ...answer,
          group: same ? 'same' : 'cross',
        });
      }
    }
  }
  // 2. The host's addresses in each network: its ::3 (DNS), its gateway, and fdaa::3. Only DNS on the
  //    caller's own ::3 and on fdaa::3 is open; the answer says which network the caller was taken for.
  for (const from of machines) {
    const own = NETWORKS[from.net];
    const targets: [string, string][] = [[RESOLVER_ADDRESS, 'fdaa::3']];
    for (const [key, plan] of Object.entries(plans)) {
      targets.push([plan.serviceAddress, `::3 of ${key}`], [plan.gateway, `gateway of ${key}`]);
    }
    for (const [address, label] of targets) {
      for (const kind of PROTOCOLS) {
        const dns =
          kind !== 'icmp' && (address === RESOLVER_ADDRESS || address === plans[from.net].serviceAddress);
        cases.push({
          from,
          target: label,
          to: address,
          kind,
          port: DNS_PORT,
          expect: dns,
          answer: `dns ${address} for network ${own}`,
          group: dns ? 'service-open' : 'service-blocked',
        });
      }
    }
  }
  // 3. The Flycast addresses of a and b: only the caller's own network's is open, and only on the
  //    service port over TCP (not ICMPv6, not the listener's other port); d has none, so it reaches
  //    neither. The whole block of every network is routed to the host, so an address of the caller's
  //    own block that was never allocated must be closed too.
  for (const from of machines) {
    const targets: [string, string, string][] = Object.entries(FLYCAST).map(([key, address]) => [
      address,
      `Flycast of ${key}`,
      key === from.net ? 'flycast-own' : 'flycast-blocked',
    ]);
    targets.push([flycastAddress(NETWORKS[from.net], 2), 'unallocated Flycast', 'flycast-unallocated']);
    for (const [address, target, group] of targets) {
      for (const kind of ['tcp', 'icmp'] as const) {
        const open = group === 'flycast-own' && kind === 'tcp';
        cases.push({
          from,
          target,
          to: address,
          kind,
          port: flycastPort,
          expect: open,
          ...(kind === 'tcp' ? { answer: flycastAnswer(address, from.net) } : {}),
          group: group === 'flycast-own' ? (open ? 'flycast-open' : 'flycast-closed') : group,
        });
      }
      if (group === 'flycast-own') {
        cases.push({
          from,
          target: `${target}, port no service exposes`,
          to: address,
          kind: 'tcp',
          port: flycastClosedPort,
          expect: false,
          group: 'flycast-closed',
        });
      }
    }
  }
  const started = Date.now();
  const wrong = await runCases(cases);

  // 4. Spoofing, once the honest probes are done (an extra address on eth0 can become the source the
  //    kernel picks): a1 takes an address of network b and one of its own network that is not its own,
  //    b1 one of network a; every probe from those sources must die, wherever it goes.
  const spoofCases: Case[] = [];
  const spoofs = [
    { from: machine('a1'), source: machineAddress(NETWORKS.b, HOST, MACHINE_BASE + 0xffff), sourceNet: 'b' },
    { from: machine('a1'), source: machineAddress(NETWORKS.a, HOST, MACHINE_BASE + 0xfffe), sourceNet: 'a' },
    { from: machine('b1'), source: machineAddress(NETWORKS.a, HOST, MACHINE_BASE + 0xfffd), sourceNet: 'a' },
  ];
  for (const spoof of spoofs) {
    await must('ip', [
      '-6',
      '-n',
      spoof.from.netns,
      'addr',
      'add',
      `${spoof.source}/112`,
      'dev',
      'eth0',
      'nodad',
    ]);
    const targets: [string, string, number?][] = machines
      .filter((m) => m !== spoof.from)
      .map((m) => [m.attachment.address, m.name]);
    for (const key of new Set([spoof.sourceNet as NetKey, spoof.from.net])) {
      targets.push([plans[key].serviceAddress, `::3 of ${key}`, DNS_PORT]);
      const flycast = FLYCAST[key];
      if (flycast) targets.push([flycast, `Flycast of ${key}`, flycastPort]);
    }
    targets.push([RESOLVER_ADDRESS, 'fdaa::3', DNS_PORT]);
    for (const [to, target, port] of targets) {
      for (const kind of PROTOCOLS) {
        spoofCases.push({
          from: spoof.from,
          source: spoof.source,
          target,
          to,
          kind,
          ...(port ? { port } : {}),
          expect: false,
          group: 'spoofed',
        });
      }
    }
  }
  wrong.push(...(await runCases(spoofCases)));
  for (const spoof of spoofs) {
    await must('ip', ['-6', '-n', spoof.from.netns, 'addr', 'del', `${spoof.source}/112`, 'dev', 'eth0']);
  }
  cases.push(...spoofCases);
  const elapsed = Date.now() - started;

  // One-way check: a UDP datagram that was blocked never arrived, reply or not. Each machine heard only
  // its own network's machines; the host's DNS heard only callers of the matching network on each ::3,
  // nothing on any gateway, and nothing from a spoofed source anywhere. The same for the connections
  // the Flycast listener accepted: all from the network of the address they reached.
  const spoofed = new Set(spoofs.map((s) => s.source));
  for (const m of machines) {
    for (const source of await m.agent!.heard()) {
      if (spoofed.has(source) || networkIdOf(source) !== NETWORKS[m.net])
        wrong.push(`${m.name} heard UDP from ${source}`);
    }
  }
  for (const [address, sources] of hostHeard) {
    for (const source of sources) {
      const fits =
        address === RESOLVER_ADDRESS ||
        (networkIdOf(address) === networkIdOf(source) && address.endsWith('::3'));
      if (spoofed.has(source) || !fits) wrong.push(`the host's ${address} heard UDP from ${source}`);
    }
  }
  for (const [to, from] of flycastAccepted) {
    if (spoofed.has(from) || !sameNetwork(to, from))
      wrong.push(`the Flycast listener accepted ${from} on ${to}`);
  }
  const heardCount = [...hostHeard.values()].reduce((n, s) => n + s.size, 0);

  // 5. The host itself reaches every machine (the proxy and health checks will): host → machine is not
  //    filtered and the replies come back as established connections.
  const hostToMachines: string[] = [];
  for (const m of machines) {
    const answer = await readFromHost(m.attachment.address, 8080);
    if (answer !== m.name) hostToMachines.push(`host → ${m.name}: ${answer}`);
  }

  const count = (group: string) => cases.filter((c) => c.group === group).length;
  const pairs = machines.length * (machines.length - 1);
  console.log(
    [
      `isolation matrix: ${machines.length} machines on 3 networks (2 custom + default), ${cases.length} probes in ${elapsed} ms, protocols TCP, UDP, ICMPv6`,
      `  machine pairs: ${pairs} ordered pairs × 3 protocols = ${pairs * 3} probes: ${count('same')} same-network (must succeed), ${count('cross')} cross-network (must be blocked)`,
      `  host addresses (every network's ::3 and gateway, fdaa::3): ${count('service-open')} DNS probes to the caller's own ::3 and fdaa::3 (must succeed, attributed to the caller's network), ${count('service-blocked')} others (must be blocked)`,
      `  Flycast (one address in a and one in b serving TCP ${flycastPort}, listeners on the host's [::]:${flycastPort} and [::]:${flycastClosedPort}): ${count('flycast-open')} TCP probes to the caller's own network's on the service port (must succeed, attributed to the caller's network), ${count('flycast-closed')} ICMPv6 or other-port probes to it, ${count('flycast-blocked')} to another network's, from d to either, ${count('flycast-unallocated')} to an unallocated address of the caller's own block (must be blocked)`,
      `  spoofed sources (a1 as b and as another a, b1 as a): ${count('spoofed')} probes (must be blocked)`,
      `  control without rules, forwarding on (${forwarding.how}): cross-network traffic got through (so the blocks above are the rules' doing)`,
      `  one-way check: UDP sources heard by the machines and by the host's ${hostHeard.size} stand-in DNS addresses (${heardCount} distinct callers), and the ${flycastAccepted.length} connections the Flycast listener accepted, are all same-network, none spoofed`,
      `  host → each machine over TCP: ${machines.length - hostToMachines.length}/${machines.length} answered`,
      `  mismatches: ${wrong.length}`,
    ].join('\n'),
  );
  assert.deepEqual(wrong, []);
  assert.equal(count('same'), 18);
  assert.equal(count('cross'), 72);
  assert.deepEqual(
    [count('flycast-open'), count('flycast-closed'), count('flycast-blocked'), count('flycast-unallocated')],
    [4, 8, 16, 12],
  );
  assert.deepEqual(hostToMachines, [], 'the host reaches every machine (health checks, proxy, admin)');

  // The spoofed probes died in the bridge table's anti-spoofing rule, before any routing decision.
  const chain = await must('nft', ['list', 'chain', 'bridge', 'hangar', 'from_machine']);
  const dropped = /counter packets (\d+) bytes \d+ drop comment "spoofed source address"/.exec(chain);
  assert.ok(dropped && Number(dropped[1]) >= count('spoofed'), chain);
});

test("admin entry: a command runs inside a machine's network namespace", { skip }, async () => {
  const d1 = machine('d1');
  assert.equal(netnsPathOf(d1.attachment.machineId), `/var/run/netns/${d1.netns}`);
  assert.ok(existsSync(netnsPathOf(d1.attachment.machineId)));
  const routes = await runInMachineNetns(d1.attachment.machineId, ['ip', '-6', 'route', 'show', 'default']);
  assert.equal(routes.code, 0, routes.stderr);
  assert.match(routes.stdout, new RegExp(`default via ${d1.attachment.gateway} dev eth0`));
  const ping = await runInMachineNetns(d1.attachment.machineId, [
    'busybox',
    'ping',
    '-6',
    '-c',
    '1',
    '-W',
    '1',
    machine('d2').attachment.address,
  ]);
  assert.equal(ping.code, 0, ping.stderr);
});

/**
 * Sends `count` neighbour advertisements from inside a namespace over a raw ICMPv6 socket (Node has
 * none): solicited off, override on, claiming `target` with `mac` as its link-layer address, hop limit
 * 255 (a receiver ignores any other). Prints how many the kernel took.
 */
const SEND_NA = `
import socket, sys
iface, target, mac, dest, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
na = bytes([136, 0, 0, 0, 0x20, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, target)
na += bytes([2, 1]) + bytes.fromhex(mac.replace(':', ''))
sent = sum(1 for _ in range(count) if s.sendto(na, (dest, 0, 0, socket.if_nametoindex(iface))) == len(na))
print(sent)
`;

async function sendNa(from: TestMachine, target: string, mac: string, dest: string, count: number) {
  const out = await must('ip', [
    'netns',
    'exec',
    from.netns,
    'python3',
    '-c',
    SEND_NA,
    'eth0',
    target,
    mac,
    dest,
    String(count),
  ]);
  assert.equal(Number(out.trim()), count, `${from.name}: every advertisement was sent`);
}

/** The link-layer address `ip` shows for `address` (in a namespace, or on the host when none). */
async function neighbour(address: string, netns?: string): Promise<string | undefined> {
  const args = ['-j', '-6', 'neigh', 'show', address];
  const out = await must('ip', netns ? ['-n', netns, ...args] : args);
  return (JSON.parse(out || '[]') as { lladdr?: string }[])[0]?.lladdr;
}

async function forgedNaDrops(): Promise<number> {
  const chain = await must('nft', ['list', 'chain', 'bridge', 'hangar', 'from_machine']);
  const match = /counter packets (\d+) bytes \d+ drop comment "forged neighbour advertisement"/.exec(chain);
  assert.ok(match, chain);
  return Number(match[1]);
}

test("neighbour advertisements: a machine cannot claim a peer's or the gateway's address", {
  skip,
}, async (t) => {
  const [a1, a2] = [machine('a1'), machine('a2')];
  const gateway = plans.a.gateway;
  // The control below rewrites real neighbour entries: the caches are flushed afterwards, so the next
  // tests resolve every address afresh.
  t.after(async () => {
    for (const netns of [a1.netns, a2.netns]) await run('ip', ['-n', netns, 'neigh', 'flush', 'all']);
    for (const address of [a1.attachment.address, a2.attachment.address]) {
      await run('ip', ['neigh', 'flush', 'to', address]);
    }
  });
  // Both victims' caches get an entry first: an advertisement only updates an existing one.
  await must('busybox', ['ping', '-6', '-c', '1', '-W', '2', a2.attachment.address]);
  await must('busybox', ['ping', '-6', '-c', '1', '-W', '2', a1.attachment.address]);
  // The host drops the echo itself (machines reach it for DNS only), but not the neighbour discovery.
  await run('ip', ['netns', 'exec', a2.netns, 'busybox', 'ping', '-6', '-c', '1', '-W', '1', gateway]);
  assert.equal(await neighbour(a2.attachment.address), a2.attachment.mac);
  assert.equal(await neighbour(gateway, a2.netns), plans.a.mac);
  const before = await forgedNaDrops();

  // Positive control: the same helper, claiming a1's own address (with a made-up link-layer address,
  // so that the host's entry visibly changes): it passes, and the counter stays.
  const madeUp = '02:00:5e:7e:57:01';
  await sendNa(a1, a1.attachment.address, madeUp, 'ff02::1', 1);
  await waitFor(async () => (await neighbour(a1.attachment.address)) === madeUp, 'the host took the control');
  assert.equal(await forgedNaDrops(), before, 'an advertisement of its own address is not dropped');
  // Every cache of the network took it (a2's too): a1 puts its real MAC back the same way.
  await sendNa(a1, a1.attachment.address, a1.attachment.mac, 'ff02::1', 1);
  await waitFor(async () => (await neighbour(a1.attachment.address)) === a1.attachment.mac, 'restored');

  // The attack: a1 claims a2's address to the host (all-nodes) and the gateway's to a2, 3 times each.
  await sendNa(a1, a2.attachment.address, a1.attachment.mac, 'ff02::1', 3);
  await sendNa(a1, gateway, a1.attachment.mac, a2.attachment.address, 3);
  await waitFor(async () => (await forgedNaDrops()) - before === 6, 'the forged advertisements were counted');
  assert.equal(await forgedNaDrops(), before + 6);
  assert.equal(await neighbour(a2.attachment.address), a2.attachment.mac, "the host's entry for a2 stays");
  assert.equal(await neighbour(gateway, a2.netns), plans.a.mac, "a2's entry for the gateway stays");
});

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail(`timed out: ${what}`);
}

/**
 * The tables as JSON without handles and counters (which change on every replace), set elements sorted
 * (the kernel lists a hash set in its own order).
 */
async function tablesJson(): Promise<string> {
  const strip = (key: string, value: unknown) => {
    if (key === 'handle' || key === 'counter') return undefined;
    if (key === 'elem' && Array.isArray(value)) return value.map((e) => JSON.stringify(e)).sort();
    return value;
  };
  const inet = JSON.parse(await must('nft', ['-j', 'list', 'table', 'inet', 'hangar']));
  const bridge = JSON.parse(await must('nft', ['-j', 'list', 'table', 'bridge', 'hangar']));
  const items = [...inet.nftables, ...bridge.nftables].filter(
    (i: Record<string, unknown>) => !('metainfo' in i),
  );
  return JSON.stringify(items, strip);
}

async function ruleCount(): Promise<number> {
  const inet = JSON.parse(await must('nft', ['-j', 'list', 'table', 'inet', 'hangar']));
  const bridge = JSON.parse(await must('nft', ['-j', 'list', 'table', 'bridge', 'hangar']));
  return [...inet.nftables, ...bridge.nftables].filter((i: Record<string, unknown>) => 'rule' in i).length;
}

/** ifindex of each link, by name: a reconcile must not recreate what is already right. */
async function linkIndexes(): Promise<Map<string, number>> {
  const links = JSON.parse(await must('ip', ['-j', 'link', 'show'])) as { ifname: string; ifindex: number }[];
  return new Map(links.filter((l) => /^hg[nvw]/.test(l.ifname)).map((l) => [l.ifname, l.ifindex]));
}

async function bridgeAddresses(bridge: string): Promise<string[]> {
  const [info] = JSON.parse(await must('ip', ['-j', '-6', 'addr', 'show', 'dev', bridge])) as {
    addr_info: { local: string; prefixlen: number; scope: string }[];
  }[];
  return info!.addr_info
    .filter((a) => a.scope !== 'link')
    .map((a) => `${a.local}/${a.prefixlen}`)
    .sort();
}

/**
 * The local routes of blocks on Hangar's bridges, as `<bridge> <block>`: each network's Flycast block,
 * once (the bridges' own addresses have local routes too, without a length).
 */
async function flycastRoutes(): Promise<string[]> {
  const routes = JSON.parse(
    await must('ip', ['-j', '-6', 'route', 'show', 'table', 'local', 'type', 'local']),
  ) as { dst: string; dev: string }[];
  return routes
    .filter((r) => /^hgn/.test(r.dev) && r.dst.includes('/'))
    .map((r) => `${r.dev} ${r.dst}`)
    .sort();
}

/** What flycastRoutes() must list with these networks' bridges up. */
const expectedFlycastRoutes = (keys: NetKey[]) =>
  keys.map((k) => `${plans[k].bridge} ${flycastBlock(NETWORKS[k])}`).sort();

test('reconcile: idempotent, survives a restart, repairs and removes', { skip }, async () => {
  assert.ok(network, 'the matrix test set the machines up');
  const want = desired();
  const rulesBefore = await tablesJson();
  const countBefore = await ruleCount();
  const linksBefore = await linkIndexes();

  // Applying twice, and a reconcile of an already right host: nothing changes, nothing is duplicated.
  assert.equal((await network.applyRules(want)).mode, 'unchanged');
  const netnsOf = (a: Attachment) => machines.find((m) => m.attachment.veth === a.veth)!.netns;
  const first = await network.reconcile(want, { netnsOf });
  assert.equal(first.rules.mode, 'full', 'reconcile replaces the tables whatever this instance remembers');
  assert.deepEqual(
    [first.createdBridges, first.removedBridges, first.attached, first.removedVeths, first.skipped],
    [[], [], [], [], []],
  );
  assert.equal(await tablesJson(), rulesBefore);
  assert.equal(await ruleCount(), countBefore);
  assert.deepEqual(await linkIndexes(), linksBefore, 'running machines keep their veths');
  assert.deepEqual(
    await bridgeAddresses(plans.a.bridge),
    [`${plans.a.gateway}/80`, `${plans.a.serviceAddress}/128`].sort(),
  );
  assert.deepEqual(await flycastRoutes(), expectedFlycastRoutes(['a', 'b', 'd']));

  // A daemon restart: a new instance reconciles the same state; same rules, same links.
  await network.close();
  network = new LinuxNetwork({ onWarning: (w) => warnings.push(w) });
  const restarted = await network.reconcile(want, { netnsOf });
  assert.deepEqual(restarted.attached, []);
  assert.equal(await tablesJson(), rulesBefore);
  assert.equal(await ruleCount(), countBefore);
  assert.deepEqual(await linkIndexes(), linksBefore);

  // Someone deletes a table behind Hangar's back: the next change cannot be a delta, so it is a full
  // replace, and the one after is a delta again; the result is the same rules as before.
  await must('nft', ['delete', 'table', 'inet', 'hangar']);
  assert.equal((await network.applyRules(desired(['d']))).mode, 'full');
  assert.equal((await network.applyRules(want)).mode, 'delta');
  assert.equal(await tablesJson(), rulesBefore);

  // Egress off: no way out and no forwarding on the bridges (a full replace: the rules' shape changes);
  // same-network traffic, which is switched, does not care.
  const noEgress = { ...want, egress: false };
  assert.equal((await network.applyRules(noEgress)).mode, 'full');
  const forwarding = async (bridge: string) =>
    (await readFile(`/proc/sys/net/ipv6/conf/${bridge}/force_forwarding`, 'utf8').catch(() => '0')).trim();
  for (const plan of Object.values(plans)) assert.equal(await forwarding(plan.bridge), '0');
  assert.ok(!(await must('nft', ['list', 'table', 'inet', 'hangar'])).includes('masquerade'));
  assert.deepEqual(
    await runCases([
      {
        from: machine('b1'),
        target: 'b2',
        to: machine('b2').attachment.address,
        kind: 'udp',
        expect: true,
        answer: 'b2',
        group: 'r',
      },
      {
        from: machine('b1'),
        target: 'a1',
        to: machine('a1').attachment.address,
        kind: 'icmp',
        expect: false,
        group: 'r',
      },
    ]),
    [],
  );
  assert.equal((await network.applyRules(want)).mode, 'full');
  assert.equal(await tablesJson(), rulesBefore);

  // Repairs: leftovers of an interrupted attach and of a removed network go; a lost veth, a lost Flycast
  // route and a bridge deleted behind Hangar's back come back, and the machines talk again.
  await must('ip', ['link', 'add', 'name', STRAY_BRIDGE, 'type', 'bridge']);
  await must('ip', [
    '-6',
    'route',
    'del',
    'local',
    flycastBlock(NETWORKS.a),
    'dev',
    plans.a.bridge,
    'table',
    'local',
  ]);
  await must('ip', ['link', 'add', 'name', STRAY_VETH, 'type', 'veth', 'peer', 'name', 'hgtestpeer0']);
  await must('ip', ['link', 'delete', 'dev', machine('a2').attachment.veth]);
  await must('ip', ['link', 'delete', 'dev', plans.d.bridge]);
  const repaired = await network.reconcile(want, { netnsOf });
  assert.deepEqual(repaired.removedBridges, [STRAY_BRIDGE]);
  assert.deepEqual(repaired.removedVeths, [STRAY_VETH]);
  assert.deepEqual(repaired.createdBridges, [plans.d.bridge]);
  assert.deepEqual(repaired.attached, [machine('a2').attachment.machineId]);
  const after = await linkIndexes();
  assert.ok(!after.has(STRAY_BRIDGE) && !after.has(STRAY_VETH));
  assert.equal(await ruleCount(), countBefore);
  assert.deepEqual(await flycastRoutes(), expectedFlycastRoutes(['a', 'b', 'd']));
  assert.deepEqual(
    await runCases([
      {
        from: machine('a1'),
        target: 'a2',
        to: machine('a2').attachment.address,
        kind: 'tcp',
        expect: true,
        answer: 'a2',
        group: 'r',
      },
      {
        from: machine('d2'),
        target: 'd1',
        to: machine('d1').attachment.address,
        kind: 'icmp',
        expect: true,
        group: 'r',
      },
      {
        from: machine('d1'),
        target: 'a1',
        to: machine('a1').attachment.address,
        kind: 'icmp',
        expect: false,
        group: 'r',
      },
      {
        from: machine('a2'),
        target: 'Flycast of a',
        to: FLYCAST.a!,
        kind: 'tcp',
        port: flycastPort,
        expect: true,
        answer: flycastAnswer(FLYCAST.a!, 'a'),
        group: 'r',
      },
    ]),
    [],
  );

  // Destroying network b's last app: its bridge, veths and rule elements go, the others stay.
  const b = machines.filter((m) => m.net === 'b');
  for (const m of b) await network.detach(m.attachment);
  await network.removeNetwork(plans.b);
  assert.equal((await network.applyRules(desired(['b']))).mode, 'delta');
  const left = await linkIndexes();
  assert.ok(!left.has(plans.b.bridge), 'bridge of b removed');
  for (const m of b) assert.ok(!left.has(m.attachment.veth), `veth of ${m.name} removed`);
  assert.ok(left.has(plans.a.bridge) && left.has(machine('a1').attachment.veth));
  const rules = await tablesJson();
  assert.ok(
    !rules.includes(plans.b.bridge) &&
      !rules.includes(b[0]!.attachment.address) &&
      !rules.includes(FLYCAST.b!),
    'no rule mentions b',
  );
  assert.deepEqual(
    await flycastRoutes(),
    expectedFlycastRoutes(['a', 'd']),
    "b's route went with its bridge",
  );
  assert.equal(await ruleCount(), countBefore, 'same rules, fewer set elements');
  // The delta left the kernel exactly where a full replace would.
  const viaDelta = await tablesJson();
  assert.equal((await network.applyRules(desired(['b']), { full: true })).mode, 'full');
  assert.equal(await tablesJson(), viaDelta);
  // removeNetwork alone (without detach) also takes the ports along; and both are idempotent.
  await network.removeNetwork(plans.b);
  await network.detach(b[0]!.attachment);
  // And a reconcile without network d removes its bridge and veths too.
  const dropped = await network.reconcile(desired(['b', 'd']), { netnsOf });
  assert.deepEqual(dropped.removedBridges, [plans.d.bridge]);
  assert.deepEqual(
    dropped.removedVeths.sort(),
    machines
      .filter((m) => m.net === 'd')
      .map((m) => m.attachment.veth)
      .sort(),
  );
  console.log(
    `reconcile: ${countBefore} rules before and after every pass; warnings seen: ${[...new Set(warnings)].length}`,
  );
});

test('cleanup leaves nothing behind', { skip }, async () => {
  await cleanup();
  const state = await hangarState();
  assert.deepEqual(state.tables, [], 'no hangar table');
  assert.deepEqual(state.links, [], 'no hg* link');
  assert.equal(state.resolver, false, 'fdaa::3 removed from lo');
  const namespaces = await must('ip', ['netns', 'list']);
  assert.ok(!namespaces.includes(NETNS_PREFIX) && !namespaces.includes(machine('d1').netns), namespaces);
  assert.ok(!(await must('ip', ['link', 'show'])).includes('hgtestpeer'));
});

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import readline from 'node:readline';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runCommand } from '../../src/shared/run.js';
import { DEFAULT_PRIVATE_V4_RANGE, ipv4Gateway, parseIpv4Range } from '../../src/sixpn/ipv4.js';
import { startTestHangard, type TestHangard } from '../helpers/hangard.js';
import { type Json, NEEDS_ROOT, ok, pollUntil, readFromHost } from '../helpers/integration.js';
import { ProbeAgent, type ProbeResult } from '../helpers/probe-agent.js';
import { buildTestImage, freePort } from '../helpers/test-image.js';

/**
 * Egress with real machines and no internet: the test makes an "upstream" network namespace joined to
 * the host by a veth pair (the host's side 203.0.113.1/30 and 2001:db8:e9::1/64, documentation ranges,
 * which makes that subnet one of the host's local networks), gives it destinations in TEST-NET-2 and
 * 2001:db8:e0::/48 routed from the host through it, and runs a responder there that says which source
 * address reached it. Machines of four apps probe it: the default policy (`on`), `off`, an allow-list,
 * and the same again after a live change; beside each refusal its control succeeds, and the rule that
 * refused it counted it. The host's own addresses and its local subnet stay closed whatever the policy,
 * and so does another network. Everything the test puts on the host goes in t.after.
 */

const skip = NEEDS_ROOT;
const RESPONDER = fileURLToPath(new URL('../net/egress-responder.mjs', import.meta.url));
const DNS_PROBE = fileURLToPath(new URL('./dns-probe.mjs', import.meta.url));
const V4_GATEWAY = ipv4Gateway(parseIpv4Range(DEFAULT_PRIVATE_V4_RANGE));
const NETWORK = 'eg-net';
const OTHER_NETWORK = 'eg-other-net';

/** The upstream: link addresses (host side, far side) and the destinations behind it. */
const LINK4 = { host: '203.0.113.1', far: '203.0.113.2', prefix: 30 };
const LINK6 = { host: '2001:db8:e9::1', far: '2001:db8:e9::2', prefix: 64 };
const DEST4 = '198.51.100.10';
const DEST4_OTHER = '198.51.100.20';
const DEST6 = '2001:db8:e0::10';
const ROUTE4 = '198.51.100.0/24';
const ROUTE6 = '2001:db8:e0::/48';

const must = async (file: string, args: string[], input?: string) => {
  const result = await runCommand(file, args, { timeoutMs: 30_000, ...(input ? { input } : {}) });
  assert.equal(result.code, 0, `${file} ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
};

async function dropCount(family: 'inet' | 'bridge', chain: string, comment: string): Promise<number> {
  const text = await must('nft', ['list', 'chain', family, 'hangar', chain]);
  const match = new RegExp(`counter packets (\\d+) bytes \\d+ drop comment "${comment}"`).exec(text);
  assert.ok(match, `no "${comment}" counter in ${family} ${chain}:\n${text}`);
  return Number(match[1]);
}

interface Upstream {
  ports: [number, number];
}

/**
 * The upstream namespace, its veth, the host's routes to its destinations, and the responder; all
 * removed in t.after (the namespace takes its end of the veth and the host's end with it, and the
 * routes through it go with the host's end).
 */
async function makeUpstream(t: TestContext): Promise<Upstream> {
  const tag = process.pid.toString(36);
  const netns = `hgtest-up-${tag}`;
  const hostEnd = `egh${tag}`;
  const farEnd = `egu${tag}`;
  let responder: ChildProcess | undefined;
  t.after(async () => {
    responder?.kill();
    await runCommand('ip', ['netns', 'delete', netns], { timeoutMs: 10_000 });
    await runCommand('ip', ['link', 'del', hostEnd], { timeoutMs: 10_000 });
    await runCommand('ip', ['route', 'del', ROUTE4], { timeoutMs: 10_000 });
    await runCommand('ip', ['-6', 'route', 'del', ROUTE6], { timeoutMs: 10_000 });
  });
  await must('ip', ['netns', 'add', netns]);
  await must('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', farEnd, 'netns', netns]);
  await must(
    'ip',
    ['-batch', '-'],
    [
      `addr add ${LINK4.host}/${LINK4.prefix} dev ${hostEnd}`,
      `addr add ${LINK6.host}/${LINK6.prefix} dev ${hostEnd} nodad`,
      `link set ${hostEnd} up`,
      `route replace ${ROUTE4} via ${LINK4.far} dev ${hostEnd}`,
      `route replace ${ROUTE6} via ${LINK6.far} dev ${hostEnd}`,
      '',
    ].join('\n'),
  );
  // Replies come back in on the host's end: it must forward them (its own setting, gone with it).
  await writeFile(`/proc/sys/net/ipv4/conf/${hostEnd}/forwarding`, '1');
  await writeFile(`/proc/sys/net/ipv6/conf/${hostEnd}/force_forwarding`, '1');
  await must(
    'ip',
    ['-n', netns, '-batch', '-'],
    [
      'link set lo up',
      `addr add ${LINK4.far}/${LINK4.prefix} dev ${farEnd}`,
      `addr add ${LINK6.far}/${LINK6.prefix} dev ${farEnd} nodad`,
      `addr add ${DEST4}/32 dev lo`,
      `addr add ${DEST4_OTHER}/32 dev lo`,
      `addr add ${DEST6}/128 dev lo`,
      `link set ${farEnd} up`,
      `route replace default via ${LINK4.host}`,
      `route replace default via ${LINK6.host}`,
      '',
    ].join('\n'),
  );
  const ports: [number, number] = [await freePort(), await freePort()];
  responder = spawn('ip', ['netns', 'exec', netns, process.execPath, RESPONDER, ...ports.map(String)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    responder!.once('exit', (code) => reject(new Error(`the responder exited (${code})`)));
    readline.createInterface({ input: responder!.stdout! }).once('line', () => resolve());
  });
  return { ports };
}

/** A TCP listener of the host's own on 0.0.0.0 and :: (what sshd or a database would be). */
async function hostListener(t: TestContext): Promise<number> {
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.end('host socket\n');
  });
  await new Promise<void>((resolve) => server.listen({ host: '::', port: 0, ipv6Only: false }, resolve));
  t.after(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

const seen = (r: ProbeResult) => (r.ok ? r.answer : `no answer (${r.detail})`);

test('egress: NAT out of the host, the per-app policy, never the host or its local networks', {
  skip,
  timeout: 300_000,
}, async (t) => {
  const hostPort = await hostListener(t);
  const registryPort = await freePort();
  const h: TestHangard = await startTestHangard(t, {
    config: {
      runtime: 'required',
      network: { mode: 'required', egress: true },
      registry: { port: registryPort, insecure: [] },
    },
  });
  // Made while this hangard holds the host's networking (one owner at a time); the next rules apply
  // (the first machine's) reads its subnet as local.
  const upstream = await makeUpstream(t);
  const [open, other] = upstream.ports;
  const agents: ProbeAgent[] = [];
  t.after(async () => {
    for (const agent of agents) await agent.stop();
  });
  const machineOf = async (app: string, network: string) => {
    await ok(h, 'POST', '/v1/apps', { app_name: app, org_slug: 'personal', network });
    const image = await buildTestImage({
      registry: `127.0.0.1:${registryPort}`,
      token: h.token,
      repository: `${app}/idle`,
      config: { cmd: ['/bin/busybox', 'sleep', '3600'] },
    });
    const created = await ok(h, 'POST', `/v1/apps/${app}/machines`, {
      config: { image, guest: { memory_mb: 128 } },
    });
    await ok(h, 'GET', `/v1/apps/${app}/machines/${created.id}/wait?state=started&timeout=60`);
    const machine = (await ok(h, 'GET', `/v1/apps/${app}/machines/${created.id}`)) as Json;
    const agent = new ProbeAgent(`hangar-${created.id}`, app);
    agents.push(agent);
    await agent.ready;
    return { id: created.id as string, ip: machine.private_ip as string, agent };
  };
  const onPolicy = await machineOf('eg-on', NETWORK);
  const offPolicy = await machineOf('eg-off', NETWORK);
  const listed = await machineOf('eg-list', NETWORK);
  const stranger = await machineOf('eg-stranger', OTHER_NETWORK);
  await ok(h, 'PUT', '/v1/apps/eg-off/egress', { mode: 'off' });
  await ok(h, 'PUT', '/v1/apps/eg-list/egress', {
    mode: 'allow',
    allow: [{ cidr: `${DEST4}/32`, ports: [open] }, { cidr: ROUTE6 }],
  });
  const tcp = (from: { agent: ProbeAgent }, to: string, port: number) =>
    from.agent.probe({ kind: 'tcp', to, port, timeoutMs: 1500 });

  await t.test(
    'the default policy: out over IPv4 and IPv6, the responder sees the host’s NAT address',
    async () => {
      const v4 = await pollUntil('IPv4 egress', async () => {
        const r = await tcp(onPolicy, DEST4, open);
        return r.ok ? r : undefined;
      });
      assert.equal(v4.answer, `seen ${LINK4.host} at ${DEST4}:${open}`);
      const v6 = await tcp(onPolicy, DEST6, open);
      assert.equal(seen(v6), `seen ${LINK6.host} at ${DEST6}:${open}`);
      // From inside the container too, as the tenant's own process would.
      const inside = await ok(h, 'POST', `/v1/apps/eg-on/machines/${onPolicy.id}/exec`, {
        command: ['/bin/sh', '-c', `echo | nc -w 3 ${DEST4} ${open}; echo | nc -w 3 ${DEST6} ${other}`],
      });
      assert.equal(
        inside.stdout,
        `seen ${LINK4.host} at ${DEST4}:${open}\nseen ${LINK6.host} at ${DEST6}:${other}\n`,
      );
    },
  );

  await t.test('policy off: nothing gets out, DNS is not forwarded; the default beside it does', async () => {
    const before = await dropCount('inet', 'egress_policy', 'egress policy');
    const refused = await Promise.all([tcp(offPolicy, DEST4, open), tcp(offPolicy, DEST6, open)]);
    assert.deepEqual(refused.map(seen), ['no answer (timeout)', 'no answer (timeout)']);
    assert.ok((await dropCount('inet', 'egress_policy', 'egress policy')) - before >= 2);
    const control = await Promise.all([tcp(onPolicy, DEST4, open), tcp(onPolicy, DEST6, open)]);
    assert.deepEqual(
      control.map((r) => r.ok),
      [true, true],
    );
    // DNS forwarding follows: the host's resolvers are no way out either.
    const dns = async (id: string) =>
      JSON.parse(
        await must('ip', [
          ...['netns', 'exec', `hangar-${id}`, process.execPath, DNS_PROBE],
          JSON.stringify([{ server: 'fdaa::3', name: 'example.com', type: 'A', transport: 'udp' }]),
        ]),
      )[0];
    assert.equal((await dns(offPolicy.id)).rcode, 'REFUSED');
    assert.notEqual((await dns(onPolicy.id)).rcode, 'REFUSED', 'control: forwarded for the default');
  });

  await t.test('an allow-list: only the listed destinations and ports answer', async () => {
    const before = await dropCount('inet', 'egress_policy', 'egress policy');
    const results = {
      listed: await tcp(listed, DEST4, open),
      otherPort: await tcp(listed, DEST4, other),
      otherHost: await tcp(listed, DEST4_OTHER, open),
      v6AnyPort: await tcp(listed, DEST6, other),
    };
    assert.deepEqual(Object.fromEntries(Object.entries(results).map(([k, r]) => [k, seen(r)])), {
      listed: `seen ${LINK4.host} at ${DEST4}:${open}`,
      otherPort: 'no answer (timeout)',
      otherHost: 'no answer (timeout)',
      v6AnyPort: `seen ${LINK6.host} at ${DEST6}:${other}`,
    });
    assert.ok((await dropCount('inet', 'egress_policy', 'egress policy')) - before >= 2);
    // Controls: the default policy reaches the two refused ones.
    assert.ok((await tcp(onPolicy, DEST4, other)).ok && (await tcp(onPolicy, DEST4_OTHER, open)).ok);
  });

  await t.test('the policy follows the store live: off → on opens, and back', async () => {
    await ok(h, 'PUT', '/v1/apps/eg-off/egress', { mode: 'on' });
    const opened = await pollUntil('egress opens', async () => {
      const r = await tcp(offPolicy, DEST4, open);
      return r.ok ? r : undefined;
    });
    assert.equal(opened.answer, `seen ${LINK4.host} at ${DEST4}:${open}`);
    await ok(h, 'PUT', '/v1/apps/eg-off/egress', { mode: 'off' });
    await pollUntil('egress closes', async () => {
      const r = await tcp(offPolicy, DEST4, open);
      return r.ok ? undefined : r;
    });
  });

  await t.test('whatever the policy: never the host’s own addresses, nor its local subnet', async () => {
    const hostAddresses = (
      JSON.parse(await must('ip', ['-j', 'addr', 'show'])) as {
        ifname: string;
        addr_info: { local: string; scope: string }[];
      }[]
    )
      .filter((l) => !/^hg[nvw][0-9a-f]+$/.test(l.ifname))
      .flatMap((l) => l.addr_info.filter((a) => a.scope === 'global').map((a) => a.local));
    assert.ok(hostAddresses.includes(LINK4.host) && hostAddresses.includes(LINK6.host));
    const targets = [...hostAddresses, V4_GATEWAY];
    for (const to of targets) {
      assert.equal(await readFromHost(to, hostPort), 'host socket', `control: the host answers on ${to}`);
    }
    const before = await dropCount('inet', 'machine_to_host', 'machine to host');
    const probes = await Promise.all(targets.map((to) => tcp(onPolicy, to, hostPort)));
    assert.deepEqual(
      probes.map(seen),
      targets.map(() => 'no answer (timeout)'),
      targets.join(', '),
    );
    assert.ok((await dropCount('inet', 'machine_to_host', 'machine to host')) - before >= targets.length);

    // The far end of the link is on a subnet of the host's own: a local network, closed unless the
    // operator lists it. Control: the host reaches the responder there.
    assert.match(await readFromHost(LINK4.far, open), new RegExp(`^seen ${LINK4.host} at ${LINK4.far}`));
    assert.match(await readFromHost(LINK6.far, open), /^seen /);
    const localBefore = await dropCount('inet', 'leaving_network', 'host-local network');
    const local = await Promise.all([tcp(onPolicy, LINK4.far, open), tcp(onPolicy, LINK6.far, open)]);
    assert.deepEqual(local.map(seen), ['no answer (timeout)', 'no answer (timeout)']);
    assert.ok((await dropCount('inet', 'leaving_network', 'host-local network')) - localBefore >= 2);
  });

  await t.test('egress on is no way into another network', async () => {
    const strangerV4 = /inet (\S+)\/32/.exec(
      await must('ip', ['-n', `hangar-${stranger.id}`, '-4', 'addr', 'show', 'dev', 'eth0']),
    )![1]!;
    const before = await dropCount('inet', 'leaving_network', 'cross-network');
    const v4Before = await dropCount('inet', 'prerouting', "to a machine's private IPv4");
    const probes = await Promise.all([tcp(onPolicy, stranger.ip, 8080), tcp(onPolicy, strangerV4, 8080)]);
    assert.deepEqual(probes.map(seen), ['no answer (timeout)', 'no answer (timeout)']);
    assert.ok((await dropCount('inet', 'leaving_network', 'cross-network')) - before >= 1);
    assert.ok((await dropCount('inet', 'prerouting', "to a machine's private IPv4")) - v4Before >= 1);
    // Control: a machine of its own network answers (its agent serves on [::]:8080).
    assert.equal(seen(await tcp(onPolicy, offPolicy.ip, 8080)), 'eg-off');
  });
});

test('egress: a local network the operator lists is reached; the host itself still is not', {
  skip,
  timeout: 240_000,
}, async (t) => {
  const hostPort = await hostListener(t);
  const registryPort = await freePort();
  const h: TestHangard = await startTestHangard(t, {
    config: {
      runtime: 'required',
      network: {
        mode: 'required',
        egress: true,
        egressLocal: [`203.0.113.0/${LINK4.prefix}`, `2001:db8:e9::/${LINK6.prefix}`],
      },
      registry: { port: registryPort, insecure: [] },
    },
  });
  const upstream = await makeUpstream(t);
  const [open] = upstream.ports;
  await ok(h, 'POST', '/v1/apps', { app_name: 'eg-local', org_slug: 'personal', network: NETWORK });
  const image = await buildTestImage({
    registry: `127.0.0.1:${registryPort}`,
    token: h.token,
    repository: 'eg-local/idle',
    config: { cmd: ['/bin/busybox', 'sleep', '3600'] },
  });
  const created = await ok(h, 'POST', '/v1/apps/eg-local/machines', {
    config: { image, guest: { memory_mb: 128 } },
  });
  await ok(h, 'GET', `/v1/apps/eg-local/machines/${created.id}/wait?state=started&timeout=60`);
  const agent = new ProbeAgent(`hangar-${created.id}`, 'eg-local');
  t.after(() => agent.stop());
  await agent.ready;
  const tcp = (to: string, port: number) => agent.probe({ kind: 'tcp', to, port, timeoutMs: 1500 });

  const reached = await pollUntil('the listed local network answers', async () => {
    const r = await tcp(LINK4.far, open);
    return r.ok ? r : undefined;
  });
  assert.equal(reached.answer, `seen ${LINK4.host} at ${LINK4.far}:${open}`);
  assert.equal(seen(await tcp(LINK6.far, open)), `seen ${LINK6.host} at ${LINK6.far}:${open}`);
  // The host's own address in that subnet stays closed (control: the host answers there).
  assert.equal(await readFromHost(LINK4.host, hostPort), 'host socket');
  const before = await dropCount('inet', 'machine_to_host', 'machine to host');
  assert.equal(seen(await tcp(LINK4.host, hostPort)), 'no answer (timeout)');
  assert.ok((await dropCount('inet', 'machine_to_host', 'machine to host')) - before >= 1);
  // And the app's policy still applies on top: off closes the listed network too.
  await ok(h, 'PUT', '/v1/apps/eg-local/egress', { mode: 'off' });
  await pollUntil('policy off closes it', async () => {
    const r = await tcp(LINK4.far, open);
    return r.ok ? undefined : r;
  });
});

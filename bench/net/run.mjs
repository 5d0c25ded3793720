#!/usr/bin/env node
// Time to attach a machine to its network (veth + addresses + routes, then the rules apply), and time to
// apply the whole rule set, with 1, 100 and 1,000 networks on the host. Uses hangard's own net library
// (packages/server/src/net, loaded through tsx) on the host's real network stack.
//
//   node bench/net/run.mjs [--sizes 1,100,1000] [--machines 5] [--runs 5] [--json]
//
// Needs root, ip (iproute2), nft, unshare and busybox. The run happens in a network namespace of its own
// (`unshare --net`): a complete network stack of the same kernel, so the host's links, rule set and
// sysctls are never touched, and whatever the run leaves goes away with the namespace. See
// bench/net/README.md.
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';
import { parseFlags, positive } from '../lib/server.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOST_ID = '7e5bab01';
/** Network ids and machine numbers of the run: a range no real store hands out soon. */
const NETWORK_BASE = 0x7e5b0000;
const MACHINE_BASE = 0x7e5b0000;
/** Machines' namespaces are named (ip netns), so visible to the host: the parent sweeps this prefix. */
const NETNS_PREFIX = process.env.HANGAR_NET_BENCH_CHILD || `hgbench${process.pid}-`;

const HELP = `Usage: node bench/net/run.mjs [options]   (as root)

  --sizes LIST   numbers of networks on the host, comma-separated (default 1,100,1000)
  --machines N   machines attached and timed at each size (default 5)
  --runs N       full rule set applies timed at each size (default 5)
  --json         print one JSON document instead of the table
  -h, --help     show this help
`;

const flags = parseFlags(
  {
    sizes: { type: 'string', default: '1,100,1000' },
    machines: { type: 'string', default: '5' },
    runs: { type: 'string', default: '5' },
    json: { type: 'boolean', default: false },
  },
  HELP,
);
const sizes = flags.sizes.split(',').map((s) => positive('sizes', s.trim(), { integer: true }));
const machineCount = positive('machines', flags.machines, { integer: true });
const runs = positive('runs', flags.runs, { integer: true });
if (process.getuid?.() !== 0) {
  process.stderr.write('bench: needs root (bridges, veths, network namespaces, nftables)\n');
  process.exit(2);
}

// ---- the parent: runs the bench in a fresh network namespace and sweeps up after it ------------------

const CHILD = 'HANGAR_NET_BENCH_CHILD';
if (!process.env[CHILD]) {
  const prefix = `hgbench${process.pid}-`;
  const child = spawn(
    'unshare',
    ['--net', process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    {
      stdio: 'inherit',
      env: { ...process.env, [CHILD]: prefix },
    },
  );
  // Ctrl-C reaches the child too (same process group); it cleans up and exits, then this sweeps the
  // machines' namespaces it may have left (a second Ctrl-C, a SIGKILL).
  let signals = 0;
  const onSignal = (signal) => {
    if (++signals > 1) child.kill('SIGKILL');
    else child.kill(signal);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, onSignal);
  const code = await new Promise((resolve) =>
    child.on('exit', (status, signal) => resolve(status ?? (signal ? 130 : 1))),
  );
  const listed = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  for (const name of listed
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n?.startsWith(prefix))) {
    spawnSync('ip', ['netns', 'delete', name]);
  }
  process.exit(code);
}

const log = (line) => {
  if (!flags.json) process.stderr.write(`${line}\n`);
};

// ---- hangard's net library, straight from src through tsx ----------------------------------------------

register();
const srcUrl = (path) => new URL(`packages/server/src/${path}`, `file://${ROOT}`).href;
// The types name the same modules, so that the bench type-check notices when one moves.
/** @type {typeof import('../../packages/server/src/net/linux-net.ts')} */
const { LinuxNetwork } = await import(srcUrl('net/linux-net.ts'));
/** @type {typeof import('../../packages/server/src/sixpn/address-plan.ts')} */
const { planAttachment, planNetwork } = await import(srcUrl('sixpn/address-plan.ts'));
/** @type {typeof import('../../packages/server/src/net/ruleset.ts')} */
const { buildRuleset } = await import(srcUrl('net/ruleset.ts'));
/** @type {typeof import('../../packages/server/src/sixpn/ipv6.ts')} */
const { flycastAddress } = await import(srcUrl('sixpn/ipv6.ts'));

// ---- the namespace of the run ------------------------------------------------------------------------------

function sh(file, args, input) {
  const result = spawnSync(file, args, { encoding: 'utf8', input, timeout: 60_000 });
  return { code: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

const tables = sh('nft', ['list', 'tables']);
if (tables.code !== 0 || tables.stdout.trim() !== '') {
  process.stderr.write(
    `bench: expected an empty rule set in the bench's own namespace: ${tables.stdout}${tables.stderr}\n`,
  );
  process.exit(1);
}
// A new namespace has its loopback down; fdaa::3 lives there.
sh('ip', ['link', 'set', 'lo', 'up']);

// ---- cleanup: on a normal end, an error, Ctrl-C, SIGTERM or SIGHUP -------------------------------------

const namespaces = new Set();
let cleanedUp = false;

/**
 * Only the machines' namespaces need removing: the bridges, veths, tables and sysctls are in the
 * bench's namespace, which the kernel destroys (all at once) when this process exits.
 */
async function cleanup() {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const ns of namespaces) sh('ip', ['netns', 'delete', ns]);
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    process.stderr.write(`\nbench: ${signal}, cleaning up\n`);
    cleanup().finally(() => process.exit(130));
  });
}

// ---- the run ----------------------------------------------------------------------------------------------

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const ms = (start) => Number(process.hrtime.bigint() - start) / 1e6;
const now = () => process.hrtime.bigint();

/**
 * N networks, each with one machine and one Flycast address in the rules (the machines and apps the host
 * would already run). Only the
 * timed machines get a real namespace and veth; the others are set elements, which is all they cost an
 * apply, and reconcile skips them (no namespace).
 */
function desiredState(size, extra = []) {
  const networks = Array.from({ length: size }, (_, i) => planNetwork(NETWORK_BASE + i + 1, HOST_ID));
  const residents = networks.map((n, i) =>
    planAttachment({
      machineId: (MACHINE_BASE + i + 1).toString(16).padStart(14, '0'),
      machineNumber: MACHINE_BASE + i + 1,
      networkId: n.id,
      hostId: HOST_ID,
    }),
  );
  // One Flycast address per network, serving HTTP and HTTPS, as a typical app's services would.
  /** @type {import('../../packages/server/src/net/service-ports.ts').PortRange[]} */
  const ports = [
    { protocol: 'tcp', start: 80, end: 80 },
    { protocol: 'tcp', start: 443, end: 443 },
  ];
  const flycast = networks.map((n) => ({ networkId: n.id, address: flycastAddress(n.id, 1), ports }));
  return { networks, attachments: [...residents, ...extra], flycast, egress: false };
}

const results = [];
const warnings = new Set();
const net = new LinuxNetwork({ onWarning: (w) => warnings.add(w) });
let nextMachine = MACHINE_BASE + 0x8000;

try {
  for (const size of sizes) {
    log(`bench: ${size} network${size === 1 ? '' : 's'}: creating bridges…`);
    const base = desiredState(size);
    const reconcileStart = now();
    const reconciled = await net.reconcile(base, { netnsOf: () => `${NETNS_PREFIX}none` });
    const reconcileMs = ms(reconcileStart);
    const again = now();
    await net.reconcile(base, { netnsOf: () => `${NETNS_PREFIX}none` });
    const reconcileAgainMs = ms(again);

    const ruleset = buildRuleset(base);
    const applyMs = [];
    for (let i = 0; i < runs; i++) {
      const start = now();
      await net.applyRules(base, { full: true });
      applyMs.push(ms(start));
    }

    // Attach machines one after another, each into a different network (spread over the host's
    // networks), as a burst of boots would: attach, then apply the rules that include it.
    const attached = [];
    const attachMs = [];
    const rulesMs = [];
    for (let i = 0; i < machineCount; i++) {
      const number = nextMachine++;
      const network = base.networks[Math.floor((i * size) / machineCount)];
      const attachment = planAttachment({
        machineId: number.toString(16).padStart(14, '0'),
        machineNumber: number,
        networkId: network.id,
        hostId: HOST_ID,
      });
      const netns = `${NETNS_PREFIX}${number.toString(16)}`;
      namespaces.add(netns);
      sh('ip', ['netns', 'add', netns]);
      const start = now();
      await net.attach(netns, attachment);
      const attachedAt = now();
      attached.push(attachment);
      const applied = await net.applyRules({ ...base, attachments: [...base.attachments, ...attached] });
      if (applied.mode !== 'delta')
        throw new Error(`expected an element delta after an attach, got ${applied.mode}`);
      attachMs.push(Number(attachedAt - start) / 1e6);
      rulesMs.push(ms(attachedAt));
    }
    // A timed machine must really be plugged in: its namespace reaches the bridge's gateway by ND.
    const last = attached[attached.length - 1];
    const check = sh('ip', [
      'netns',
      'exec',
      `${NETNS_PREFIX}${last.machineNumber.toString(16)}`,
      'busybox',
      'ping',
      '-6',
      '-c',
      '1',
      '-W',
      '1',
      last.gateway,
    ]);
    const neigh = sh('ip', [
      '-6',
      '-n',
      `${NETNS_PREFIX}${last.machineNumber.toString(16)}`,
      'neigh',
      'show',
      last.gateway,
    ]);
    if (!/lladdr/.test(neigh.stdout))
      throw new Error(`the last attached machine did not resolve its gateway (${check.stderr.trim()})`);

    // Detach them again (the next size starts from networks only).
    for (const attachment of attached) await net.detach(attachment);
    for (const ns of [...namespaces]) {
      sh('ip', ['netns', 'delete', ns]);
      namespaces.delete(ns);
    }

    // Destroying a network's last app: its bridge goes and the rules lose its elements.
    const removeMs = [];
    for (let i = 0; i < Math.min(3, size); i++) {
      const gone = base.networks[size - 1 - i];
      const start = now();
      await net.removeNetwork(gone);
      await net.applyRules({
        ...base,
        networks: base.networks.filter((n) => n.id < gone.id),
        attachments: base.attachments.filter((a) => a.networkId < gone.id),
      });
      removeMs.push(ms(start));
    }

    const attachTotal = attachMs.map((a, i) => a + rulesMs[i]);
    results.push({
      networks: size,
      machinesInRules: base.attachments.length + machineCount,
      rulesetBytes: ruleset.length,
      rulesetLines: ruleset.split('\n').length,
      createBridgesMs: reconcileMs,
      bridgesCreated: reconciled.createdBridges.length,
      reconcileNoopMs: reconcileAgainMs,
      applyMedianMs: median(applyMs),
      attachMedianMs: median(attachMs),
      rulesAfterAttachMedianMs: median(rulesMs),
      attachTotalMedianMs: median(attachTotal),
      removeNetworkMedianMs: median(removeMs),
      samples: { applyMs, attachMs, rulesMs, removeMs },
    });
  }
} catch (error) {
  process.stderr.write(`bench: ${error.stack ?? error}\n`);
  process.exitCode = 1;
} finally {
  await net.close();
  await cleanup();
}

if (flags.json) {
  process.stdout.write(
    `${JSON.stringify({ hostId: HOST_ID, machines: machineCount, runs, results, warnings: [...warnings] }, null, 2)}\n`,
  );
} else if (results.length > 0) {
  const f = (x) => x.toFixed(1);
  const rows = [
    [
      'networks',
      'create bridges (reconcile)',
      'reconcile again',
      'rule set',
      'full apply',
      'attach: veth+addr+routes',
      'then rules (delta)',
      'attach total',
      'remove a network',
    ],
    ...results.map((r) => [
      String(r.networks),
      `${f(r.createBridgesMs)} ms (${r.bridgesCreated} new)`,
      `${f(r.reconcileNoopMs)} ms`,
      `${r.rulesetLines} lines, ${(r.rulesetBytes / 1024).toFixed(0)} KiB`,
      `${f(r.applyMedianMs)} ms`,
      `${f(r.attachMedianMs)} ms`,
      `${f(r.rulesAfterAttachMedianMs)} ms`,
      `${f(r.attachTotalMedianMs)} ms`,
      `${f(r.removeNetworkMedianMs)} ms`,
    ]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row) => row.map((cell, c) => cell.padEnd(widths[c])).join('  ');
  console.log(
    `\nHangar networking, medians (${machineCount} attaches, ${runs} full applies per size; host ${HOST_ID})`,
  );
  console.log(line(rows[0]));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows.slice(1)) console.log(line(row));
  const first = results[0];
  const lastResult = results[results.length - 1];
  if (results.length > 1) {
    console.log(
      `\nFrom ${first.networks} to ${lastResult.networks} networks: attach ×${(lastResult.attachMedianMs / first.attachMedianMs).toFixed(2)}, ` +
        `rules after attach ×${(lastResult.rulesAfterAttachMedianMs / first.rulesAfterAttachMedianMs).toFixed(2)}, ` +
        `attach total ×${(lastResult.attachTotalMedianMs / first.attachTotalMedianMs).toFixed(2)}; ` +
        `full rule set apply ×${(lastResult.applyMedianMs / first.applyMedianMs).toFixed(1)}.`,
    );
  }
  for (const warning of warnings) console.log(`warning: ${warning}`);
}
if (sh('ip', ['netns', 'list']).stdout.includes(NETNS_PREFIX)) {
  process.stderr.write('bench: some namespaces of the run are left\n');
  process.exitCode = 1;
}

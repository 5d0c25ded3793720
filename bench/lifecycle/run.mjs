#!/usr/bin/env node
// Machine lifecycle latency of a real hangard (create, stop, start, suspend, resume, destroy, each timed to
// the API's answer or to the machine's first HTTP answer), next to the same operations done directly with
// the OCI runtime hangard uses, on a bundle made by hand from the same image (the floor).
//
//   node bench/lifecycle/run.mjs [--runs 20] [--json]
//
// Needs root and crun/runc, umoci, skopeo, docker-registry, tini and busybox-static. See
// bench/lifecycle/README.md for the method and what each figure means.
import { cpus } from 'node:os';
import { exitUnlessRoot, MachineHost, now, record, summarizeAll } from '../lib/machine-host.mjs';
import { daemonKind, parseFlags, positive, serverCode, tableLines } from '../lib/server.mjs';

const APP = 'lifecycle';
const TARGET_START_RATIO = 3;
const TARGET_RESUME_MS = 20;

const HELP = `Usage: node bench/lifecycle/run.mjs [options]   (as root)

  --runs N             samples per operation, each on a fresh machine and a fresh floor container
                       (default 20; one more unrecorded warm-up cycle runs first)
  --probe-timeout SEC  give up waiting for a machine's first HTTP answer after SEC seconds (default 10)
  --daemon KIND        auto | dist | tsx: run packages/server/dist/main.js or src/main.ts through tsx;
                       auto picks dist when it is built and newer than src (default auto)
  --json               print one JSON document (figures, samples, verdicts) instead of the table
  -h, --help           show this help
`;

// ---- options --------------------------------------------------------------------------------------

const flags = parseFlags(
  {
    runs: { type: 'string', default: '20' },
    'probe-timeout': { type: 'string', default: '10' },
    daemon: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
  },
  HELP,
);
const options = {
  runs: Math.floor(positive('runs', flags.runs)),
  probeTimeoutMs: positive('probe-timeout', flags['probe-timeout']) * 1000,
  daemon: daemonKind(flags.daemon),
  json: flags.json,
};
exitUnlessRoot();

const host = new MachineHost({ name: 'lifecycle', quiet: options.json, behindProxy: false });

// ---- hangard: one full lifecycle of one machine, through the API ------------------------------------------

const MACHINE_CONFIG = (image) => ({
  image,
  guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 128 },
  restart: { policy: 'no' },
  stop_config: { signal: 'SIGTERM', timeout: '10s' },
});

/**
 * create → started, stop, start → first answer, suspend, start (resume) → first answer, stop, destroy.
 * `onStarted(id)` runs while the machine exists (the warm-up reads its OCI config there).
 */
async function hangardCycle(image, label, samples, onStarted) {
  const base = `/v1/apps/${APP}/machines`;
  const t0 = now();
  const machine = await host.api('POST', base, { name: `lc-${label}`, config: MACHINE_CONFIG(image) });
  const tCreated = now();
  const one = `${base}/${machine.id}`;
  await host.api('GET', `${one}/wait?state=started&timeout=60`);
  const tStarted = now();
  record(samples, 'createToStarted', tStarted - t0);
  record(samples, 'createCall', tCreated - t0);
  onStarted?.(machine.id);

  const helper = await host.startHelper(`hangar-${machine.id}`);
  try {
    await host.probeFirstAnswer(helper, `machine ${machine.id} after create`, options.probeTimeoutMs);

    let t = now();
    await host.api('POST', `${one}/stop`, {});
    record(samples, 'stop', now() - t);

    let answer = host.probeFirstAnswer(helper, `machine ${machine.id} after start`, options.probeTimeoutMs);
    t = now();
    await host.api('POST', `${one}/start`);
    let returned = now();
    let first = await answer;
    record(samples, 'startToAnswer', first.at - t);
    record(samples, 'startCall', returned - t);
    record(samples, 'startAfterReturn', first.at - returned);

    t = now();
    await host.api('POST', `${one}/suspend`);
    record(samples, 'suspend', now() - t);

    answer = host.probeFirstAnswer(helper, `machine ${machine.id} after resume`, options.probeTimeoutMs);
    t = now();
    await host.api('POST', `${one}/start`);
    returned = now();
    first = await answer;
    record(samples, 'resumeToAnswer', first.at - t);
    record(samples, 'resumeCall', returned - t);
    record(samples, 'resumeAfterReturn', first.at - returned);

    t = now();
    await host.api('POST', `${one}/stop`, {});
    record(samples, 'stop', now() - t);
  } finally {
    await host.stopHelper(helper);
  }
  const t = now();
  await host.api('DELETE', `${one}?force=true`);
  record(samples, 'destroy', now() - t);
}

// ---- the floor: the same operations with the bare OCI runtime ---------------------------------------------

/**
 * The same cycle with the bare runtime on a fresh floor container: netns add + lo up + run -d, kill →
 * run -d → first answer, pause, resume → first answer, kill, and `ip netns delete` as its destroy.
 */
async function floorCycle(label, samples) {
  if (host.aborted) throw new Error('aborted');
  const t0 = now();
  const floor = await host.prepareFloor(label);
  const { id } = floor;
  await host.floorRun(floor);
  record(samples, 'createToStarted', now() - t0);

  const helper = await host.startHelper(floor.netns);
  try {
    await host.probeFirstAnswer(helper, `floor container ${id} after run`, options.probeTimeoutMs);

    let t = now();
    await host.floorStop(floor, options.probeTimeoutMs);
    record(samples, 'stop', now() - t);

    let answer = host.probeFirstAnswer(
      helper,
      `floor container ${id} after run after kill`,
      options.probeTimeoutMs,
    );
    t = now();
    await host.floorRun(floor);
    let returned = now();
    let first = await answer;
    record(samples, 'startToAnswer', first.at - t);
    record(samples, 'startCall', returned - t);
    record(samples, 'startAfterReturn', first.at - returned);

    t = now();
    await host.oci(['pause', id]);
    record(samples, 'suspend', now() - t);

    answer = host.probeFirstAnswer(helper, `floor container ${id} after resume`, options.probeTimeoutMs);
    t = now();
    await host.oci(['resume', id]);
    returned = now();
    first = await answer;
    record(samples, 'resumeToAnswer', first.at - t);
    record(samples, 'resumeCall', returned - t);
    record(samples, 'resumeAfterReturn', first.at - returned);

    t = now();
    await host.floorStop(floor, options.probeTimeoutMs);
    record(samples, 'stop', now() - t);
  } finally {
    await host.stopHelper(helper);
  }
  record(samples, 'destroy', await host.removeFloor(floor));
}

// ---- the run ----------------------------------------------------------------------------------------

async function main() {
  host.preflight();
  const code = serverCode(options.daemon);
  const machineInfo = `${cpus().length}× ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}, ${process.platform}`;
  host.log(`bench: ${machineInfo}; ${options.runs} runs per operation, data in ${host.tempDir}`);

  const choice = await host.detectRuntime(code);
  const runtime = `${choice.binary}${choice.hideUnifiedCgroup ? ' (cgroup2 hidden in a private mount namespace)' : ''}`;
  host.log(`bench: OCI runtime (hangard's detect.ts): ${runtime}`);

  const { registry } = await host.startHangard(code);
  host.log(
    `bench: hangard (${code.kind}) on ${host.target.host}:${host.target.port}, registry on ${registry}`,
  );
  // The app first: Hangar's registry keeps images in the space of an app that exists.
  await host.createApp(APP);
  const built = now();
  await host.buildImage();
  const reference = await host.pushImage(registry, APP);
  host.log(`bench: image ${reference} built and pushed in ${(now() - built).toFixed(0)} ms`);

  // Warm-up, not recorded: the first create pulls and unpacks the image; both sides' code paths warm up.
  let mapping;
  const warm = {};
  await hangardCycle(reference, 'warm', warm, (id) => {
    mapping = host.machineMapping(id);
  });
  const coldCreateMs = warm.createToStarted[0];
  host.log(
    `bench: warm-up cycle done (first create with image pull + unpack: ${coldCreateMs.toFixed(0)} ms)`,
  );
  await host.setupFloor(mapping);
  await floorCycle('warm', {});

  const hangard = {};
  const floor = {};
  for (let i = 0; i < options.runs; i++) {
    await hangardCycle(reference, String(i), hangard);
    await floorCycle(String(i), floor);
    if (!host.aborted && !options.json && ((i + 1) % 5 === 0 || i + 1 === options.runs))
      host.log(`bench: ${i + 1}/${options.runs} cycles`);
  }

  const h = summarizeAll(hangard);
  const f = summarizeAll(floor);
  const startLimit = TARGET_START_RATIO * f.startToAnswer.median;
  const report = {
    host: machineInfo,
    runtime: { ...choice, description: runtime },
    daemon: code.kind,
    runs: options.runs,
    coldCreateMs,
    hangard: h,
    floor: f,
    ratios: Object.fromEntries(Object.keys(h).map((k) => [k, f[k] ? h[k].median / f[k].median : null])),
    targets: {
      startAfterStop: {
        rule: `median start-after-stop → first answer ≤ ${TARGET_START_RATIO}× the floor's`,
        hangardMs: h.startToAnswer.median,
        limitMs: startLimit,
        pass: h.startToAnswer.median <= startLimit,
      },
      resume: {
        rule: `median resume-after-suspend → first answer ≤ ${TARGET_RESUME_MS} ms`,
        hangardMs: h.resumeToAnswer.median,
        limitMs: TARGET_RESUME_MS,
        pass: h.resumeToAnswer.median <= TARGET_RESUME_MS,
      },
    },
    samples: { hangard, floor },
  };
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(table(report));
}

function table({ hangard: h, floor: f, targets, runs, coldCreateMs, runtime, daemon }) {
  const ms = (v) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(1));
  const verdict = (t) => (t.pass ? 'PASS' : 'MISS');
  const rows = [
    ['create → started', 'createToStarted', 'netns add + lo up + run -d returns'],
    ['  POST create returns', 'createCall', ''],
    [
      'start after stop → first answer',
      'startToAnswer',
      'run -d → first answer',
      `≤${TARGET_START_RATIO}× floor: ${verdict(targets.startAfterStop)}`,
    ],
    ['  POST start returns', 'startCall', 'run -d returns'],
    ['  from its return to the answer', 'startAfterReturn', 'from its return'],
    [
      'resume after suspend → first answer',
      'resumeToAnswer',
      'resume → first answer',
      `≤${TARGET_RESUME_MS} ms: ${verdict(targets.resume)}`,
    ],
    ['  POST start (resume) returns', 'resumeCall', 'resume returns'],
    ['  from its return to the answer', 'resumeAfterReturn', 'from its return'],
    ['suspend (POST suspend)', 'suspend', 'pause'],
    ['stop (POST stop, SIGTERM)', 'stop', 'kill KILL → exited → delete'],
    ['destroy (DELETE force, stopped)', 'destroy', 'ip netns delete'],
  ];
  const header = [
    'operation',
    'median',
    'p90',
    'min',
    'floor: the same with the bare runtime',
    'median',
    'p90',
    'min',
    'ratio',
    'target',
  ];
  const lines = rows.map(([name, key, floorName, target = '']) => {
    const a = h[key];
    const b = floorName ? f[key] : undefined;
    return [
      name,
      ms(a?.median),
      ms(a?.p90),
      ms(a?.min),
      floorName,
      ms(b?.median),
      ms(b?.p90),
      ms(b?.min),
      b && a.median > 0 && b.median > 0 ? `${(a.median / b.median).toFixed(1)}×` : '',
      target,
    ];
  });
  const s = targets.startAfterStop;
  const r = targets.resume;
  return [
    '',
    `hangard (${daemon}) vs the bare runtime, ${runtime.description}; ms, ${runs} runs each (stop: ${h.stop.n} samples, two per cycle)`,
    '',
    ...tableLines(header, lines, new Set([0, 4, 9])),
    '',
    `target start after stop → first answer within ${TARGET_START_RATIO}× the bare runtime: ` +
      `${ms(s.hangardMs)} ms vs ${TARGET_START_RATIO} × ${ms(f.startToAnswer.median)} = ${ms(s.limitMs)} ms → ${verdict(s)}`,
    `target resume after suspend → first answer within ${TARGET_RESUME_MS} ms: ${ms(r.hangardMs)} ms → ${verdict(r)}`,
    `where start goes (medians): POST start ${ms(h.startCall.median)} ms (bare run -d ${ms(f.startCall.median)} ms), ` +
      `then ${ms(h.startAfterReturn.median)} ms to the first answer (bare ${ms(f.startAfterReturn.median)} ms)`,
    'a negative "from its return to the answer" means the machine answered before the API call returned.',
    `the first create of the run (image pull + unpack included, not in the table) took ${ms(coldCreateMs)} ms`,
    '',
  ].join('\n');
}

await host.runMain(main);

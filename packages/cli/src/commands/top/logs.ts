import { isMachinesApiError, type Machine, type MachinesClient } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { intFlag } from '../../flags.js';
import { appMachines, processGroup } from '../../groups.js';
import type { Output } from '../../output.js';

/** How often a followed app is checked for new machines whose output should join. */
const DISCOVER_EVERY_MS = 5_000;

interface Opts {
  instance?: string;
  region?: string;
  tail: boolean;
  lines: string;
}

/** One machine's stream, each line prefixed `group[id] region`, until it ends or `signal` aborts. */
async function pump(
  api: MachinesClient,
  app: string,
  m: Machine,
  options: { tail: number; follow: boolean; signal: AbortSignal },
  out: Output,
): Promise<void> {
  const group = processGroup(m);
  try {
    const lines = api.machines.logs(
      app,
      m.id,
      { tail: options.tail, follow: options.follow },
      { signal: options.signal },
    );
    for await (const line of lines) {
      out.line(
        out.json
          ? JSON.stringify({ instance: m.id, region: m.region, process_group: group, message: line.message })
          : `${group}[${m.id}] ${m.region} ${line.message}`,
      );
    }
  } catch (err) {
    // One machine's stream failing (destroyed meanwhile, no runtime) must not end the others.
    if (isMachinesApiError(err)) out.note(`(${m.id}: ${err.detail ?? err.message})`);
    else throw err;
  }
}

export default defineVerb<Opts>({
  usage: 'logs',
  summary: 'Show the app’s output: every machine’s lines, merged and prefixed; follows until interrupted',
  description:
    'Show what the app’s machines write to stdout and stderr, merged as it arrives, each line prefixed ' +
    'with `<process group>[<machine id>] <region>`. It first prints each machine’s recent lines, then, ' +
    'as flyctl does, keeps following (new machines join within seconds) until interrupted; --no-tail ' +
    'prints what is there and exits. With --json each line is an object.',
  examples: ['hangar logs -a acme', 'hangar logs -a acme -i 148ed193b95e89 --no-tail -n 500'],
  app: true,
  json: true,
  options(cmd) {
    cmd
      .option('-i, --instance <id>', 'only this machine')
      .option('-r, --region <code>', 'only machines in this region')
      .option('--no-tail', 'print the recent lines and exit instead of following')
      .option('-n, --lines <count>', 'recent lines to show first, per machine', '100');
  },
  async run({ app, opts, client, out }) {
    const name = app();
    const api = client();
    const tail = intFlag(opts.lines, '--lines', 0) ?? 100;
    const follow = opts.tail;
    const wanted = (m: Machine) => !opts.region || m.region === opts.region;
    const find = async () =>
      opts.instance
        ? [await api.machines.get(name, opts.instance)]
        : appMachines(await api.machines.list(name)).filter(wanted);

    // Ctrl-C ends the process, and with it every stream.
    const signal = new AbortController().signal;
    const streams = new Map<string, Promise<void>>();
    const join = (machines: Machine[], lines: number) => {
      for (const m of machines) {
        if (!streams.has(m.id)) streams.set(m.id, pump(api, name, m, { tail: lines, follow, signal }, out));
      }
    };
    const initial = await find();
    if (initial.length === 0 && !follow) {
      out.note(`No machines in app ${name}`);
      return;
    }
    join(initial, tail);
    if (!follow) {
      await Promise.all(streams.values());
      return;
    }
    if (!opts.instance) {
      // Machines created while following join with everything they wrote so far.
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, DISCOVER_EVERY_MS));
        join(await find().catch(() => []), tail);
      }
    }
    await Promise.all(streams.values());
  },
});

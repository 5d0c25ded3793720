import { defineVerb } from '../../command.js';
import { collect, intFlag } from '../../flags.js';
import { applyUpdateFlags, type UpdateFlags } from '../../machine-config.js';
import { updateMachine } from '../../machine-update.js';
import { machineImage } from './shared.js';

interface Opts extends UpdateFlags {
  skipStart?: boolean;
  detach?: boolean;
  waitTimeout: string;
}

export default defineVerb<Opts>({
  usage: 'update <id>',
  summary: 'Change a machine’s config (image, env, size, ports, autostop...) and reboot it into it',
  description:
    'Change a machine’s config and boot the new version. Only what a flag names changes; the rest of the ' +
    'config stays as it is. The machine is leased while it is updated, the update names the version it ' +
    'was made from (so a concurrent change fails instead of being lost), and a started machine is waited ' +
    'for until its new version runs. A stopped machine gets the new config and stays stopped.',
  examples: [
    'hangar machine update 148ed193b95e89 -a acme --image 127.0.0.1:4281/acme/web:2',
    'hangar machine update 148ed193b95e89 -a acme -e LOG_LEVEL=debug --vm-memory 512 --autostop suspend',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd
      .option('--image <ref>', 'new image')
      .option('-e, --env <NAME=VALUE>', 'set an environment variable (repeatable)', collect)
      .option('-m, --metadata <KEY=VALUE>', 'set metadata (repeatable)', collect)
      .option(
        '-p, --port <spec>',
        'expose a port, e.g. 80:8080/tcp:http; replaces that internal port’s service (repeatable)',
        collect,
      )
      .option('--vm-size <size>', 'a preset: shared-cpu-1x, shared-cpu-2x, performance-1x, ...')
      .option('--vm-memory <MB>', 'memory in megabytes')
      .option('--vm-cpus <n>', 'number of CPUs')
      .option('--vm-cpu-kind <kind>', 'shared or performance')
      .option('--autostop <mode>', 'stop idle machines: off, stop or suspend (every service)')
      .option('--autostart', 'start the machine when a request arrives (every service)')
      .option('--no-autostart', 'do not start the machine on requests')
      .option('--restart <policy>', 'no, always or on-failure')
      .option('--skip-start', 'update without starting the machine')
      .option('-d, --detach', 'do not wait for the new version to start')
      .option('--wait-timeout <seconds>', 'how long to wait for the new version to start', '120');
  },
  async run({ app, arg, opts, client, out }) {
    const appName = app();
    const id = arg(0);
    const waitMs = (intFlag(opts.waitTimeout, '--wait-timeout') ?? 120) * 1000;
    const result = await updateMachine(
      client(),
      appName,
      id,
      (config) => applyUpdateFlags(config, opts),
      out,
      {
        skipStart: opts.skipStart,
        detach: opts.detach,
        waitMs,
        reason: 'hangar machine update',
      },
    );
    if (out.json) return out.printJson(result.machine);
    if (!result.updated) {
      out.line(`No changes to apply to machine ${id}`);
      return;
    }
    out.line(`Updated machine ${id}:`);
    for (const change of result.changes) out.line(`  ${change}`);
    const m = result.machine;
    out.line(`Version ${m.instance_id}, image ${machineImage(m)}, state ${m.state}`);
  },
});

import { cloneMachine } from '../../clone.js';
import { defineVerb } from '../../command.js';
import { intFlag } from '../../flags.js';

export default defineVerb<{
  name?: string;
  region?: string;
  attachVolume?: string;
  detach?: boolean;
  waitTimeout: string;
}>({
  usage: 'clone <id>',
  summary: 'Create a new machine with the config of an existing one',
  description:
    'Create a new machine with the same config (image, env, services, size, metadata and process group) ' +
    'as an existing one, and wait until it has started. A machine with a volume gets a new, empty volume ' +
    'of the same name and size at the same path, unless --attach-volume names an existing one.',
  examples: [
    'hangar machine clone 148ed193b95e89 -a acme',
    'hangar machine clone 148ed193b95e89 -a acme --name web-2 --attach-volume vol_4x8kq2w0m1n5z7yp',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd
      .option('--name <name>', 'name of the new machine (generated if omitted)')
      .option('-r, --region <code>', 'region of the new machine (default: the source’s)')
      .option('--attach-volume <id>', 'mount this existing volume instead of creating one')
      .option('-d, --detach', 'do not wait for the new machine to start')
      .option('--wait-timeout <seconds>', 'how long to wait for it to start', '120');
  },
  async run({ app, arg, opts, client, out }) {
    const appName = app();
    const api = client();
    const source = await api.machines.get(appName, arg(0));
    const machine = await cloneMachine(api, appName, source, out, {
      name: opts.name,
      region: opts.region,
      volume: opts.attachVolume,
      detach: opts.detach,
      waitMs: (intFlag(opts.waitTimeout, '--wait-timeout') ?? 120) * 1000,
    });
    if (out.json) return out.printJson(machine);
    out.line(`Machine ${machine.id} (${machine.name}) cloned from ${source.id}: ${machine.state}`);
  },
});

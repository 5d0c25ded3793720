import { defineVerb } from '../../command.js';
import { GONE_STATES, VOLUME_COLUMNS } from './shared.js';

export default defineVerb<{ all?: boolean }>({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List an app’s volumes',
  examples: ['hangar volumes list -a acme', 'hangar volumes list -a acme --all --json'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--all', 'include volumes that are being destroyed');
  },
  async run({ app, opts, client, out }) {
    const name = app();
    const volumes = (await client().volumes.list(name)).filter((v) => opts.all || !GONE_STATES.has(v.state));
    out.list(volumes, VOLUME_COLUMNS, `No volumes in app ${name}`);
  },
});

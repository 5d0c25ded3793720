import { defineVerb } from '../../command.js';
import { volumeFields } from './shared.js';

export default defineVerb<{ name?: string; region?: string }>({
  usage: 'fork <id>',
  summary: 'Create a new volume with a copy of a volume’s data',
  description:
    'Create a new volume holding a copy of an existing volume’s data (taken consistently, with the ' +
    'filesystem frozen if it is mounted). The copy is not attached to anything: mount it with ' +
    '`machine run --volume ID:/path` or `machine clone --attach-volume ID`.',
  examples: ['hangar volumes fork vol_4x8kq2w0m1n5z7yp -a acme --name data_copy'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--name <name>', 'name of the new volume (default: the source’s)');
    cmd.option('-r, --region <code>', 'region of the new volume');
  },
  async run({ app, arg, opts, client, out }) {
    const volume = await client().volumes.fork(app(), arg(0), { name: opts.name, region: opts.region });
    out.show(volume, volumeFields(volume));
  },
});

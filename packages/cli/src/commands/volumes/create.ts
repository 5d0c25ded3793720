import { defineVerb } from '../../command.js';
import { intFlag } from '../../flags.js';
import { volumeFields } from './shared.js';

export default defineVerb<{
  size: string;
  region?: string;
  snapshotRetention?: string;
  snapshotId?: string;
  encryption: boolean;
}>({
  usage: 'create <name>',
  summary: 'Create a volume (attach it with `machine run --volume ID:/path`)',
  examples: ['hangar volumes create data -a acme --size 3 --region local'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('-s, --size <GB>', 'size in gigabytes', '1');
    cmd.option('-r, --region <code>', 'region to create it in');
    cmd.option('--snapshot-retention <days>', 'days to keep daily snapshots (1-60)');
    cmd.option('--snapshot-id <id>', 'restore this snapshot into the new volume');
    cmd.option('--no-encryption', 'do not encrypt the volume at rest');
  },
  async run({ app, arg, opts, client, out }) {
    const volume = await client().volumes.create(app(), {
      name: arg(0),
      size_gb: intFlag(opts.size, '--size'),
      region: opts.region,
      snapshot_retention: intFlag(opts.snapshotRetention, '--snapshot-retention'),
      snapshot_id: opts.snapshotId,
      encrypted: opts.encryption,
    });
    out.show(volume, volumeFields(volume));
  },
});

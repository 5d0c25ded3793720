import type { VolumeSnapshot } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { type Column, formatTime } from '../../output.js';

function bytes(n: number | undefined): string {
  if (n === undefined) return '';
  if (n < 1024 * 1024) return `${Math.ceil(n / 1024)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

const SNAPSHOT_COLUMNS: Column<VolumeSnapshot>[] = [
  { header: 'ID', value: (s) => s.id },
  { header: 'Status', value: (s) => s.status },
  { header: 'Size', value: (s) => bytes(s.size) },
  { header: 'Volume size', value: (s) => (s.volume_size === undefined ? '' : `${s.volume_size}GB`) },
  { header: 'Created', value: (s) => formatTime(s.created_at) },
  { header: 'Retention', value: (s) => (s.retention_days === undefined ? '' : `${s.retention_days} days`) },
];

export default defineVerb({
  usage: 'snapshots <action> <volume-id>',
  aliases: ['snapshot'],
  summary: 'List a volume’s snapshots (list) or take one now (create)',
  description:
    'Snapshots are consistent copies of a volume, taken daily and kept for its snapshot retention. ' +
    '`list` shows them; `create` takes one now and answers when it is complete. Restore one into a new ' +
    'volume with `hangar volumes create NAME --snapshot-id ID`, or copy the live volume with `volumes fork`.',
  examples: [
    'hangar volumes snapshots list vol_4x8kq2w0m1n5z7yp -a acme',
    'hangar volumes snapshots create vol_4x8kq2w0m1n5z7yp -a acme',
  ],
  app: true,
  json: true,
  async run({ app, arg, client, out }) {
    const appName = app();
    const action = arg(0);
    const id = arg(1);
    if (action === 'list' || action === 'ls') {
      const snapshots = await client().volumes.listSnapshots(appName, id);
      out.list(snapshots, SNAPSHOT_COLUMNS, `No snapshots of volume ${id}`);
      return;
    }
    if (action !== 'create') {
      throw new CliError(
        `unknown snapshots action "${action}"`,
        'use `snapshots list VOLUME` or `snapshots create VOLUME`',
      );
    }
    out.note(`Taking a snapshot of ${id}...`);
    const snapshot = await client().volumes.createSnapshot(appName, id);
    if (out.json) return out.printJson(snapshot ?? null);
    if (!snapshot) {
      out.line(
        `Snapshot of ${id} started; see it with \`hangar volumes snapshots list ${id} -a ${appName}\``,
      );
      return;
    }
    out.line(
      `Created snapshot ${snapshot.id} of ${id} (${snapshot.status ?? 'created'}, ${bytes(snapshot.size)})`,
    );
  },
});

import type { Machine } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { formatTime } from '../../output.js';
import { machineImage } from './shared.js';

export default defineVerb<{ all?: boolean }>({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List an app’s machines',
  examples: ['hangar machine list -a acme', 'hangar machine list -a acme --json'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--all', 'include destroyed machines');
  },
  async run({ app, opts, client, out }) {
    const name = app();
    const machines = await client().machines.list(name, { includeDeleted: opts.all });
    out.list<Machine>(
      machines,
      [
        { header: 'ID', value: (m) => m.id },
        { header: 'Name', value: (m) => m.name },
        { header: 'State', value: (m) => (m.cordoned ? `${m.state} (cordoned)` : m.state) },
        { header: 'Region', value: (m) => m.region },
        { header: 'Image', value: machineImage },
        { header: 'IP Address', value: (m) => m.private_ip },
        { header: 'Volume', value: (m) => m.config?.mounts?.[0]?.volume },
        { header: 'Created', value: (m) => formatTime(m.created_at) },
        { header: 'Updated', value: (m) => formatTime(m.updated_at) },
      ],
      `No machines in app ${name}`,
    );
  },
});

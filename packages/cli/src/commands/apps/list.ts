import type { AppSummary } from '@hangar/sdk';
import { defineVerb } from '../../command.js';

export default defineVerb<{ org: string }>({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List the apps of an organization',
  examples: ['hangar apps list', 'hangar apps list --org acme --json'],
  json: true,
  options(cmd) {
    cmd.option('-o, --org <slug>', 'organization to list', 'personal');
  },
  async run({ opts, client, out }) {
    const { apps } = await client().apps.list(opts.org);
    out.list<AppSummary>(
      apps,
      [
        { header: 'Name', value: (a) => a.name },
        { header: 'ID', value: (a) => a.id },
        { header: 'Network', value: (a) => a.network },
        { header: 'Machines', value: (a) => a.machine_count },
        { header: 'Volumes', value: (a) => a.volume_count },
      ],
      `No apps in organization ${opts.org}`,
    );
  },
});

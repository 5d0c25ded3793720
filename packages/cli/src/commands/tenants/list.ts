import { defineVerb } from '../../command.js';
import { isTenantApp } from './shared.js';

export default defineVerb<{ org: string }>({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List the customers’ apps',
  examples: ['hangar tenants list', 'hangar tenants list --json'],
  json: true,
  options(cmd) {
    cmd.option('-o, --org <slug>', 'organization', 'personal');
  },
  async run({ opts, out, client }) {
    const { apps } = await client().apps.list(opts.org);
    const tenants = apps.filter(isTenantApp);
    out.list(
      tenants,
      [
        { header: 'Customer', value: (a) => a.name },
        { header: 'Network', value: (a) => a.network },
        { header: 'Machines', value: (a) => a.machine_count },
        { header: 'Volumes', value: (a) => a.volume_count },
      ],
      'No tenants (create one with `hangar tenants create CUSTOMER --template APP`)',
    );
  },
});

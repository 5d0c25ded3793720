import type { Machine } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { processGroup } from '../../groups.js';

export default defineVerb({
  usage: 'private',
  summary: 'List the private (6PN) addresses of the app’s machines',
  description:
    'List the private IPv6 address of each machine of the app: the address other machines on its private ' +
    'network reach it at (also `<machine id>.vm.<app>.internal`).',
  examples: ['hangar ips private -a acme'],
  app: true,
  json: true,
  async run({ app, client, out }) {
    const name = app();
    const machines = await client().machines.list(name);
    out.list<Machine>(
      machines,
      [
        { header: 'ID', value: (m) => m.id },
        { header: 'Region', value: (m) => m.region },
        { header: 'Process group', value: processGroup },
        { header: 'State', value: (m) => m.state },
        { header: 'Private IP', value: (m) => m.private_ip },
      ],
      `No machines in app ${name}`,
    );
  },
});

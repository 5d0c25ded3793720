import { defineVerb } from '../../command.js';
import { IP_COLUMNS } from './shared.js';

export default defineVerb({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List an app’s IP addresses',
  examples: ['hangar ips list -a acme'],
  app: true,
  json: true,
  async run({ app, client, out }) {
    const name = app();
    const { ips } = await client().ipAssignments.list(name);
    out.list(ips, IP_COLUMNS, `No IP addresses allocated to app ${name}`);
  },
});

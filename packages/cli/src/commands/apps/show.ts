import { defineVerb } from '../../command.js';
import { formatTime } from '../../output.js';

export default defineVerb({
  usage: 'show <name>',
  aliases: ['status'],
  summary: 'Show an app’s details',
  examples: ['hangar apps show acme', 'hangar apps show acme --json'],
  json: true,
  async run({ arg, client, out }) {
    const app = await client().apps.get(arg(0));
    out.show(app, [
      ['Name', app.name],
      ['ID', app.id],
      ['Status', app.status],
      ['Organization', app.organization?.slug],
      ['Network', app.network],
      ['Machines', app.machine_count],
      ['Volumes', app.volume_count],
      ['Created', formatTime(app.created_at)],
    ]);
  },
});

import type { AppSecret } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { formatTime } from '../../output.js';

export default defineVerb({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List an app’s secrets (names and digests, never values)',
  examples: ['hangar secrets list -a acme'],
  app: true,
  json: true,
  async run({ app, client, out }) {
    const name = app();
    const { secrets } = await client().secrets.list(name);
    out.list<AppSecret>(
      secrets,
      [
        { header: 'Name', value: (s) => s.name },
        { header: 'Digest', value: (s) => s.digest },
        { header: 'Updated', value: (s) => formatTime(s.updated_at ?? s.created_at) },
      ],
      `No secrets in app ${name}`,
    );
  },
});

import type { TokenInfo } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { formatTime } from '../../output.js';

export default defineVerb<{ org: string }>({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List the tokens of an organization',
  examples: ['hangar tokens list', 'hangar tokens list --org acme --json'],
  json: true,
  options(cmd) {
    cmd.option('-o, --org <slug>', 'organization', 'personal');
  },
  async run({ opts, client, out }) {
    const { tokens } = await client().tokens.list(opts.org);
    out.list<TokenInfo>(
      tokens,
      [
        { header: 'ID', value: (t) => t.id },
        { header: 'Name', value: (t) => t.name },
        { header: 'Type', value: (t) => t.type },
        { header: 'App', value: (t) => t.app_name },
        { header: 'Created', value: (t) => formatTime(t.created_at) },
        { header: 'Expires', value: (t) => formatTime(t.expires_at) || 'never' },
      ],
      `No tokens in organization ${opts.org}`,
    );
  },
});

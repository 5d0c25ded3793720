import { defineVerb } from '../../command.js';

export default defineVerb({
  usage: 'whoami',
  summary: 'Show which hangard the CLI talks to and what its token can reach',
  examples: ['hangar auth whoami', 'hangar auth whoami --json'],
  json: true,
  async run({ client, config, out }) {
    const { apiUrl, tokenSource } = config();
    const { tokens } = await client().tokens.current();
    const token = tokens[0];
    if (out.json) return out.printJson({ api_url: apiUrl, token_source: tokenSource, ...token });
    out.show(token, [
      ['API URL', apiUrl],
      ['Token from', tokenSource],
      ['Token ID', token?.token_id],
      ['Type', token?.type],
      [
        'Organization',
        token ? `${token.org_slug}${token.organization ? ` (${token.organization})` : ''}` : '',
      ],
      ['Apps', token?.apps.length ? token.apps.join(', ') : '(none yet)'],
    ]);
  },
});

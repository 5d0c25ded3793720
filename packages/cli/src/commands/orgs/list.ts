import { defineVerb } from '../../command.js';

export default defineVerb({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List the organizations the token in use can reach',
  description:
    'List the organizations the token in use can reach. A Hangar token belongs to one organization, so ' +
    'this is that organization; log in with another token (`hangar auth login`) to reach another one.',
  examples: ['hangar orgs list', 'hangar orgs list --json'],
  json: true,
  async run({ client, out }) {
    const { tokens } = await client().tokens.current();
    const seen = new Map<string, { slug: string; name: string | undefined; token_type: string }>();
    for (const t of tokens) {
      if (!seen.has(t.org_slug))
        seen.set(t.org_slug, { slug: t.org_slug, name: t.organization, token_type: t.type });
    }
    out.list(
      [...seen.values()],
      [
        { header: 'Name', value: (o) => o.name },
        { header: 'Slug', value: (o) => o.slug },
        { header: 'Token type', value: (o) => o.token_type },
      ],
      'The token in use reaches no organization',
    );
  },
});

import { defineVerb } from '../../command.js';

export default defineVerb({
  usage: 'revoke <id...>',
  summary: 'Revoke tokens (they stop working at once)',
  examples: ['hangar tokens revoke tok_01j9z8'],
  async run({ args, client, out }) {
    for (const id of args(0)) {
      await client().tokens.revoke(id);
      out.line(`Revoked token ${id}`);
    }
  },
});

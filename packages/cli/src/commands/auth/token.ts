import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';

export default defineVerb({
  usage: 'token',
  summary: 'Print the token the CLI uses (only the token, for scripts)',
  examples: [
    'hangar auth token',
    'curl -H "Authorization: Bearer $(hangar auth token)" http://127.0.0.1:4280/v1/apps?org_slug=personal',
  ],
  async run({ config, out }) {
    const { token } = config();
    if (!token) throw new CliError('no token configured', 'run `hangar auth login`, or set HANGAR_API_TOKEN');
    out.line(token);
  },
});

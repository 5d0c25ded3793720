import { defineVerb } from '../../command.js';
import { certificateFields } from './shared.js';

export default defineVerb({
  usage: 'show <hostname>',
  summary: 'Show a custom hostname’s certificate',
  examples: ['hangar certs show www.example.com -a acme'],
  app: true,
  json: true,
  async run({ app, arg, client, out }) {
    const cert = await client().certificates.get(app(), arg(0));
    out.show(cert, certificateFields(cert));
  },
});

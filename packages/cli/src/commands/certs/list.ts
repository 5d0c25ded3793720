import type { AppCertificate } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { formatTime } from '../../output.js';

export default defineVerb({
  usage: 'list',
  aliases: ['ls'],
  summary: 'List an app’s custom hostnames and their certificates',
  examples: ['hangar certs list -a acme'],
  app: true,
  json: true,
  async run({ app, client, out }) {
    const name = app();
    const { certificates } = await client().certificates.list(name);
    out.list<AppCertificate>(
      certificates,
      [
        { header: 'Hostname', value: (c) => c.hostname },
        { header: 'Status', value: (c) => c.status },
        { header: 'Source', value: (c) => c.certificates?.[0]?.source ?? c.source },
        { header: 'Expires', value: (c) => formatTime(c.certificates?.[0]?.expires_at) },
      ],
      `No custom hostnames in app ${name}`,
    );
  },
});

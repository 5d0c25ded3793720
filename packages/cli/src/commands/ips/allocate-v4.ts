import { defineVerb } from '../../command.js';
import { IP_COLUMNS } from './shared.js';

export default defineVerb<{ shared?: boolean; region?: string }>({
  usage: 'allocate-v4',
  summary: 'Allocate a public IPv4 address (--shared for a shared one)',
  examples: ['hangar ips allocate-v4 -a acme --shared'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--shared', 'share the address with other apps (HTTP and TLS only)');
    cmd.option('-r, --region <code>', 'region of the address');
  },
  async run({ app, opts, client, out }) {
    const ip = await client().ipAssignments.allocate(app(), {
      type: opts.shared ? 'shared_v4' : 'v4',
      region: opts.region,
    });
    out.list([ip], IP_COLUMNS, '');
  },
});

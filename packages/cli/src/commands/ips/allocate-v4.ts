import { isMachinesApiError } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { IP_COLUMNS } from './shared.js';

export default defineVerb<{ shared?: boolean; region?: string }>({
  usage: 'allocate-v4',
  summary: 'Allocate a public IPv4 address (--shared for a shared one)',
  description:
    'Allocate a public IPv4 address to the app. With --shared it is the host’s shared IPv4 (HTTP and TLS ' +
    'are routed by host name), one per app. Without it a dedicated address is asked for, which hangard ' +
    'does not offer yet: it answers with an error that says to use --shared.',
  examples: ['hangar ips allocate-v4 -a acme --shared'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--shared', 'share the address with other apps (HTTP and TLS only)');
    cmd.option('-r, --region <code>', 'region of the address');
  },
  async run({ app, opts, client, out }) {
    const ip = await client()
      .ipAssignments.allocate(app(), { type: opts.shared ? 'shared_v4' : 'v4', region: opts.region })
      .catch((err: unknown) => {
        if (!opts.shared && isMachinesApiError(err, 'invalid_argument')) {
          throw new CliError(
            err.detail ?? err.message,
            'add --shared: this hangard offers the host’s shared IPv4',
          );
        }
        throw err;
      });
    out.list([ip], IP_COLUMNS, '');
  },
});

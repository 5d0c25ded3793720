import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { IP_COLUMNS } from './shared.js';

export default defineVerb<{ private?: boolean; network?: string; org?: string; region?: string }>({
  usage: 'allocate-v6',
  summary: 'Allocate an IPv6 address: public, or private (Flycast) with --private',
  description:
    'Allocate an IPv6 address to the app. With --private it is a Flycast address: reachable only from a ' +
    'private network (the app’s own, or the one named by --network), through the proxy, so autostart works.',
  examples: [
    'hangar ips allocate-v6 -a acme --private',
    'hangar ips allocate-v6 -a api --private --network acme-net',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--private', 'allocate a private Flycast address');
    cmd.option('--network <name>', 'network the callers live in (Flycast only)');
    cmd.option('-o, --org <slug>', 'organization whose network the callers live in (Flycast only)');
    cmd.option('-r, --region <code>', 'region of the address');
  },
  async run({ app, opts, client, out }) {
    if ((opts.network || opts.org) && !opts.private) {
      throw new CliError('--network and --org only apply to private (Flycast) addresses', 'add --private');
    }
    const ip = await client().ipAssignments.allocate(app(), {
      type: opts.private ? 'private_v6' : 'v6',
      network: opts.network,
      org_slug: opts.org,
      region: opts.region,
    });
    out.list([ip], IP_COLUMNS, '');
  },
});

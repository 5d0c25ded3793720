import type { EgressDestination } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { collect } from '../../flags.js';

/**
 * `198.51.100.0/24`, `198.51.100.7:443,8000-8010`, `[2001:db8::/32]:443` or `2001:db8::/32`: a
 * destination and, after a colon, its ports (brackets around an IPv6 CIDR that has ports).
 */
export function parseDestination(text: string): EgressDestination {
  const bracketed = /^\[([^\]]+)\](?::(.+))?$/.exec(text);
  const [cidr, ports] = bracketed
    ? [bracketed[1]!, bracketed[2]]
    : text.includes(':') && !text.includes('.')
      ? [text, undefined] // an IPv6 CIDR without ports
      : (text.split(':', 2) as [string, string | undefined]);
  if (!cidr || ports === '') {
    throw new CliError(
      `invalid destination "${text}"`,
      'write it as CIDR[:PORTS], e.g. 198.51.100.0/24:443,8000-8010',
    );
  }
  return { cidr, ...(ports ? { ports: ports.split(',') } : {}) };
}

export default defineVerb<{ on?: boolean; off?: boolean; allow?: string[] }>({
  usage: 'egress <name>',
  summary: 'Show or set what an app’s machines may reach outside their network',
  description:
    'Show the app’s egress policy, or set it (an org token only): --on (the default: anywhere outside ' +
    'the host and its local networks), --off (nowhere), or --allow with the only destinations, each a CIDR ' +
    'with optional TCP/UDP ports. Running machines follow at once.',
  examples: [
    'hangar apps egress acme',
    'hangar apps egress acme --off',
    'hangar apps egress acme --allow 198.51.100.0/24:443 --allow [2001:db8::/32]:443,8000-8010',
  ],
  json: true,
  options(cmd) {
    cmd.option('--on', 'allow every destination outside the host (the default)');
    cmd.option('--off', 'allow none');
    cmd.option('--allow <cidr[:ports]>', 'allow only this destination (repeatable)', collect);
  },
  async run({ arg, opts, client, out }) {
    const chosen = [opts.on, opts.off, opts.allow !== undefined].filter(Boolean).length;
    if (chosen > 1) throw new CliError('use one of --on, --off and --allow');
    const apps = client().apps;
    const policy =
      chosen === 0
        ? await apps.getEgress(arg(0))
        : await apps.setEgress(arg(0), {
            mode: opts.on ? 'on' : opts.off ? 'off' : 'allow',
            ...(opts.allow ? { allow: opts.allow.map(parseDestination) } : {}),
          });
    out.show(policy, [
      ['Mode', policy.mode],
      [
        'Allow',
        (policy.allow ?? [])
          .map((d) => (d.ports ? `${d.cidr} ports ${d.ports.join(',')}` : `${d.cidr} all ports`))
          .join('; '),
      ],
    ]);
  },
});

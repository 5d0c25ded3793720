import type { TokenType } from '@hangar/sdk';
import { Argument } from 'commander';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';

export default defineVerb<{ app?: string; org?: string; name?: string; expiry?: string }>({
  usage: 'create',
  summary: 'Create an API token: org, deploy (one app) or readonly',
  description: 'Create an API token and print it. The token is shown only once: store it now.',
  examples: [
    'hangar tokens create deploy -a acme --name ci --expiry 720h',
    'hangar tokens create org --org personal',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd.addArgument(
      new Argument(
        '<type>',
        'org (one organization), deploy (one app, needs -a) or readonly (read-only, one organization)',
      ).choices(['org', 'deploy', 'readonly']),
    );
    cmd.option('-o, --org <slug>', 'organization (default: the app’s, else personal)');
    cmd.option('-n, --name <name>', 'a name to recognise the token by');
    cmd.option('-x, --expiry <duration>', 'lifetime, e.g. 720h (default: the server’s)');
  },
  async run({ arg, opts, io, client, out }) {
    const type = arg(0) as TokenType;
    const api = client();
    let appName: string | undefined;
    if (type === 'deploy') {
      appName = opts.app?.trim() || io.env.FLY_APP?.trim();
      if (!appName) throw new CliError('a deploy token needs an app', 'pass -a APP (or set FLY_APP)');
    }
    // A deploy token belongs to its app's organization; ask the server for it instead of guessing.
    const org =
      opts.org ?? (appName ? (await api.apps.get(appName)).organization?.slug : undefined) ?? 'personal';
    const created = await api.tokens.create({
      type,
      org_slug: org,
      app_name: appName,
      name: opts.name,
      expiry: opts.expiry,
    });
    if (out.json) return out.printJson(created);
    // Only the token on stdout, so `TOKEN=$(hangar tokens create ...)` works.
    out.line(created.token);
  },
});

import { defineVerb } from '../../command.js';

export default defineVerb<{ org: string; network?: string }>({
  usage: 'create <name>',
  summary: 'Create a new app',
  description:
    'Create a new app. App names are unique across all organizations. With --network the app joins that ' +
    'private network (created on first use) instead of the organization’s default one; this cannot change later.',
  examples: ['hangar apps create acme --org personal --network acme-net'],
  json: true,
  options(cmd) {
    cmd.option('-o, --org <slug>', 'organization that owns the app', 'personal');
    cmd.option('--network <name>', 'custom private network for the app');
  },
  async run({ arg, opts, client, out }) {
    const app = await client().apps.create({ app_name: arg(0), org_slug: opts.org, network: opts.network });
    if (out.json) return out.printJson(app);
    out.line(`New app created: ${app.name}`);
    if (app.network) out.line(`Network: ${app.network}`);
  },
});

import { defineVerb } from '../../command.js';
import { parseKeyValues } from '../../flags.js';
import { redeployForSecrets } from '../../redeploy.js';

export default defineVerb<{ stage?: boolean }>({
  usage: 'set <NAME=VALUE...>',
  summary: 'Set secrets and update the app’s machines to use them',
  description:
    'Set one or more secrets in one new secrets version, then update every machine of the app so it ' +
    'runs with them. With --stage the machines are left alone and pick the values up on their next update.',
  examples: ['hangar secrets set DATABASE_URL=postgres://db.internal/app API_KEY=s3cr3t -a acme'],
  app: true,
  options(cmd) {
    cmd.option('--stage', 'only store the secrets; do not update machines');
  },
  async run({ app, args, opts, client, out }) {
    const appName = app();
    const values = parseKeyValues(args(0), 'secret');
    const { version } = await client().secrets.set(appName, values);
    if (opts.stage) {
      out.line(`Secrets staged (version ${version}); machines get them on their next update`);
      return;
    }
    await redeployForSecrets(client(), appName, version, out);
  },
});

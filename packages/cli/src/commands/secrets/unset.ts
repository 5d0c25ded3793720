import { defineVerb } from '../../command.js';
import { redeployForSecrets } from '../../redeploy.js';

export default defineVerb<{ stage?: boolean }>({
  usage: 'unset <NAME...>',
  aliases: ['remove', 'rm'],
  summary: 'Remove secrets and update the app’s machines',
  examples: ['hangar secrets unset API_KEY -a acme'],
  app: true,
  options(cmd) {
    cmd.option('--stage', 'only remove the secrets; do not update machines');
  },
  async run({ app, args, opts, client, out }) {
    const appName = app();
    // One POST with nulls: all names go in a single new secrets version.
    const values = Object.fromEntries(args(0).map((name) => [name, null]));
    const { version } = await client().secrets.set(appName, values);
    if (opts.stage) {
      out.line(`Secrets removed (version ${version}); machines drop them on their next update`);
      return;
    }
    await redeployForSecrets(client(), appName, version, out);
  },
});

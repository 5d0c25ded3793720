import { defineVerb } from '../../command.js';
import { redeployForSecrets } from '../../redeploy.js';

export default defineVerb({
  usage: 'deploy',
  summary: 'Update the app’s machines so they run with the secrets as they are now (after --stage)',
  description:
    'Update every machine of the app with its current config, one at a time, so that each boots a new ' +
    'version with the app’s secrets as they are now. Use it after `secrets set --stage` or ' +
    '`secrets import --stage`. Stopped machines get the new version and stay stopped.',
  examples: ['hangar secrets deploy -a acme'],
  app: true,
  async run({ app, client, out }) {
    await redeployForSecrets(client(), app(), undefined, out);
  },
});

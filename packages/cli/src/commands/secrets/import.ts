import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { redeployForSecrets } from '../../redeploy.js';
import { parseSecretLines } from '../../secrets-file.js';

export default defineVerb<{ stage?: boolean }>({
  usage: 'import',
  summary: 'Set secrets from NAME=VALUE lines on stdin, then update the app’s machines',
  description:
    'Read NAME=VALUE lines from stdin (blank lines and # comments skipped, one pair of quotes around a ' +
    'value removed, NAME=""" ... """ for values over several lines) and set them all in one new secrets ' +
    'version. Values are never printed. Then every machine is updated, unless --stage.',
  examples: ['hangar secrets import -a acme < .env', 'cat prod.env | hangar secrets import -a acme --stage'],
  app: true,
  options(cmd) {
    cmd.option('--stage', 'only store the secrets; do not update machines');
  },
  async run({ app, io, opts, client, out }) {
    const appName = app();
    if (io.stdinIsTTY) {
      throw new CliError(
        'secrets import reads stdin, and nothing is piped in',
        'run `hangar secrets import -a APP < file.env`',
      );
    }
    const values = parseSecretLines(await io.readStdin());
    const names = Object.keys(values);
    if (names.length === 0) throw new CliError('no NAME=VALUE lines on stdin', 'nothing was changed');
    const { version } = await client().secrets.set(appName, values);
    out.line(`Set ${names.join(', ')} (secrets version ${version})`);
    if (opts.stage) {
      out.line('Staged: machines get them on their next update (`hangar secrets deploy`)');
      return;
    }
    await redeployForSecrets(client(), appName, version, out);
  },
});

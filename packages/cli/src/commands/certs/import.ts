import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { certificateFields } from './shared.js';

export default defineVerb<{ fullchain?: string; privateKey?: string }>({
  usage: 'import <hostname>',
  summary: 'Import a TLS certificate for a custom hostname (PEM chain and key)',
  description:
    'Import a TLS certificate for a custom hostname of the app: the chain (leaf first) and its private key in PEM. The proxy then serves the hostname for the app over HTTPS and HTTP. Importing again replaces the certificate. The key is stored sealed and never shown again.',
  examples: [
    'hangar certs import www.example.com --fullchain fullchain.pem --private-key privkey.pem -a acme',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--fullchain <file>', 'certificate chain file (PEM, leaf first)');
    cmd.option('--private-key <file>', 'private key file (PEM, unencrypted)');
  },
  async run({ app, arg, opts, io, client, out }) {
    const read = (path: string | undefined, flag: string) => {
      if (!path) throw new CliError(`${flag} is required`, `pass ${flag} <file> (PEM)`);
      const text = io.readFile(path);
      if (text === undefined) throw new CliError(`cannot read ${path}`, `check the path given to ${flag}`);
      return text;
    };
    const fullchain = read(opts.fullchain, '--fullchain');
    const privateKey = read(opts.privateKey, '--private-key');
    const cert = await client().certificates.importCustom(app(), {
      hostname: arg(0),
      fullchain,
      private_key: privateKey,
    });
    out.show(cert, certificateFields(cert));
  },
});

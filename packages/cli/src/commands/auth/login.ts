import {
  type CurrentTokensResponse,
  DEFAULT_BASE_URL,
  isMachinesApiError,
  resolveBaseUrl,
} from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { newClient } from '../../context.js';
import { CliError } from '../../errors.js';
import { saveLogin } from '../../login-store.js';

/** Plain HTTP is fine on the host itself; anywhere else the token crosses the network readable. */
function isLoopback(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** The URL in use now; a broken stored login must not keep `auth login` from replacing it. */
function currentUrl(config: () => { apiUrl: string }): string {
  try {
    return config().apiUrl;
  } catch {
    return DEFAULT_BASE_URL;
  }
}

export default defineVerb<{ url?: string; token?: string }>({
  usage: 'login',
  summary: 'Point the CLI at a hangard: store its URL and a token, after checking them',
  description:
    'Store the API URL and a token in the user’s config directory ($HANGAR_CONFIG_DIR, else ' +
    '$XDG_CONFIG_HOME/hangar, else ~/.config/hangar; file mode 0600), after checking that the token works ' +
    'there. The token comes from --token, else from stdin when something is piped in, else it is asked for ' +
    'without echo. The stored token is only ever sent to the URL it was stored with.',
  examples: [
    'hangar auth login --url http://hangar.example.net:4280 --token "$TOKEN"',
    'ssh root@host cat /var/lib/hangar/personal.token | hangar auth login --url http://host:4280',
  ],
  options(cmd) {
    cmd.option('--url <url>', 'hangard’s API URL (default: the one in use now)');
    cmd.option('--token <token>', 'the token (default: read from stdin, or asked for)');
  },
  async run({ opts, io, out, config }) {
    const url = resolveBaseUrl(opts.url?.trim() || currentUrl(config));
    let token = opts.token?.trim();
    if (!token && !io.stdinIsTTY) token = (await io.readStdin()).trim();
    if (!token && io.interactive) token = (await io.promptSecret(`Token for ${url}: `)).trim();
    if (!token) {
      throw new CliError('no token given', 'pass --token, or pipe the token into `hangar auth login`');
    }
    if (/\s/.test(token)) throw new CliError('the token has spaces or several lines', 'pass one token');

    let current: CurrentTokensResponse;
    try {
      current = await newClient(url, token, io).tokens.current();
    } catch (err) {
      if (isMachinesApiError(err, 'network_error')) {
        const noScheme = opts.url !== undefined && !/^[a-z][a-z0-9+.-]*:\/\//i.test(opts.url.trim());
        throw new CliError(
          `cannot reach hangard at ${url}`,
          noScheme
            ? 'a URL without a scheme means https://; hangard speaks plain HTTP: write http://HOST:4280'
            : 'check the URL, and that hangard listens on an address this machine can reach (listen.host)',
        );
      }
      if (isMachinesApiError(err) && err.status === 401) {
        throw new CliError(
          `hangard at ${url} refused this token (nothing was stored)`,
          'check the token; on the host, `hangar tokens create org` makes a new one',
        );
      }
      throw err;
    }
    const path = saveLogin(io, { api_url: url, token });
    const who = current.tokens[0];
    if (!isLoopback(url) && url.startsWith('http:')) {
      out.note(`Warning: ${url} is plain HTTP; the token crosses the network unencrypted`);
    }
    if (out.json) return out.printJson({ api_url: url, config_file: path, ...who });
    out.line(`Logged in to ${url} with a ${who?.type ?? ''} token of organization ${who?.org_slug ?? '?'}`);
    out.line(`Stored in ${path}`);
  },
  json: true,
});

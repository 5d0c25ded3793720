// The login `hangar auth login` stores: which hangard to talk to and the token for it, in the user's
// config directory, readable by the user only. The token is only ever sent to the URL it was stored with.

import { join } from 'node:path';
import { resolveBaseUrl } from '@hangar/sdk';
import { CliError } from './errors.js';
import type { CliIO } from './io.js';

export interface StoredLogin {
  api_url: string;
  token: string;
}

/** `$HANGAR_CONFIG_DIR`, else `$XDG_CONFIG_HOME/hangar`, else `~/.config/hangar`; none without a home. */
export function configDir(env: CliIO['env']): string | undefined {
  const explicit = env.HANGAR_CONFIG_DIR?.trim();
  if (explicit) return explicit;
  const xdg = env.XDG_CONFIG_HOME?.trim();
  if (xdg) return join(xdg, 'hangar');
  const home = env.HOME?.trim();
  return home ? join(home, '.config', 'hangar') : undefined;
}

export function loginPath(env: CliIO['env']): string | undefined {
  const dir = configDir(env);
  return dir ? join(dir, 'config.json') : undefined;
}

/** The same API root however it was written (`host:4280/`, `http://host:4280`). */
export function sameApi(a: string, b: string): boolean {
  return resolveBaseUrl(a) === resolveBaseUrl(b);
}

export function readLogin(io: CliIO): StoredLogin | undefined {
  const path = loginPath(io.env);
  const text = path ? io.readFile(path) : undefined;
  if (!path || text === undefined) return undefined;
  try {
    const parsed = JSON.parse(text) as Partial<StoredLogin>;
    if (typeof parsed.api_url === 'string' && typeof parsed.token === 'string') {
      return { api_url: parsed.api_url, token: parsed.token };
    }
  } catch {
    // Reported below, with what to do.
  }
  throw new CliError(
    `the stored login in ${path} is unreadable`,
    'run `hangar auth login` again, or `hangar auth logout` to remove it',
  );
}

export function saveLogin(io: CliIO, login: StoredLogin): string {
  const path = loginPath(io.env);
  if (!path) throw new CliError('no config directory to store the login in', 'set HOME or HANGAR_CONFIG_DIR');
  io.writePrivateFile(path, `${JSON.stringify(login, null, 2)}\n`);
  return path;
}

// Where the CLI's settings come from. Each source overrides the ones after it:
//   API URL: --api-url, HANGAR_API_URL, FLY_API_HOSTNAME, the stored login (`auth login`), then Hangar's
//            local default.
//   Token:   --access-token, HANGAR_API_TOKEN, FLY_API_TOKEN, FLY_ACCESS_TOKEN, the file named by
//            HANGAR_TOKEN_FILE, the stored login's token (only when talking to the URL it was stored
//            for), then Hangar's personal token file (if it exists and is readable).
// The FLY_* names are honoured so that one environment serves both flyctl and hangar.

import { DEFAULT_BASE_URL, MachinesClient } from '@hangar/sdk';
import { CliError } from './errors.js';
import type { CliIO } from './io.js';
import { readLogin, sameApi } from './login-store.js';
import { Output } from './output.js';
import { CLI_VERSION } from './version.js';

/** Where a Hangar host keeps the personal (admin) token; read only when nothing else names a token. */
export const DEFAULT_TOKEN_FILE = '/var/lib/hangar/personal.token';

export interface GlobalOptions {
  apiUrl?: string;
  accessToken?: string;
}

export interface ResolvedConfig {
  apiUrl: string;
  token: string | undefined;
  /** Where the token came from (for messages; never the token itself). */
  tokenSource: string;
}

function nonEmpty(value: string | undefined): string | undefined {
  const v = value?.trim();
  return v === undefined || v === '' ? undefined : v;
}

export function resolveConfig(globals: GlobalOptions, io: CliIO): ResolvedConfig {
  const { env } = io;
  const stored = readLogin(io);
  const apiUrl =
    nonEmpty(globals.apiUrl) ??
    nonEmpty(env.HANGAR_API_URL) ??
    nonEmpty(env.FLY_API_HOSTNAME) ??
    nonEmpty(stored?.api_url) ??
    DEFAULT_BASE_URL;

  const sources: Array<[string, string | undefined]> = [
    ['--access-token', globals.accessToken],
    ['HANGAR_API_TOKEN', env.HANGAR_API_TOKEN],
    ['FLY_API_TOKEN', env.FLY_API_TOKEN],
    ['FLY_ACCESS_TOKEN', env.FLY_ACCESS_TOKEN],
  ];
  for (const [source, value] of sources) {
    const token = nonEmpty(value);
    if (token) return { apiUrl, token, tokenSource: source };
  }

  const tokenFile = nonEmpty(env.HANGAR_TOKEN_FILE);
  if (tokenFile) {
    // Named explicitly, so a missing or empty file is an error rather than a silent fallback.
    const token = nonEmpty(io.readFile(tokenFile));
    if (!token) {
      throw new CliError(`cannot read a token from ${tokenFile}`, 'fix HANGAR_TOKEN_FILE or unset it');
    }
    return { apiUrl, token, tokenSource: tokenFile };
  }
  // A stored token belongs to one hangard: never send it to another one named by a flag or variable.
  if (stored && nonEmpty(stored.token) && sameApi(stored.api_url, apiUrl)) {
    return { apiUrl, token: stored.token.trim(), tokenSource: 'stored login (hangar auth login)' };
  }
  const token = nonEmpty(io.readFile(DEFAULT_TOKEN_FILE));
  return { apiUrl, token, tokenSource: token ? DEFAULT_TOKEN_FILE : 'none' };
}

/** A client for the CLI: its user agent, and retries short enough for a person waiting. */
export function newClient(apiUrl: string, token: string | undefined, io: CliIO): MachinesClient {
  return new MachinesClient({
    baseUrl: apiUrl,
    token,
    fetch: io.fetch,
    userAgent: `hangar-cli/${CLI_VERSION}`,
    // A person is waiting: give up on an unreachable daemon within about half a second.
    retries: { maxAttempts: 3, minDelayMs: 100 },
  });
}

/** What every command's `run` receives. */
export interface Ctx<O> {
  opts: O;
  io: CliIO;
  out: Output;
  /** Positional argument `i` (a single value). */
  arg(i: number): string;
  /** Positional argument `i` (variadic: all remaining values). */
  args(i: number): string[];
  /** The API client, created on first use (so `--help` never needs a token). */
  client(): MachinesClient;
  /** Where the API URL and token come from (resolved on first use). */
  config(): ResolvedConfig;
  /** `-a/--app`, else FLY_APP; fails with a hint when neither is set. */
  app(): string;
}

export function createCtx<O>(
  opts: O & GlobalOptions & { app?: string; json?: boolean },
  positional: unknown[],
  io: CliIO,
): Ctx<O> {
  let client: MachinesClient | undefined;
  let config: ResolvedConfig | undefined;
  // Plain closures, not methods: verbs destructure the context (`{ client }`) and call them unbound.
  const resolved = (): ResolvedConfig => {
    config ??= resolveConfig(opts, io);
    return config;
  };
  const json = Boolean(opts.json) || ['1', 'true'].includes(io.env.FLY_JSON ?? '');
  return {
    opts,
    io,
    out: new Output(io, json),
    arg(i) {
      const value = positional[i];
      if (typeof value !== 'string') throw new CliError(`missing argument ${i + 1}`);
      return value;
    },
    args(i) {
      const value = positional[i];
      return Array.isArray(value) ? value.map(String) : typeof value === 'string' ? [value] : [];
    },
    client() {
      if (!client) {
        const { apiUrl, token } = resolved();
        client = newClient(apiUrl, token, io);
      }
      return client;
    },
    config: resolved,
    app() {
      const app = nonEmpty(opts.app) ?? nonEmpty(io.env.FLY_APP);
      if (!app) throw new CliError('no app given', 'pass -a APP (or set FLY_APP)');
      return app;
    },
  };
}

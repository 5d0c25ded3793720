// Turns any failure into what a person needs: one `Error:` line and, when there is something to do about
// it, one `Hint:` line. Never a stack trace (set HANGAR_DEBUG=1 to get one).

import { isMachinesApiError, type MachinesApiError } from '@hangar/sdk';
import type { CliIO } from './io.js';

/** A failure the CLI itself detects (bad flags, missing app, refused confirmation). */
export class CliError extends Error {
  readonly hint: string | undefined;

  constructor(message: string, hint?: string) {
    super(message);
    this.name = 'CliError';
    this.hint = hint;
  }
}

/** Fly's servers often omit the `status` code; fall back to the HTTP status to pick a hint. */
const CODE_BY_HTTP_STATUS: Record<number, string> = {
  400: 'invalid_argument',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  408: 'deadline_exceeded',
  409: 'lease_conflict',
  412: 'failed_precondition',
  429: 'rate_limited',
};

/** What each nested collection is called in server messages. */
const RESOURCE_WORDS: Record<string, RegExp> = {
  machines: /\bmachine\b/i,
  volumes: /\bvolume\b/i,
  secrets: /\bsecret\b/i,
  ip_assignments: /\b(ip|address)\b/i,
  certificates: /\bhostname\b/i,
};

/**
 * Which list command shows what a 404 was about. A missing app fails every nested path too, so the
 * server's text decides: "machine 123 not found in app acme" is about the machine, "app not found" is
 * about the app.
 */
function listCommandFor(path: string, detail: string): string {
  const m = /^\/v1\/apps\/([^/]+)(?:\/([a-z_]+))?/.exec(path);
  const app = m?.[1] ? decodeURIComponent(m[1]) : 'APP';
  const collection = m?.[2] ?? '';
  const aboutNested = RESOURCE_WORDS[collection]?.test(detail) ?? false;
  if (m && !aboutNested && (collection === '' || /\bapp\b/i.test(detail))) return 'hangar apps list';
  switch (collection) {
    case 'machines':
      return `hangar machine list -a ${app}`;
    case 'volumes':
      return `hangar volumes list -a ${app}`;
    case 'secrets':
      return `hangar secrets list -a ${app}`;
    case 'ip_assignments':
      return `hangar ips list -a ${app}`;
    case 'certificates':
      return `hangar certs list -a ${app}`;
    default:
      return path.startsWith('/v1/tokens') ? 'hangar tokens list' : 'hangar apps list';
  }
}

function apiHint(err: MachinesApiError): string | undefined {
  const code = err.code !== 'unknown' ? err.code : (CODE_BY_HTTP_STATUS[err.status] ?? 'unknown');
  switch (code) {
    case 'network_error':
      return 'is hangard running? start it with ./scripts/start.sh, or point --api-url (HANGAR_API_URL) at it';
    case 'unauthorized':
      return 'check HANGAR_API_TOKEN or the token file (HANGAR_TOKEN_FILE, default /var/lib/hangar/personal.token), or run `hangar auth login`';
    case 'forbidden':
      return 'this token cannot reach that resource; use an org token or a deploy token for this app';
    case 'not_found':
      return `run \`${listCommandFor(err.path, err.detail ?? '')}\``;
    case 'name_taken':
      return /\/certificates\b/.test(err.path)
        ? 'another app holds this hostname; it must be removed there first'
        : 'pick another name: app names are unique across all organizations';
    case 'rate_limited': {
      const seconds =
        err.retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(err.retryAfterMs / 1000));
      return seconds === undefined ? 'wait a few seconds and try again' : `wait ${seconds} s and try again`;
    }
    case 'lease_conflict':
      return 'another client holds a lease on this machine; wait for it to expire and try again';
    case 'precondition_failed':
    case 'failed_precondition':
      if (/current_version/.test(err.detail ?? '')) {
        return 'the machine changed since it was read (another update won); run the command again';
      }
      if (/min_secrets_version|secrets version/.test(err.detail ?? '')) {
        return 'the app’s secrets are older than asked for; check them with `hangar secrets list -a APP`';
      }
      return 'the machine is not in a state that allows this; check it with `hangar machine status ID -a APP`';
    case 'timeout':
    case 'deadline_exceeded':
      return 'it may still get there; check with `hangar machine status ID -a APP`';
    case 'insufficient_capacity':
      return 'the host has no room for this machine; destroy unused machines or ask for less --memory/--cpus';
    case 'unavailable':
      return 'hangard is busy or still starting; try again in a moment';
    case 'runtime_unavailable':
      return 'this host cannot run machines yet (no container runtime); see hangard’s start-up log';
    case 'invalid_argument':
      return 'check the arguments against the command’s --help';
    default:
      return err.status >= 500 ? 'the server failed; check hangard’s logs for the request id' : undefined;
  }
}

/** Prints an error for a person and returns the process exit code. */
export function reportError(io: CliIO, err: unknown): number {
  let message: string;
  let hint: string | undefined;
  if (isMachinesApiError(err)) {
    message = err.requestId ? `${err.message} (request id ${err.requestId})` : err.message;
    hint = apiHint(err);
  } else if (err instanceof CliError) {
    message = err.message;
    hint = err.hint;
  } else {
    message = err instanceof Error ? err.message : String(err);
  }
  // Keep it to one line even if a server put newlines in its message.
  io.stderr.write(`Error: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (hint) io.stderr.write(`Hint: ${hint}\n`);
  if (io.env.HANGAR_DEBUG && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`);
  return 1;
}

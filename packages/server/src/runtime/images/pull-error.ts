import { type ErrorCode, HangarError } from '../../shared/errors.js';
import { type CommandError, failureDetail } from '../../shared/run.js';

/** Why an image could not be prepared; tests and callers branch on this, people read the message. */
export type ImagePullFailure =
  | 'invalid_reference'
  | 'not_found'
  | 'unauthorized'
  | 'unreachable'
  | 'unsupported'
  | 'refused'
  | 'timeout'
  | 'cancelled'
  | 'too_large'
  | 'quota'
  | 'failed';

/**
 * The user can fix a bad name, a missing image or missing access themselves, so those are client errors;
 * a registry the policy refuses is `forbidden`; a registry that is down is `unavailable` (retry later);
 * only an unexplained tool failure is `internal`.
 */
const CODE_FOR: Record<ImagePullFailure, ErrorCode> = {
  invalid_reference: 'invalid_argument',
  not_found: 'invalid_argument',
  unauthorized: 'invalid_argument',
  unsupported: 'invalid_argument',
  refused: 'forbidden',
  unreachable: 'unavailable',
  timeout: 'deadline_exceeded',
  cancelled: 'unavailable',
  too_large: 'quota_exceeded',
  quota: 'quota_exceeded',
  failed: 'internal',
};

/**
 * A failed pull. Its message reaches the tenant (API errors, machine events), so it names only the image
 * and what to do: never an address the host resolved or connected to, a port, resolver output or a host
 * path. What the registry or the tool said goes into `detail`, for hangard's log only.
 */
export class ImagePullError extends HangarError {
  readonly reason: ImagePullFailure;
  /** The reference as the caller wrote it. */
  readonly reference: string;
  /** Host-side detail (a tool's stderr, a socket error) for hangard's log; never shown to tenants. */
  readonly detail: string;

  constructor(
    reason: ImagePullFailure,
    reference: string,
    message: string,
    options: { cause?: unknown; detail?: string } = {},
  ) {
    super(CODE_FOR[reason], message, options);
    this.name = 'ImagePullError';
    this.reason = reason;
    this.reference = reference;
    this.detail = options.detail ?? '';
  }
}

/** The tenant-safe sentences of each kind of registry failure; `what` names the image as written. */
export const PULL_MESSAGES = {
  notFound: (what: string, hint: string) => `${what} was not found in its registry: ${hint}`,
  unauthorized: (what: string) =>
    `${what} was not found or may not be pulled without credentials, which Hangar does not send to ` +
    "other registries: make it public, or copy it into your app's space in Hangar's registry",
  plainHttp: (what: string) =>
    `the registry of ${what} does not speak HTTPS; only registries the operator lists in registry.insecure are reached without TLS`,
  tls: (what: string) =>
    `the registry of ${what} failed the TLS handshake or its certificate was not trusted`,
  unreachable: (what: string) =>
    `the registry of ${what} could not be reached: check the name, and that it is up and public`,
  failed: (what: string) =>
    `pulling ${what} failed; the host's operator can find the details in hangard's log`,
};

/**
 * Turns a failed skopeo run into an ImagePullError: one of a few tenant-safe messages chosen by what
 * skopeo said, with skopeo's own words kept as the detail. `what` names the image (`image app:1`).
 */
export function pullErrorFromSkopeo(
  reference: string,
  what: string,
  failure: CommandError,
  hints: { notFound: string },
): ImagePullError {
  if (failure.failure === 'not_installed') {
    return new ImagePullError('failed', reference, PULL_MESSAGES.failed(what), {
      detail: "skopeo is not installed on this host (install Debian's skopeo package)",
    });
  }
  const said = failureDetail(failure.stderr) || failure.message;
  const make = (reason: ImagePullFailure, text: string) =>
    new ImagePullError(reason, reference, text, { cause: failure, detail: `skopeo: ${said}` });
  if (/manifest unknown|name unknown|repository name not known|not found|\b404\b/i.test(said)) {
    return make('not_found', PULL_MESSAGES.notFound(what, hints.notFound));
  }
  if (/unauthorized|authentication required|denied|\b401\b|\b403\b/i.test(said)) {
    return make('unauthorized', PULL_MESSAGES.unauthorized(what));
  }
  if (/server gave HTTP response to HTTPS client/i.test(said)) {
    return make('unreachable', PULL_MESSAGES.plainHttp(what));
  }
  if (/tls|x509|certificate/i.test(said)) return make('unreachable', PULL_MESSAGES.tls(what));
  if (
    /connection refused|no such host|i\/o timeout|network is unreachable|dial tcp|EOF|pinging/i.test(said)
  ) {
    return make('unreachable', PULL_MESSAGES.unreachable(what));
  }
  return make('failed', PULL_MESSAGES.failed(what));
}

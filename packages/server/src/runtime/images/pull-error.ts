import { type ErrorCode, HangarError } from '../../shared/errors.js';
import { type CommandError, failureDetail } from '../../shared/run.js';

/** Why an image could not be prepared; tests and callers branch on this, people read the message. */
export type ImagePullFailure =
  | 'invalid_reference'
  | 'not_found'
  | 'unauthorized'
  | 'unreachable'
  | 'unsupported'
  | 'timeout'
  | 'cancelled'
  | 'failed';

/**
 * The user can fix a bad name, a missing image or missing access themselves, so those are client errors;
 * a registry that is down is `unavailable` (retry later); only an unexplained tool failure is `internal`.
 */
const CODE_FOR: Record<ImagePullFailure, ErrorCode> = {
  invalid_reference: 'invalid_argument',
  not_found: 'invalid_argument',
  unauthorized: 'invalid_argument',
  unsupported: 'invalid_argument',
  unreachable: 'unavailable',
  timeout: 'deadline_exceeded',
  cancelled: 'unavailable',
  failed: 'internal',
};

export class ImagePullError extends HangarError {
  readonly reason: ImagePullFailure;
  /** The reference as the caller wrote it. */
  readonly reference: string;

  constructor(
    reason: ImagePullFailure,
    reference: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(CODE_FOR[reason], message, options);
    this.name = 'ImagePullError';
    this.reason = reason;
    this.reference = reference;
  }
}

/**
 * Turns a failed skopeo run into an ImagePullError that says what failed and what to do, quoting the
 * line of skopeo's stderr that explains it. `what` names the image for people (`image 127.0.0.1:5000/app:1`).
 */
export function pullErrorFromSkopeo(
  reference: string,
  what: string,
  failure: CommandError,
  hints: { notFound: string; plainHttp: string },
): ImagePullError {
  if (failure.failure === 'not_installed') {
    return new ImagePullError(
      'failed',
      reference,
      `cannot pull ${what}: skopeo is not installed on this host (install Debian's skopeo package)`,
    );
  }
  const said = failureDetail(failure.stderr) || failure.message;
  const make = (reason: ImagePullFailure, text: string) =>
    new ImagePullError(reason, reference, `${text} (skopeo: ${said})`, { cause: failure });
  if (/manifest unknown|name unknown|repository name not known|not found|\b404\b/i.test(said)) {
    return make('not_found', `${what} was not found in its registry: ${hints.notFound}`);
  }
  if (/unauthorized|authentication required|denied|\b401\b|\b403\b/i.test(said)) {
    return make(
      'unauthorized',
      `${what} was not found or this host may not pull it: check the name, or give skopeo credentials ` +
        '(skopeo login) for that registry',
    );
  }
  if (/server gave HTTP response to HTTPS client/i.test(said)) {
    return make('unreachable', `the registry of ${what} speaks plain HTTP: ${hints.plainHttp}`);
  }
  if (
    /connection refused|no such host|i\/o timeout|network is unreachable|dial tcp|tls|x509|EOF|pinging/i.test(
      said,
    )
  ) {
    return make(
      'unreachable',
      `the registry of ${what} could not be reached: check that it is running and reachable`,
    );
  }
  return make('failed', `pulling ${what} failed`);
}

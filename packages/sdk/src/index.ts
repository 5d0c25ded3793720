export {
  authorizationHeader,
  DEFAULT_BASE_URL,
  DEFAULT_RETRY,
  type HttpMethod,
  isRetryable,
  LEASE_NONCE_HEADER,
  type MachinesClientOptions,
  type MutationOptions,
  parseRetryAfter,
  path,
  type Query,
  REQUEST_ID_HEADER,
  type RequestOptions,
  type RequestSpec,
  type RetryOptions,
  resolveBaseUrl,
  Transport,
} from './client.js';
export {
  isMachinesApiError,
  MachinesApiError,
  type MachinesApiErrorInit,
  SDK_ERROR_CODES,
} from './errors.js';
export { MachinesClient } from './machines-client.js';
export { DEFAULT_RATE_LIMIT, type RateLimitOptions, TokenBucket } from './rate-limit.js';
export { AppsResource } from './resources/apps.js';
export { CertificatesResource } from './resources/certificates.js';
export { IPAssignmentsResource } from './resources/ips.js';
export { DEFAULT_WAIT_FOR_STATE_MS, MAX_WAIT_CALL_SECONDS, MachinesResource } from './resources/machines.js';
export { PlatformResource } from './resources/platform.js';
export { SecretsResource } from './resources/secrets.js';
export { TokensResource } from './resources/tokens.js';
export { type ListVolumesOptions, VolumesResource } from './resources/volumes.js';
export type * from './types.js';
export { SDK_VERSION } from './version.js';

import type { BucketLimit } from '../shared/rate-limiter.js';

/**
 * The API's rate limits as configured (`rateLimits` in the configuration): the defaults are part of the
 * configuration, and api/rate-limits.ts applies them. Every bucket is charged only after the request's
 * token is known and its access to the app the path names is checked: a request refused with 401 or 403
 * is charged to `refused` alone.
 */
export interface RateLimitConfig {
  enabled: boolean;
  /** Every request of one token, whatever it names: half the org bucket, so one token cannot drain it. */
  token: BucketLimit;
  /** Every authorized request of one org (all tenants of the org share it). */
  org: BucketLimit;
  /** Each mutating action, per machine (or per app when no machine is named): Fly's 1 req/s, burst 3. */
  machineAction: BucketLimit;
  /** Reads of one machine or app: Fly's Get Machine limit, 5 req/s, burst 10. */
  machineRead: BucketLimit;
  /** App deletions per org: Fly's 100 per minute. */
  appDelete: BucketLimit;
  /** Requests refused with 401 (per source address) or 403 (per token): limits probing. */
  refused: BucketLimit;
}

export const DEFAULT_RATE_LIMITS: RateLimitConfig = {
  enabled: true,
  token: { perSecond: 100, burst: 200 },
  org: { perSecond: 200, burst: 400 },
  machineAction: { perSecond: 1, burst: 3 },
  machineRead: { perSecond: 5, burst: 10 },
  appDelete: { perSecond: 100 / 60, burst: 100 },
  refused: { perSecond: 5, burst: 50 },
};

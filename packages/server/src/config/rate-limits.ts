import type { BucketLimit } from '../shared/rate-limiter.js';

/**
 * The API's rate limits as configured (`rateLimits` in the configuration): the defaults are part of the
 * configuration, and api/rate-limits.ts applies them.
 */
export interface RateLimitConfig {
  enabled: boolean;
  /** Every request of one org. */
  org: BucketLimit;
  /** Each mutating action, per machine (or per app when no machine is named): Fly's 1 req/s, burst 3. */
  machineAction: BucketLimit;
  /** Reads of one machine or app: Fly's Get Machine limit, 5 req/s, burst 10. */
  machineRead: BucketLimit;
  /** App deletions per org: Fly's 100 per minute. */
  appDelete: BucketLimit;
}

export const DEFAULT_RATE_LIMITS: RateLimitConfig = {
  enabled: true,
  org: { perSecond: 200, burst: 400 },
  machineAction: { perSecond: 1, burst: 3 },
  machineRead: { perSecond: 5, burst: 10 },
  appDelete: { perSecond: 100 / 60, burst: 100 },
};

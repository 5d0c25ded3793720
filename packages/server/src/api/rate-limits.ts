import type { Principal } from '../auth/tokens.js';
import type { RateLimitConfig } from '../config/rate-limits.js';
import { HangarError } from '../shared/errors.js';
import { type BucketLimit, RateLimiter } from '../shared/rate-limiter.js';

/**
 * Which bucket a route draws from. Fly documents limits per action and per machine (or per app for
 * app-scoped actions); an org-wide bucket on top keeps one tenant from starving the others.
 */
export type RateClass = 'machine_action' | 'machine_read' | 'app_delete' | 'unlimited';

export class ApiRateLimits {
  readonly #limiter = new RateLimiter();

  constructor(private readonly config: RateLimitConfig) {}

  /** Throws 429 with Retry-After when a bucket is empty. `action` names the route (e.g. "machine.start"). */
  check(principal: Principal, rateClass: RateClass, action: string, target: string): void {
    if (!this.config.enabled) return;
    this.#take(`org:${principal.orgId}`, this.config.org, 'requests for this organization');
    if (rateClass === 'unlimited') return;
    const limit =
      rateClass === 'machine_action'
        ? this.config.machineAction
        : rateClass === 'machine_read'
          ? this.config.machineRead
          : this.config.appDelete;
    // Keys carry the org, so a token of another org (refused later with 403) cannot drain this org's buckets.
    const key =
      rateClass === 'app_delete' ? `app_delete:${principal.orgId}` : `${principal.orgId}:${action}:${target}`;
    this.#take(key, limit, `${action} on ${target}`);
  }

  #take(key: string, limit: BucketLimit, what: string): void {
    const waitSec = this.#limiter.take(key, limit);
    if (waitSec > 0) {
      throw new HangarError(
        'rate_limited',
        `rate limit exceeded for ${what} (${limit.perSecond} per second, bursts of ${limit.burst}); retry in ${waitSec}s`,
        { retryAfterSec: waitSec },
      );
    }
  }
}

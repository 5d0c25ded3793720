import type { Principal } from '../auth/tokens.js';
import type { RateLimitConfig } from '../config/rate-limits.js';
import { HangarError } from '../shared/errors.js';
import { type BucketLimit, RateLimiter } from '../shared/rate-limiter.js';

/**
 * Which bucket a route draws from. Fly documents limits per action and per machine (or per app for
 * app-scoped actions); an org-wide bucket on top keeps the org's tenants together within bounds, and a
 * per-token bucket (half the org's) keeps any one token from starving the org's other tokens.
 */
export type RateClass = 'machine_action' | 'machine_read' | 'app_delete' | 'unlimited';

/** A bucket a request took a token from, so that a request refused later can give it back. */
export interface Charge {
  key: string;
  limit: BucketLimit;
}

/**
 * The order of the checks is what makes them fair: a request that fails authentication counts against
 * its source address alone (and only such requests are ever refused for it, so tenants behind one address
 * are not locked out by someone else's bad tokens), `token` once the token is known, `charge` only after the token's access to the target was
 * checked, so that a request answered 401 or 403 never takes from the org's or the target's buckets.
 */
export class ApiRateLimits {
  readonly #limiter = new RateLimiter();

  constructor(private readonly config: RateLimitConfig) {}

  /** 429 when this source (address or token) has used up its allowance of refused requests. */
  checkRefusals(source: string): void {
    if (!this.config.enabled) return;
    const waitSec = this.#limiter.peek(`refused:${source}`, this.config.refused);
    if (waitSec > 0)
      this.#refuse('requests refused by authentication or authorization', this.config.refused, waitSec);
  }

  /**
   * Counts a 401 or 403 against its source; returns the 429 to answer instead when the source's
   * allowance is used up.
   */
  chargeRefusal(source: string): HangarError | undefined {
    if (!this.config.enabled) return undefined;
    const waitSec = this.#limiter.take(`refused:${source}`, this.config.refused);
    if (waitSec === 0) return undefined;
    return this.#error('requests refused by authentication or authorization', this.config.refused, waitSec);
  }

  /** Every request of an authenticated token. */
  chargeToken(principal: Principal): void {
    if (!this.config.enabled) return;
    this.#take({ key: `token:${principal.tokenId}`, limit: this.config.token }, 'requests of this token');
  }

  /**
   * The org's bucket and the route's own; throws 429 with Retry-After when one is empty, else returns
   * what was taken. `action` names the route (e.g. "machine.start").
   */
  charge(principal: Principal, rateClass: RateClass, action: string, target: string): Charge[] {
    if (!this.config.enabled) return [];
    const org = { key: `org:${principal.orgId}`, limit: this.config.org };
    this.#take(org, 'requests for this organization');
    if (rateClass === 'unlimited') return [org];
    const limit =
      rateClass === 'machine_action'
        ? this.config.machineAction
        : rateClass === 'machine_read'
          ? this.config.machineRead
          : this.config.appDelete;
    // Keys carry the org, so a token of another org cannot drain this org's buckets.
    const key =
      rateClass === 'app_delete' ? `app_delete:${principal.orgId}` : `${principal.orgId}:${action}:${target}`;
    try {
      this.#take({ key, limit }, `${action} on ${target}`);
    } catch (error) {
      this.refund([org]);
      throw error;
    }
    return [org, { key, limit }];
  }

  /** Gives back what `charge` took, for a request that authorization refused after all. */
  refund(charges: readonly Charge[]): void {
    for (const { key, limit } of charges) this.#limiter.refund(key, limit);
  }

  #take(charge: Charge, what: string): void {
    const waitSec = this.#limiter.take(charge.key, charge.limit);
    if (waitSec > 0) this.#refuse(what, charge.limit, waitSec);
  }

  #refuse(what: string, limit: BucketLimit, waitSec: number): never {
    throw this.#error(what, limit, waitSec);
  }

  #error(what: string, limit: BucketLimit, waitSec: number): HangarError {
    return new HangarError(
      'rate_limited',
      `rate limit exceeded for ${what} (${limit.perSecond} per second, bursts of ${limit.burst}); retry in ${waitSec}s`,
      { retryAfterSec: waitSec },
    );
  }
}

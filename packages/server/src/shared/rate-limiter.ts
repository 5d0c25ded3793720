/**
 * Token buckets keyed by a string. A bucket holds up to `burst` tokens and refills at `perSecond`; each
 * request takes one. Buckets that are full again are swept, so idle keys cost nothing.
 */
export interface BucketLimit {
  perSecond: number;
  burst: number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
  limit: BucketLimit;
}

export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #now: () => number;
  #lastSweepMs = 0;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Takes a token; returns 0 when allowed, else the seconds to wait (rounded up, at least 1). */
  take(key: string, limit: BucketLimit): number {
    const now = this.#now();
    this.#sweep(now);
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      bucket = { tokens: limit.burst, updatedMs: now, limit };
      this.#buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(
      limit.burst,
      bucket.tokens + ((now - bucket.updatedMs) / 1000) * limit.perSecond,
    );
    bucket.updatedMs = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / limit.perSecond));
  }

  /** The seconds `take` would ask to wait now (0 when a token is there), taking nothing. */
  peek(key: string, limit: BucketLimit): number {
    const bucket = this.#buckets.get(key);
    if (!bucket) return 0;
    const tokens = Math.min(
      limit.burst,
      bucket.tokens + ((this.#now() - bucket.updatedMs) / 1000) * limit.perSecond,
    );
    return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / limit.perSecond));
  }

  /** Gives back a token taken for a request that turned out not to count (refused by authorization). */
  refund(key: string, limit: BucketLimit): void {
    const bucket = this.#buckets.get(key);
    if (bucket) bucket.tokens = Math.min(limit.burst, bucket.tokens + 1);
  }

  #sweep(now: number): void {
    if (now - this.#lastSweepMs < 10_000) return;
    this.#lastSweepMs = now;
    for (const [key, bucket] of this.#buckets) {
      const refilled = bucket.tokens + ((now - bucket.updatedMs) / 1000) * bucket.limit.perSecond;
      if (refilled >= bucket.limit.burst) this.#buckets.delete(key);
    }
  }
}

import { sleep } from './sleep.js';

export interface RateLimitOptions {
  /** Sustained rate (default 5 requests per second). */
  requestsPerSecond?: number;
  /** Requests allowed back to back before the rate applies (default 10). */
  burst?: number;
}

export const DEFAULT_RATE_LIMIT: Required<RateLimitOptions> = {
  requestsPerSecond: 5,
  burst: 10,
};

/**
 * A token bucket that delays callers instead of failing them.
 *
 * Each `take()` reserves a token immediately, even one that will only exist in the future (the balance may
 * go negative), and then sleeps until that token is due. Reserving up front keeps callers in FIFO order
 * without a queue: the n-th waiter always sleeps longer than the (n-1)-th.
 */
export class TokenBucket {
  readonly #ratePerMs: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #updatedAt: number;

  constructor(options: RateLimitOptions = {}, now: () => number = Date.now) {
    const rate = options.requestsPerSecond ?? DEFAULT_RATE_LIMIT.requestsPerSecond;
    const burst = options.burst ?? DEFAULT_RATE_LIMIT.burst;
    if (!(rate > 0)) throw new RangeError(`requestsPerSecond must be > 0, got ${rate}`);
    if (!(burst >= 1)) throw new RangeError(`burst must be >= 1, got ${burst}`);
    this.#ratePerMs = rate / 1000;
    this.#burst = burst;
    this.#now = now;
    this.#tokens = burst;
    this.#updatedAt = now();
  }

  /** Milliseconds the next caller would wait; reserves its token. */
  reserve(): number {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#updatedAt) * this.#ratePerMs);
    this.#updatedAt = now;
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : -this.#tokens / this.#ratePerMs;
  }

  /** Gives back a reserved token (its caller gave up before using it). */
  refund(): void {
    this.#tokens = Math.min(this.#burst, this.#tokens + 1);
  }

  /** Resolves when the caller may send; rejects if `signal` aborts first (and refunds the token). */
  async take(signal?: AbortSignal): Promise<void> {
    const waitMs = this.reserve();
    if (waitMs <= 0) return;
    try {
      await sleep(waitMs, signal);
    } catch (err) {
      this.refund();
      throw err;
    }
  }
}

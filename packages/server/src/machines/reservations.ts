import { KeyedQueue } from '../shared/keyed-queue.js';

/**
 * Claims on a bounded resource (the host's memory and cpus, an app's volume bytes) that operations hold
 * between the check that admits them and the store write that makes them real. Checks, claims and those
 * writes of one scope run one at a time under the scope's lock, so two operations can never both pass a
 * check that only one of them fits: the second one's check sees the first one's claim, or its record.
 *
 * A claim lives only in this process, as long as the operation that took it: a crash drops it, together
 * with the operation.
 */
export class Reservations<C> {
  readonly #locks = new KeyedQueue();
  readonly #held = new Map<string, Map<string, C>>();

  /** The claims held in `scope`, by id. Read it only under the scope's lock (inside reserve or settle). */
  held(scope: string): ReadonlyMap<string, C> {
    return this.#held.get(scope) ?? new Map();
  }

  /**
   * Under the scope's lock, runs `check` (which reads the store and held(scope) and throws when the claim
   * does not fit; it may also write what goes with the claim); when it passes, `claimOf` its result is
   * held under `id` until settle() or release().
   */
  reserve<T>(scope: string, id: string, check: () => Promise<T>, claimOf: (result: T) => C): Promise<T> {
    return this.#locks.run(scope, async () => {
      const result = await check();
      let claims = this.#held.get(scope);
      if (!claims) {
        claims = new Map();
        this.#held.set(scope, claims);
      }
      claims.set(id, claimOf(result));
      return result;
    });
  }

  /**
   * Under the scope's lock, runs `commit` (the store write that makes the claim real, given the claim or
   * undefined when `id` holds none), then drops the claim whatever `commit` did.
   */
  settle<T>(scope: string, id: string, commit: (claim: C | undefined) => Promise<T>): Promise<T> {
    return this.#locks.run(scope, async () => {
      try {
        return await commit(this.#held.get(scope)?.get(id));
      } finally {
        this.#drop(scope, id);
      }
    });
  }

  /** Drops a claim the operation will not use (it failed before its write). */
  release(scope: string, id: string): Promise<void> {
    return this.settle(scope, id, async () => undefined);
  }

  #drop(scope: string, id: string): void {
    const claims = this.#held.get(scope);
    claims?.delete(id);
    if (claims?.size === 0) this.#held.delete(scope);
  }
}

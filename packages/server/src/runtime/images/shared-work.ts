/**
 * Runs one task per key no matter how many callers ask for it at once: the second prepare() of an image
 * joins the first one's unpack instead of starting another. Each caller may leave early with its own
 * AbortSignal; the task itself is aborted (its child processes killed) only when every caller has left,
 * so one impatient caller never breaks the work the others are waiting for.
 */
interface Entry<T> {
  promise: Promise<T>;
  controller: AbortController;
  waiters: number;
}

export class SharedWork<T> {
  readonly #entries = new Map<string, Entry<T>>();

  /** Keys with work under way. */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  get size(): number {
    return this.#entries.size;
  }

  run(key: string, task: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      const controller = new AbortController();
      const created: Entry<T> = { promise: Promise.resolve(undefined as T), controller, waiters: 0 };
      created.promise = task(controller.signal).finally(() => {
        if (this.#entries.get(key) === created) this.#entries.delete(key);
      });
      // Waiters observe the outcome; this keeps a task whose callers all left from being an unhandled rejection.
      created.promise.catch(() => undefined);
      this.#entries.set(key, created);
      entry = created;
    }
    const joined = entry;
    joined.waiters++;
    if (signal === undefined) return joined.promise.finally(() => joined.waiters--);
    return new Promise<T>((resolve, reject) => {
      const leave = () => {
        joined.waiters--;
        if (joined.waiters === 0) joined.controller.abort(signal.reason);
        reject(signal.reason);
      };
      signal.addEventListener('abort', leave, { once: true });
      joined.promise.then(
        (value) => {
          signal.removeEventListener('abort', leave);
          if (signal.aborted) return;
          joined.waiters--;
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', leave);
          if (signal.aborted) return;
          joined.waiters--;
          reject(error);
        },
      );
    });
  }

  /** Aborts every task (their callers see the task's own failure) and waits for them to settle. */
  async abortAll(reason: unknown): Promise<void> {
    const entries = [...this.#entries.values()];
    for (const entry of entries) entry.controller.abort(reason);
    await Promise.allSettled(entries.map((entry) => entry.promise));
  }
}

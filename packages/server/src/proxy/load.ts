/**
 * What the proxy counts per machine: requests (or upgraded connections) in flight, and when traffic was
 * last seen. The balancer reads the counts, autostop reads both, and requests queued at a hard limit wait
 * here for a slot to free.
 */
export class MachineLoad {
  readonly #inflight = new Map<string, number>();
  readonly #lastActive = new Map<string, number>();
  readonly #waiters = new Set<() => void>();

  constructor(private readonly now: () => number = Date.now) {}

  load(machineId: string): number {
    return this.#inflight.get(machineId) ?? 0;
  }

  /** Counts one request on the machine; the returned function ends it (calling it twice is harmless). */
  acquire(machineId: string): () => void {
    this.#inflight.set(machineId, this.load(machineId) + 1);
    this.touch(machineId);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = this.load(machineId) - 1;
      if (left > 0) this.#inflight.set(machineId, left);
      else this.#inflight.delete(machineId);
      this.touch(machineId);
      this.wakeWaiters();
    };
  }

  /** Traffic seen (a request, bytes on an open stream). */
  touch(machineId: string): void {
    this.#lastActive.set(machineId, this.now());
  }

  /** When traffic was last seen, or undefined if never since this process started. */
  lastActivity(machineId: string): number | undefined {
    return this.#lastActive.get(machineId);
  }

  forget(machineId: string): void {
    this.#lastActive.delete(machineId);
  }

  /** Resolves at the next release (or `wakeWaiters`), or after `ms`; false if it timed out. */
  waitForSlot(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (freed: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(onFree);
        resolve(freed);
      };
      const onFree = () => done(true);
      const timer = setTimeout(() => done(false), Math.max(0, ms));
      this.#waiters.add(onFree);
    });
  }

  /** Lets every queued request look again (a slot freed, or the route table changed). */
  wakeWaiters(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

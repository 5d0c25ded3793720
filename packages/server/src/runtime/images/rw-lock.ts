/**
 * Many readers or one writer. The image store's OCI layout needs it: skopeo rewrites the layout's
 * index.json in place (not atomically) when it adds an image, so nothing may read the layout while a copy
 * runs, but any number of umoci unpacks can read it together. Writers are served in arrival order and a
 * waiting writer holds back new readers, so a stream of unpacks cannot starve a pull.
 */
export class ReadWriteLock {
  #readers = 0;
  #writing = false;
  readonly #waiting: { write: boolean; wake: () => void }[] = [];

  read<T>(task: () => Promise<T>): Promise<T> {
    return this.#run(false, task);
  }

  write<T>(task: () => Promise<T>): Promise<T> {
    return this.#run(true, task);
  }

  async #run<T>(write: boolean, task: () => Promise<T>): Promise<T> {
    if (!this.#canEnter(write) || this.#waiting.length > 0) {
      await new Promise<void>((wake) => this.#waiting.push({ write, wake }));
    } else {
      this.#enter(write);
    }
    try {
      return await task();
    } finally {
      if (write) this.#writing = false;
      else this.#readers--;
      this.#wakeNext();
    }
  }

  #canEnter(write: boolean): boolean {
    return write ? !this.#writing && this.#readers === 0 : !this.#writing;
  }

  #enter(write: boolean): void {
    if (write) this.#writing = true;
    else this.#readers++;
  }

  /** Admits the head of the queue, and with a reader at the head every reader queued behind it up to a writer. */
  #wakeNext(): void {
    while (this.#waiting.length > 0) {
      const next = this.#waiting[0]!;
      if (!this.#canEnter(next.write)) return;
      this.#waiting.shift();
      this.#enter(next.write);
      next.wake();
      if (next.write) return;
    }
  }
}

import type http from 'node:http';
import type { Writable } from 'node:stream';

/**
 * A request body that can be sent more than once (a replay) as long as it fits the replay limit. It is
 * read only once a machine's connection is up, streamed to it as it arrives (with backpressure), and the
 * first `limit` bytes are kept; past that, the body streams on but can no longer be replayed.
 */
export class ReplayableBody {
  readonly #req: http.IncomingMessage;
  readonly #limit: number;
  readonly #kept: Buffer[] = [];
  #keptBytes = 0;
  #overflow = false;
  #ended = false;
  #reading = false;
  #sink: Writable | undefined;
  readonly #endWaiters: (() => void)[] = [];

  constructor(req: http.IncomingMessage, limit: number) {
    this.#req = req;
    this.#limit = limit;
    if (req.readableEnded) this.#ended = true;
  }

  /** Whether every byte of the body is kept (it can be sent again). */
  get replayable(): boolean {
    return !this.#overflow;
  }

  /** Sends what is kept, then the rest as it arrives, and ends `sink` with the body. */
  sendTo(sink: Writable): void {
    for (const chunk of this.#kept) sink.write(chunk);
    if (this.#ended) {
      sink.end();
      return;
    }
    this.#sink = sink;
    sink.on('drain', () => {
      if (this.#sink === sink) this.#req.resume();
    });
    this.#startReading();
  }

  /** Stops sending to the current machine (its answer asked for a replay). */
  detach(): void {
    this.#sink = undefined;
    this.#req.resume();
  }

  /** Reads the body to its end (kept up to the limit); true if all of it is kept. */
  async complete(): Promise<boolean> {
    this.#startReading();
    this.#req.resume();
    if (!this.#ended) await new Promise<void>((resolve) => this.#endWaiters.push(resolve));
    return !this.#overflow;
  }

  #startReading(): void {
    if (this.#reading || this.#ended) return;
    this.#reading = true;
    this.#req.on('data', (chunk: Buffer) => {
      if (!this.#overflow) {
        if (this.#keptBytes + chunk.length > this.#limit) {
          this.#overflow = true;
          this.#kept.length = 0;
        } else {
          this.#kept.push(chunk);
          this.#keptBytes += chunk.length;
        }
      }
      const sink = this.#sink;
      if (sink && !sink.write(chunk)) this.#req.pause();
    });
    const end = () => {
      if (this.#ended) return;
      this.#ended = true;
      this.#sink?.end();
      for (const waiter of this.#endWaiters.splice(0)) waiter();
    };
    this.#req.on('end', end);
    this.#req.on('close', end);
  }
}

// Leases on the machines a deploy changes, so that no other client (another deploy, `machine update`)
// changes them meanwhile. Taken with a short TTL and refreshed in the background, as flyctl does, so that
// a deploy that dies leaves nothing locked for long.

import { isMachinesApiError, type MachinesClient } from '@hangar/sdk';
import { CliError } from '../../errors.js';

/** Seconds a lease lives without a refresh. */
export const LEASE_TTL_SECONDS = 30;
const REFRESH_EVERY_MS = 10_000;
/** How long to keep asking for a lease another client holds (it may be about to release it). */
const ACQUIRE_PATIENCE_MS = 30_000;

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LeaseKeeper {
  readonly #nonces = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly client: MachinesClient,
    private readonly app: string,
  ) {}

  nonce(id: string): string | undefined {
    return this.#nonces.get(id);
  }

  async acquire(ids: string[]): Promise<void> {
    for (const id of ids) {
      const deadline = Date.now() + ACQUIRE_PATIENCE_MS;
      for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
        try {
          const lease = await this.client.machines.acquireLease(this.app, id, {
            ttl: LEASE_TTL_SECONDS,
            description: 'hangar deploy',
          });
          this.#nonces.set(id, lease.nonce);
          break;
        } catch (err) {
          if (!isMachinesApiError(err) || err.status !== 409 || Date.now() > deadline) {
            if (isMachinesApiError(err) && err.status === 409) {
              throw new CliError(
                `machine ${id} is leased by another client: ${err.detail ?? err.message}`,
                `wait for that client to finish (or its lease to expire: \`hangar machine status ${id} -a ${this.app}\`), then deploy again`,
              );
            }
            throw err;
          }
          await pause(delay);
        }
      }
    }
    if (!this.#timer && this.#nonces.size > 0) {
      this.#timer = setInterval(() => void this.#refresh(), REFRESH_EVERY_MS);
      this.#timer.unref();
    }
  }

  async #refresh(): Promise<void> {
    for (const [id, nonce] of this.#nonces) {
      await this.client.machines
        .acquireLease(this.app, id, { ttl: LEASE_TTL_SECONDS, nonce, description: 'hangar deploy' })
        .catch(() => undefined);
    }
  }

  /** Releases every lease; a lease already gone (expired, machine destroyed) is fine. */
  async releaseAll(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    const held = [...this.#nonces];
    this.#nonces.clear();
    await Promise.all(
      held.map(([id, nonce]) =>
        this.client.machines.releaseLease(this.app, id, nonce).catch(() => undefined),
      ),
    );
  }

  forget(id: string): void {
    this.#nonces.delete(id);
  }
}

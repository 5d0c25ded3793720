import type { WakeResult } from '../machines/machines.js';
import type { NormalizedService } from '../shared/machine-config.js';
import type { JsonObject } from '../store/records.js';
import { proxyFailure } from './proxy-errors.js';
import type { RouteTable } from './route-table.js';
import { canConnect, httpCheckPasses, type MachineDial, machineDial } from './upstream.js';

/**
 * Waking machines for requests (autostart). One wake per machine at a time; requests that arrive during a
 * wake share it. A wake is: the orchestrator's start (which waits behind a stop in progress), then polling
 * until the machine is ready: its first service check passes, or else its internal port accepts TCP.
 * Polling is at short fixed intervals, never with backoff: readiness is noticed within one interval.
 */

export interface WakeOrchestrator {
  wake(machineId: string, trigger: JsonObject): Promise<WakeResult>;
  noteProxyEvent(machineId: string, type: string, status: string, request: JsonObject): Promise<void>;
}

/** The latency split of one wake, in milliseconds. */
export interface WakeTimings {
  previousState: string;
  /** From the request's arrival at the wake to the boot beginning (queue, a stop in progress). */
  startMs: number;
  bootMs: number;
  /** From the boot's end to the first passing check (or accepted connection). */
  readyMs: number;
  /**
   * Set by the first request answered after this wake (all held requests share this object), so the
   * time to its first byte is recorded once per wake.
   */
  firstByteNoted?: boolean;
}

export interface ActiveWake {
  readonly machineId: string;
  readonly serviceKey: string;
  /** Requests waiting on this wake. */
  held: number;
  /** How many held requests it takes (the service's soft limit) before another machine is woken. */
  readonly capacity: number;
  readonly done: Promise<WakeTimings>;
}

/**
 * Readiness is polled every READY_POLL_FAST_MS for the first READY_FAST_FOR_MS after the boot (a probe of
 * a port nobody listens on yet costs a refused connect, microseconds), then every READY_POLL_MS: an app
 * that listens within milliseconds of its start is noticed within two, and a slow one (or many machines
 * waking at once) costs at most 100 fast probes each.
 */
export const READY_POLL_FAST_MS = 2;
export const READY_FAST_FOR_MS = 200;
export const READY_POLL_MS = 25;
const PROBE_TIMEOUT_MS = 1_000;

export class Wakes {
  readonly #active = new Map<string, ActiveWake>();

  constructor(
    private readonly orchestrator: WakeOrchestrator,
    private readonly routes: RouteTable,
    private readonly now: () => number = Date.now,
  ) {}

  get(machineId: string): ActiveWake | undefined {
    return this.#active.get(machineId);
  }

  /** Active wakes of one app's service (by key). */
  forService(serviceKey: string): ActiveWake[] {
    return [...this.#active.values()].filter((w) => w.serviceKey === serviceKey);
  }

  get size(): number {
    return this.#active.size;
  }

  begin(
    machineId: string,
    service: NormalizedService,
    serviceKey: string,
    capacity: number,
    trigger: JsonObject,
    budgetMs: number,
  ): ActiveWake {
    const existing = this.#active.get(machineId);
    if (existing) return existing;
    const askedAt = this.now();
    const deadline = askedAt + budgetMs;
    // The queue depth is read when the wake ends, from the same object the callers count on.
    const slot = { machineId, serviceKey, held: 0, capacity: Math.max(1, capacity) };
    const done = (async (): Promise<WakeTimings> => {
      let result: WakeResult;
      try {
        result = await this.orchestrator.wake(machineId, trigger);
      } catch (error) {
        throw proxyFailure(
          'PM07',
          `machine ${machineId} could not be started: ${(error as Error).message}`,
          5,
        );
      }
      const bootDone = this.now();
      await this.#untilReady(machineId, service, deadline);
      const timings: WakeTimings = {
        previousState: result.previousState,
        startMs: Math.max(0, bootDone - askedAt - result.bootMs),
        bootMs: result.bootMs,
        readyMs: this.now() - bootDone,
      };
      void this.orchestrator
        .noteProxyEvent(machineId, 'wake', 'ready', {
          ...trigger,
          queue_depth: slot.held,
          from_state: timings.previousState,
          start_ms: timings.startMs,
          boot_ms: timings.bootMs,
          ready_ms: timings.readyMs,
        })
        .catch(() => undefined);
      return timings;
    })();
    const wake: ActiveWake = Object.assign(slot, { done });
    this.#active.set(machineId, wake);
    void done.then(
      () => this.#active.delete(machineId),
      () => this.#active.delete(machineId),
    );
    return wake;
  }

  async #untilReady(machineId: string, service: NormalizedService, deadline: number): Promise<void> {
    const fastUntil = this.now() + READY_FAST_FOR_MS;
    for (;;) {
      const machine = this.routes.machine(machineId);
      if (
        machine?.state === 'started' &&
        machine.privateIp !== null &&
        (await isReady(machineDial(machine), service))
      ) {
        return;
      }
      if (this.now() >= deadline) {
        throw proxyFailure('PM03', `machine ${machineId} did not become ready within its wake budget`, 5);
      }
      const interval = this.now() < fastUntil ? READY_POLL_FAST_MS : READY_POLL_MS;
      await new Promise((resolve) => setTimeout(resolve, interval));
    }
  }
}

/** Ready: the service's first check passes, or, without checks, the internal port accepts TCP. */
export async function isReady(host: string | MachineDial, service: NormalizedService): Promise<boolean> {
  const check = service.checks?.[0];
  const port = check?.port ?? service.internal_port;
  if (check?.type === 'http') return httpCheckPasses(host, port, check, PROBE_TIMEOUT_MS);
  return canConnect(host, port, PROBE_TIMEOUT_MS);
}

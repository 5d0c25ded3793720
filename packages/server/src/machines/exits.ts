/**
 * Exits nobody asked for (a crash, an OOM kill, the program ending by itself): recorded as events, then
 * the restart policy or `auto_destroy` applies. Runs inside the machine's queue.
 */

import type { ExitInfo } from '../runtime/runtime.js';
import { HangarError } from '../shared/errors.js';
import { MACHINE_DEFAULTS } from '../shared/machine-config.js';
import type { MachineState } from '../store/records.js';
import { isoNow, type PlatformContext } from './context.js';
import { exitEvent, type MachineLifecycle } from './lifecycle.js';
import { recordEvent } from './machine-events.js';
import { restartSettings } from './machine-spec.js';

/** States in which an exit means the workload ended under the machine (anything else: already handled). */
const RUNNING_STATES: readonly MachineState[] = [
  'started',
  'starting',
  'suspended',
  'suspending',
  'stopping',
];

export class ExitHandler {
  /** Recent automatic restarts per machine, counted within the restart window for `restart.max_retries`. */
  readonly #restarts = new Map<string, number[]>();

  constructor(
    private readonly ctx: PlatformContext,
    private readonly lifecycle: MachineLifecycle,
  ) {}

  /** Records the exit, then restarts, destroys or leaves the machine stopped. `note` explains odd exits. */
  async handle(machineId: string, exit: ExitInfo, note?: string): Promise<void> {
    const machine = await this.ctx.store.read((tx) => tx.machines.get(machineId));
    if (!machine || !RUNNING_STATES.includes(machine.state)) return;
    const { policy, maxRetries } = restartSettings(machine.config);
    const recent = (this.#restarts.get(machineId) ?? []).filter(
      (at) => this.ctx.now() - at < MACHINE_DEFAULTS.restartWindowMs,
    );
    const failed = exit.exitCode !== 0 || exit.oomKilled;
    const restarting =
      machine.state !== 'stopping' &&
      (policy === 'always' || (policy === 'on-failure' && failed)) &&
      recent.length < maxRetries;
    await this.ctx.store.write((tx) => {
      const next = { ...tx.machines.get(machineId)!, state: 'stopped' as const, updatedAt: isoNow(this.ctx) };
      tx.machines.update(next);
      recordEvent(this.ctx, tx, next, 'exit', 'stopped', 'flyd', {
        exit_event: { ...exitEvent(exit), restarting },
        restart_count: recent.length,
        ...(note ? { error: note } : {}),
      });
    });
    if (restarting) {
      this.#restarts.set(machineId, [...recent, this.ctx.now()]);
      await this.lifecycle.boot(machineId).catch(async (error: unknown) => {
        // A boot that fails on the way is recorded by the boot itself; one the host's capacity refused
        // never began, so the machine stays stopped and the event says why.
        if (HangarError.is(error) && error.code === 'insufficient_capacity') {
          await this.ctx.store.write((tx) => {
            const current = tx.machines.get(machineId);
            if (current)
              recordEvent(this.ctx, tx, current, 'restart', 'refused', 'hangar', { error: error.message });
          });
        }
      });
      return;
    }
    this.#restarts.delete(machineId);
    if (machine.config.auto_destroy === true) {
      const current = await this.ctx.store.read((tx) => tx.machines.get(machineId));
      if (current) await this.lifecycle.destroy(current);
    }
  }
}

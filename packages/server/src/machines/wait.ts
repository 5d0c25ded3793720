/** Long-polls on a machine's state (`GET .../wait`), answered from the store's change feed. */
import type { Principal } from '../auth/tokens.js';
import { failedPrecondition, HangarError } from '../shared/errors.js';
import type { MachineRecord } from '../store/records.js';
import { appFor, type PlatformContext } from './context.js';
import { findMachine, type WaitInput, waitOutcome } from './machine-rules.js';

export class MachineWaits {
  /** Open long-polls, so shutdown can answer them at once instead of waiting out their timeouts. */
  readonly #open = new Set<(error: Error) => void>();

  constructor(private readonly ctx: PlatformContext) {}

  /**
   * Resolves once the machine is in one of `states` (and at `version`, when given). Answers at once
   * with a terminal error when the state can no longer be reached, instead of hanging until the timeout.
   */
  async wait(
    principal: Principal,
    appName: string,
    machineId: string,
    input: WaitInput,
    abort?: AbortSignal,
  ): Promise<void> {
    const { id } = await this.ctx.store.read((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'read'), machineId);
      if (input.version !== undefined && !tx.machineVersions.get(`${machine.id}/${input.version}`)) {
        throw new HangarError('not_found', `machine ${machine.id} has no version ${input.version}`);
      }
      return machine;
    });
    return new Promise<void>((resolve, reject) => {
      let finished = false;
      const finish = (error?: Error) => {
        if (finished) return;
        finished = true;
        this.#open.delete(finish);
        clearTimeout(timer);
        unwatch();
        abort?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve();
      };
      const check = (machine: MachineRecord | undefined) => {
        if (!machine) return finish(new HangarError('not_found', `machine ${id} was deleted`));
        const outcome = waitOutcome(machine, input, this.ctx.runtime !== undefined);
        if (outcome === 'done') finish();
        else if (outcome instanceof HangarError) finish(outcome);
        else if (outcome === 'failed') {
          void this.ctx.store
            .read((tx) => tx.machineEvents.list({ machineId: id }, { newestFirst: true, limit: 1 })[0])
            .then((event) => {
              const error = event?.request?.error;
              const reason = typeof error === 'string' ? error : 'see its events';
              finish(
                failedPrecondition(`machine ${id} failed: ${reason}; fix the cause, then start it again`),
              );
            });
        }
      };
      const onAbort = () => finish(new HangarError('deadline_exceeded', 'the client went away'));
      const timer = setTimeout(() => {
        void this.ctx.store
          .read((tx) => tx.machines.get(id))
          .then((m) =>
            finish(
              new HangarError(
                'deadline_exceeded',
                `machine failed to reach desired state, ${input.states.join('/')}, currently ${m?.state ?? 'deleted'}`,
              ),
            ),
          );
      }, input.timeoutMs);
      const unwatch = this.ctx.store.watch((batch) => {
        for (const change of batch.changes) {
          if (change.collection === 'machines' && change.key === id)
            check(change.doc as MachineRecord | undefined);
        }
      });
      abort?.addEventListener('abort', onAbort);
      this.#open.add(finish);
      // Read after subscribing, so a change between the two cannot be missed.
      void this.ctx.store.read((tx) => tx.machines.get(id)).then(check, (error: Error) => finish(error));
    });
  }

  /** Ends every open wait (clients retry them): a step of shutdown. */
  close(): void {
    for (const finish of [...this.#open]) {
      finish(new HangarError('unavailable', 'hangard is shutting down; retry the wait'));
    }
  }
}

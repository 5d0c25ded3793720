/**
 * The runtime steps of a machine: boot, stop, destroy. Each records the state before and after the step,
 * and a step that fails leaves the machine `failed` with the reason, never half-way. Called only from
 * inside the machine's queue (MachinesService owns it).
 */
import type { ExitInfo, MachineRuntime, MachineSpec } from '../runtime/runtime.js';
import { crashPoint } from '../shared/crash-points.js';
import { HangarError } from '../shared/errors.js';
import type { AppRecord, MachineRecord } from '../store/records.js';
import type { ReadTx, WriteTx } from '../store/store.js';
import { isoNow, limitsIn, type PlatformContext } from './context.js';
import { checkOwnRegistrySpace } from './image-rules.js';
import { type EventSource, recordEvent, setMachineState } from './machine-events.js';
import { NO_RUNTIME_MESSAGE, pinnedImage } from './machine-rules.js';
import { machineSpec, stopSettings } from './machine-spec.js';
import { admitOnHost, type GuestClaim } from './quotas.js';
import type { Reservations } from './reservations.js';

/** The scope of the host's capacity in the machines' Reservations: one host, one scope. */
export const HOST_CAPACITY = 'host';

export class MachineLifecycle {
  constructor(
    private readonly ctx: PlatformContext,
    /** Machines admitted on the host whose records do not hold their guest yet (see quotas.ts). */
    private readonly admitted: Reservations<GuestClaim>,
  ) {}

  requireRuntime(): MachineRuntime {
    if (!this.ctx.runtime) throw new HangarError('runtime_unavailable', NO_RUNTIME_MESSAGE);
    return this.ctx.runtime;
  }

  /**
   * Boots the current version: prepare the image, start the workload (or thaw a suspended one). The
   * write that makes the machine `starting` (from then on its record holds its guest on the host) is the
   * admission: it spends the claim of a machine admitted earlier (a create, an update), and checks the
   * host's capacity for any other, under the capacity lock, so two boots never both take the last room.
   * A refusal throws insufficient_capacity and leaves the machine as it was. `before` records what led
   * to the boot (the proxy's wake event) in the boot's first write: each write is a synced commit, and a
   * wake waits for every one of them.
   */
  async boot(machineId: string, before?: (tx: WriteTx, machine: MachineRecord) => void): Promise<void> {
    const runtime = this.requireRuntime();
    const suspended = await this.ctx.store.read((tx) => tx.machines.get(machineId)!);
    if (suspended.state === 'suspended') {
      // A suspended machine holds its guest on the host already (it is frozen, not freed): a thaw takes
      // no more room, so no admission, and it takes milliseconds, so no `starting` is recorded on the
      // way (a crash in between leaves a running container recorded suspended, which reconcile settles
      // as started).
      await this.orFail(machineId, 'start', () => runtime.resume(machineId), before);
      await setMachineState(this.ctx, machineId, 'started', 'start', 'flyd', undefined, before);
      return;
    }
    const machine = await this.admitted.settle(HOST_CAPACITY, machineId, (claim) =>
      this.ctx.store.write((tx) => {
        const current = tx.machines.get(machineId)!;
        if (claim === undefined) {
          const held = this.admitted.held(HOST_CAPACITY);
          admitOnHost(tx, limitsIn(this.ctx).capacity, current.config, current.id, held);
        }
        before?.(tx, current);
        tx.machines.update({ ...current, state: 'starting', updatedAt: isoNow(this.ctx) });
        return current;
      }),
    );
    await this.orFail(machineId, 'start', async () => {
      try {
        // Derived inside the step, so a spec that cannot be built (a missing secret) fails the machine with its reason.
        const spec = await this.ctx.store.read((tx) => {
          const app = tx.apps.get(machine.appId)!;
          // Again at boot: the image of a machine made before these rules, or a pinned digest, is checked too.
          checkOwnRegistrySpace(machine.config.image, app.name, this.ctx.registryPolicy);
          return this.#spec(tx, app, machine);
        });
        const imageRef = await runtime.prepare(spec);
        if (imageRef.digest !== machine.imageRef?.digest) {
          await this.ctx.store.write((tx) =>
            tx.machines.update({ ...tx.machines.get(machineId)!, imageRef }),
          );
        }
        await runtime.start(spec);
      } catch (error) {
        // The lower layers say whose fault a failure is: the machine's own (its image, its command: 412)
        // or the host's (a tool that failed: 500). Anything uncoded (a file system error) is the host's.
        if (HangarError.is(error)) throw error;
        throw new HangarError(
          'internal',
          `machine ${machineId} failed to start: ${(error as Error).message}`,
          {
            cause: error,
          },
        );
      }
    });
    await setMachineState(this.ctx, machineId, 'started', 'start', 'flyd');
  }

  /**
   * Stops the workload with the machine's stop settings (or the caller's), records the exit, and leaves
   * the machine `stopping`: the caller names the state it ends in.
   */
  async stopWorkload(
    machine: MachineRecord,
    reason: string,
    override: { signal?: string | undefined; timeoutMs?: number | undefined; source?: EventSource } = {},
  ): Promise<void> {
    const runtime = this.requireRuntime();
    const settings = stopSettings(machine.config);
    await setMachineState(this.ctx, machine.id, 'stopping', reason, override.source ?? 'user');
    const exit = await this.orFail(machine.id, reason, () =>
      runtime.stop(machine.id, {
        signal: override.signal ?? settings.signal,
        timeoutMs: override.timeoutMs ?? settings.timeoutMs,
      }),
    );
    await this.ctx.store.write((tx) =>
      recordEvent(this.ctx, tx, machine, 'exit', 'stopped', 'flyd', { exit_event: exitEvent(exit) }),
    );
  }

  /**
   * Records `destroying`, removes everything of the machine from the host, then records `destroyed` with
   * its volumes detached and its lease dropped. `afterRestart` finishes a destroy that a crash interrupted
   * (the machine was found `destroying` at start): the same steps, and the event says so.
   */
  async destroy(
    machine: MachineRecord,
    source: EventSource = 'user',
    options: { afterRestart?: boolean } = {},
  ): Promise<void> {
    // The runtime's destroy is idempotent: it also cleans up after a machine that never booted, or one
    // whose destroy a crash cut short.
    const runtime = this.ctx.runtime;
    if (runtime) {
      if (machine.state !== 'destroying') {
        await setMachineState(this.ctx, machine.id, 'destroying', 'destroy', source);
      }
      crashPoint('destroy-recorded');
      await this.orFail(machine.id, 'destroy', () => runtime.destroy(machine.id));
    }
    await this.ctx.store.write((tx) => {
      const current = tx.machines.get(machine.id)!;
      const destroyed: MachineRecord = { ...current, state: 'destroyed', updatedAt: isoNow(this.ctx) };
      tx.machines.update(destroyed);
      for (const volume of tx.volumes.list({ attachedMachineId: machine.id })) {
        tx.volumes.update({ ...volume, attachedMachineId: null });
      }
      tx.leases.delete(machine.id);
      recordEvent(
        this.ctx,
        tx,
        destroyed,
        'destroy',
        'destroyed',
        source,
        options.afterRestart
          ? { recovered: true, note: 'destroy finished after a hangard restart' }
          : undefined,
      );
    });
  }

  /**
   * Runs a runtime step; if it throws, the machine is marked failed with the reason, never left mid-way
   * (with whatever `before` records first, when nothing recorded it yet).
   */
  async orFail<T>(
    machineId: string,
    eventType: string,
    step: () => Promise<T>,
    before?: (tx: WriteTx, machine: MachineRecord) => void,
  ): Promise<T> {
    try {
      return await step();
    } catch (error) {
      await setMachineState(
        this.ctx,
        machineId,
        'failed',
        eventType,
        'flyd',
        { error: (error as Error).message },
        before,
      );
      throw error;
    }
  }

  #spec(tx: ReadTx, app: AppRecord, machine: MachineRecord): MachineSpec {
    const secrets = new Map(
      tx.secrets
        .list({ appId: app.id })
        .map((s) => [s.name, this.ctx.vault.unseal(s.sealed, `${app.id}/${s.name}`)] as const),
    );
    return machineSpec({ app, machine, image: pinnedImage(machine), secrets });
  }
}

/** An exit as Fly's `exit_event` reports it. */
export function exitEvent(exit: ExitInfo) {
  return {
    exit_code: exit.exitCode,
    signal: exit.signal,
    oom_killed: exit.oomKilled,
    requested_stop: exit.requestedStop,
    exited_at: new Date(exit.exitedAt).toISOString(),
  };
}

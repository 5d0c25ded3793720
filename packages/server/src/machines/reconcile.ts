/**
 * At start: brings the store and the runtime back into agreement after hangard was away. Running
 * containers were re-adopted by the runtime; machines whose workload exited or vanished meanwhile go
 * through the same exit handling as a live exit; containers nobody knows were removed by the runtime.
 */
import type { RecoveredMachine } from '../runtime/runtime.js';
import type { PlatformContext } from './context.js';
import type { ExitHandler } from './exits.js';
import { setMachineState } from './machine-events.js';
import { allocatePrivateIpv4, allocateSixPn, needsPrivateIpv4 } from './machine-rules.js';

/**
 * Machines recorded before private networks existed get their addresses now, once; machines without a
 * private IPv4 address (recorded before it existed, or outside a range the operator changed) get one.
 * The host's networking follows the store and plugs the address in (net/host-network.ts).
 */
export async function addressUnaddressedMachines(ctx: PlatformContext): Promise<void> {
  await ctx.store.write((tx) => {
    for (const machine of tx.machines.list()) {
      if (machine.state === 'destroyed') continue;
      if (machine.machineNumber === undefined) {
        const app = tx.apps.get(machine.appId);
        if (app) tx.machines.update({ ...machine, ...allocateSixPn(tx, app, ctx) });
      } else if (needsPrivateIpv4(machine, ctx)) {
        tx.machines.update({ ...machine, privateIpv4: allocatePrivateIpv4(tx, ctx) });
      }
    }
  });
}

/** Settles one machine the runtime reported on; runs inside the machine's queue. */
export async function settleRecovered(
  ctx: PlatformContext,
  exits: ExitHandler,
  found: RecoveredMachine,
): Promise<void> {
  const machine = await ctx.store.read((tx) => tx.machines.get(found.machineId));
  if (!machine) return;
  if (found.status === 'running' && machine.state !== 'started') {
    await setMachineState(ctx, machine.id, 'started', 'start', 'hangar', { recovered: true });
  } else if (found.status === 'paused' && machine.state !== 'suspended') {
    await setMachineState(ctx, machine.id, 'suspended', 'suspend', 'hangar', { recovered: true });
  } else if (found.status === 'exited' || found.status === 'missing') {
    const exit = found.exit ?? {
      exitCode: null,
      signal: null,
      oomKilled: false,
      requestedStop: false,
      exitedAt: ctx.now(),
    };
    await exits.handle(
      machine.id,
      exit,
      found.status === 'missing' ? 'its container vanished while hangard was down' : undefined,
    );
  }
}

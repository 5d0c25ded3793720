/** Machine state changes and the events that record them: every module of the orchestrator writes through here. */
import { newUlid } from '../shared/ids.js';
import type { JsonObject, MachineEventRecord, MachineRecord, MachineState } from '../store/records.js';
import type { WriteTx } from '../store/store.js';
import { isoNow, type PlatformContext } from './context.js';

export type EventSource = MachineEventRecord['source'];

export function recordEvent(
  ctx: PlatformContext,
  tx: WriteTx,
  machine: MachineRecord,
  type: string,
  status: string,
  source: EventSource,
  request?: JsonObject,
): void {
  tx.machineEvents.insert({
    id: newUlid(),
    machineId: machine.id,
    type,
    status,
    source,
    timestamp: ctx.now(),
    ...(request ? { request } : {}),
  });
}

/**
 * Moves the machine to `state` and records the event, in one transaction (with whatever `before` records
 * first).
 */
export async function setMachineState(
  ctx: PlatformContext,
  machineId: string,
  state: MachineState,
  eventType: string,
  source: EventSource,
  request?: JsonObject,
  before?: (tx: WriteTx, machine: MachineRecord) => void,
): Promise<void> {
  await ctx.store.write((tx) => {
    const current = tx.machines.get(machineId)!;
    before?.(tx, current);
    const next = { ...current, state, updatedAt: isoNow(ctx) };
    tx.machines.update(next);
    recordEvent(ctx, tx, next, eventType, state, source, request);
  });
}

import type { MachineState } from '../store/records.js';

/** The user actions and the states each may begin from (fly-semantics §3). */
export type MachineAction =
  | 'start'
  | 'stop'
  | 'suspend'
  | 'restart'
  | 'signal'
  | 'update'
  | 'destroy'
  | 'cordon';

const ALLOWED_FROM: Record<MachineAction, readonly MachineState[]> = {
  start: ['created', 'stopped', 'suspended', 'failed'],
  stop: ['created', 'started', 'starting', 'suspended', 'failed', 'stopped'],
  suspend: ['started'],
  restart: ['started'],
  signal: ['started'],
  update: ['created', 'started', 'stopped', 'suspended', 'failed'],
  destroy: ['created', 'stopped', 'suspended', 'failed'],
  cordon: ['created', 'starting', 'started', 'stopping', 'stopped', 'suspending', 'suspended', 'failed'],
};

export function canBegin(action: MachineAction, state: MachineState): boolean {
  return ALLOWED_FROM[action].includes(state);
}

/** States a machine rests in: `wait` may target them. */
export const WAITABLE_STATES = ['started', 'stopped', 'suspended', 'destroyed', 'created', 'failed'] as const;
export type WaitableState = (typeof WAITABLE_STATES)[number];

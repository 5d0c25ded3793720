// Process groups, as flyctl reads them: the `fly_process_group` metadata key (legacy `process_group`);
// a machine without one belongs to `app`, flyctl's default group.

import type { Machine, MachineConfig } from '@hangar/sdk';

export const DEFAULT_GROUP = 'app';

export function configGroup(config: MachineConfig | undefined): string {
  return config?.metadata?.fly_process_group ?? config?.metadata?.process_group ?? DEFAULT_GROUP;
}

export function processGroup(m: Machine): string {
  return configGroup(m.config ?? m.incomplete_config);
}

/** Groups flyctl leaves out of counts: release commands, tests and consoles are throwaway machines. */
export const RESERVED_GROUPS = new Set([
  'fly_app_release_command',
  'fly_app_test_machine_command',
  'fly_app_console',
]);

/** Machines that count for status and scale: not destroyed, not throwaway. */
export function appMachines(machines: Machine[]): Machine[] {
  return machines.filter(
    (m) => m.state !== 'destroyed' && m.state !== 'destroying' && !RESERVED_GROUPS.has(processGroup(m)),
  );
}

// `scale vm` and `scale memory`: the same guest change on every machine of the app (or of one process
// group), each through the leased machine update.

import type { MachineConfig, MachineGuest } from '@hangar/sdk';
import type { Ctx } from '../../context.js';
import { appMachines, processGroup } from '../../groups.js';
import { updateMachine } from '../../machine-update.js';

const WAIT_MS = 120_000;

export async function resizeMachines(
  ctx: Ctx<{ processGroup?: string }>,
  guest: (current: MachineGuest | undefined) => MachineGuest,
  reason: string,
): Promise<void> {
  const { app, client, out, opts } = ctx;
  const appName = app();
  const api = client();
  const machines = appMachines(await api.machines.list(appName)).filter(
    (m) => !opts.processGroup || processGroup(m) === opts.processGroup,
  );
  if (machines.length === 0) {
    out.line(
      opts.processGroup
        ? `No machines in process group ${opts.processGroup}`
        : `No machines in app ${appName}`,
    );
    return;
  }
  const results = [];
  for (const m of machines) {
    out.note(`Updating machine ${m.id}...`);
    const result = await updateMachine(
      api,
      appName,
      m.id,
      (config: MachineConfig) => {
        const { size: _preset, ...rest } = config;
        return { ...rest, guest: guest(config.guest) };
      },
      out,
      { waitMs: WAIT_MS, reason },
    );
    results.push(result);
  }
  if (out.json) return out.printJson(results.map((r) => r.machine));
  for (const { machine, updated } of results) {
    const g = machine.config?.guest;
    out.line(
      `${machine.id}: ${g?.cpu_kind ?? 'shared'} ${g?.cpus ?? 1} CPU, ${g?.memory_mb ?? '?'} MB${updated ? '' : ' (unchanged)'}`,
    );
  }
}

// Updating one machine the way flyctl does: lease it, read it, change its config, POST the whole config
// with the lease nonce and `current_version`, wait for the new version to start, release the lease.
// `machine update`, `scale vm|memory` and `secrets deploy` share it.

import { isMachinesApiError, type Machine, type MachineConfig, type MachinesClient } from '@hangar/sdk';
import { CliError } from './errors.js';
import { diffConfig } from './machine-config.js';
import type { Output } from './output.js';

/** Long enough for an update and a reboot; the lease is released as soon as the work is done. */
const LEASE_TTL_SECONDS = 120;

export interface UpdateMachineOptions {
  /** Update without starting (`skip_launch`): a started machine is left stopped. */
  skipStart?: boolean;
  /** Do not wait for the new version to start. */
  detach?: boolean;
  /** How long the new version may take to start. */
  waitMs: number;
  /** Update even when the config does not change (a new version boots with the latest secrets). */
  force?: boolean;
  minSecretsVersion?: number;
  /** What the lease says it is for (shown to whoever finds the machine leased). */
  reason: string;
}

export interface UpdateResult {
  machine: Machine;
  /** One line per changed leaf of the config; empty when nothing changed. */
  changes: string[];
  updated: boolean;
}

export async function updateMachine(
  api: MachinesClient,
  app: string,
  id: string,
  change: (config: MachineConfig, machine: Machine) => MachineConfig,
  out: Output,
  options: UpdateMachineOptions,
): Promise<UpdateResult> {
  const lease = await api.machines.acquireLease(app, id, {
    ttl: LEASE_TTL_SECONDS,
    description: options.reason,
  });
  try {
    const machine = await api.machines.get(app, id);
    if (!machine.config) {
      // Fly leaves `config` out when the host is unreachable (`host_status`); updating blind would lose it.
      throw new CliError(
        `machine ${id} has no config to update (host status: ${machine.host_status ?? 'unknown'})`,
        `try again once \`hangar machine status ${id} -a ${app}\` shows its config`,
      );
    }
    const config = change(machine.config, machine);
    const changes = diffConfig(machine.config, config);
    if (changes.length === 0 && !options.force) return { machine, changes, updated: false };

    const wasStarted = machine.state === 'started';
    const updated = await api.machines.update(
      app,
      id,
      {
        config,
        current_version: machine.instance_id,
        ...(options.minSecretsVersion === undefined
          ? {}
          : { min_secrets_version: options.minSecretsVersion }),
        // A machine that was not running stays that way, as with flyctl.
        ...(options.skipStart || !wasStarted ? { skip_launch: true } : {}),
      },
      { nonce: lease.nonce },
    );
    if (wasStarted && !options.skipStart && !options.detach) {
      out.note(`Waiting for ${id} to start version ${updated.instance_id}...`);
      await api.waitForState(app, id, 'started', {
        timeoutMs: options.waitMs,
        version: updated.instance_id,
        instanceId: updated.instance_id,
      });
    }
    return { machine: await api.machines.get(app, id), changes, updated: true };
  } finally {
    // A lease that already ran out is fine; anything else would leave the machine locked, so say it.
    await api.machines.releaseLease(app, id, lease.nonce).catch((err: unknown) => {
      if (!isMachinesApiError(err, 'not_found')) {
        out.note(`Warning: could not release the lease on ${id} (it expires in ${LEASE_TTL_SECONDS} s)`);
      }
    });
  }
}

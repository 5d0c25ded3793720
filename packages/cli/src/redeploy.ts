// After a secrets change, machines still run with the old values until they are updated. This is what
// `fly secrets set` (without --stage) and `fly secrets deploy` do: update every machine with its current
// config, one at a time, each leased while it is updated, waiting for each started machine to come back
// with a new version (whose boot reads the app's secrets as they are now).

import type { MachinesClient } from '@hangar/sdk';
import { updateMachine } from './machine-update.js';
import type { Output } from './output.js';

/** How long one machine may take to come back after its update. */
const RESTART_WAIT_MS = 120_000;

/**
 * Updates every machine of `app` with its own config. `secretsVersion`, when known (after a set), is
 * sent as `min_secrets_version`, so a machine can never boot with secrets older than that change.
 */
export async function redeployForSecrets(
  client: MachinesClient,
  app: string,
  secretsVersion: number | undefined,
  out: Output,
): Promise<void> {
  const machines = (await client.machines.list(app)).filter(
    (m) => m.config && m.state !== 'destroyed' && m.state !== 'destroying',
  );
  if (machines.length === 0) {
    out.line('Secrets are staged for the first deployment');
    return;
  }
  for (const m of machines) {
    out.note(
      secretsVersion === undefined
        ? `Updating machine ${m.id} with the app's current secrets...`
        : `Updating machine ${m.id} with secrets version ${secretsVersion}...`,
    );
    await updateMachine(client, app, m.id, (config) => config, out, {
      force: true,
      minSecretsVersion: secretsVersion,
      waitMs: RESTART_WAIT_MS,
      reason: 'hangar secrets deploy',
    });
  }
  out.line(`Updated ${machines.length} machine${machines.length === 1 ? '' : 's'} of ${app}`);
}

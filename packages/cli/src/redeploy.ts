// After a secrets change, machines still run with the old values until they are updated. This is what
// `fly secrets set` does without --stage: update every machine with its current config and the new
// `min_secrets_version`, one at a time, waiting for each started machine to come back.

import type { MachinesClient } from '@hangar/sdk';
import type { Output } from './output.js';

/** How long one machine may take to come back after its update. */
const RESTART_WAIT_MS = 120_000;

export async function redeployForSecrets(
  client: MachinesClient,
  app: string,
  secretsVersion: number,
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
    if (!m.config) continue;
    const wasStarted = m.state === 'started';
    out.note(`Updating machine ${m.id} with secrets version ${secretsVersion}...`);
    const updated = await client.machines.update(app, m.id, {
      config: m.config,
      current_version: m.instance_id,
      min_secrets_version: secretsVersion,
      // A machine that was not running stays that way (flyctl does the same for stopped machines).
      skip_launch: !wasStarted,
    });
    if (wasStarted) {
      await client.waitForState(app, m.id, 'started', {
        timeoutMs: RESTART_WAIT_MS,
        instanceId: updated.instance_id,
        version: updated.instance_id,
      });
    }
  }
  out.line(`Updated ${machines.length} machine${machines.length === 1 ? '' : 's'} of ${app}`);
}

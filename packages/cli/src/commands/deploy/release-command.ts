// `[deploy] release_command`: run once, before any machine changes, in a temporary machine of the new
// version (no services, no volumes, no restart, not in DNS, RELEASE_COMMAND=1), as flyctl does. The
// deploy goes on only if it exits 0; its output is shown either way.

import type { MachineConfig, MachineGuest, MachinesClient } from '@hangar/sdk';
import { CliError } from '../../errors.js';
import { METADATA, RELEASE_COMMAND_GROUP } from '../../fly-toml/index.js';

export interface ReleaseCommandRequest {
  app: string;
  /** The new version's config of the first process group: image, env, files. */
  base: MachineConfig;
  command: string[];
  guest?: MachineGuest;
  timeoutMs: number;
  region?: string;
  progress(line: string): void;
}

export async function runReleaseCommand(
  client: MachinesClient,
  request: ReleaseCommandRequest,
): Promise<number> {
  const { app, base, command, progress } = request;
  const config: MachineConfig = {
    image: base.image,
    env: { ...base.env, RELEASE_COMMAND: '1' },
    init: { ...base.init, cmd: command },
    guest: request.guest ?? base.guest,
    restart: { policy: 'no' },
    dns: { skip_registration: true },
    metadata: { ...base.metadata, [METADATA.processGroup]: RELEASE_COMMAND_GROUP },
  };
  if (base.files) config.files = base.files;
  if (base.stop_config) config.stop_config = base.stop_config;
  progress(`Running release command: ${command.join(' ')}`);
  const machine = await client.machines.launch(app, { config, region: request.region });
  try {
    await client.waitForState(app, machine.id, ['stopped', 'failed'], {
      timeoutMs: request.timeoutMs,
      version: machine.instance_id,
    });
    const lines: string[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (const line of client.machines.logs(
        app,
        machine.id,
        { tail: 200 },
        { signal: controller.signal },
      )) {
        lines.push(line.message);
      }
    })().catch(() => undefined);
    await Promise.race([reading, new Promise((r) => setTimeout(r, 5000))]);
    controller.abort();
    for (const line of lines) progress(`  ${line}`);
    const events = await client.machines.events(app, machine.id);
    const exit = events.find((e) => e.type === 'exit')?.request?.exit_event;
    const current = await client.machines.get(app, machine.id);
    const code = exit?.exit_code ?? (current.state === 'failed' ? 1 : 0);
    if (current.state === 'failed' || code !== 0) {
      throw new CliError(
        `release command failed (exit ${code}): nothing was deployed, every machine still runs the previous version`,
        'fix the command (its output is above) and deploy again, or skip it once with --skip-release-command',
      );
    }
    progress('Release command finished');
    return code;
  } finally {
    await client.machines.destroy(app, machine.id, { force: true }).catch(() => undefined);
  }
}

import type { MachineEvent } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { formatTime, renderTable } from '../../output.js';
import { machineImage } from './shared.js';

/** What an exit event says about why the machine stopped. */
function eventInfo(e: MachineEvent): string {
  const exit = e.request?.exit_event;
  if (!exit) return '';
  const parts = [`exit_code=${exit.exit_code ?? '?'}`];
  if (exit.oom_killed) parts.push('oom_killed=true');
  if (exit.requested_stop) parts.push('requested_stop=true');
  return parts.join(',');
}

export default defineVerb({
  usage: 'status <id>',
  aliases: ['show'],
  summary: 'Show a machine’s details and recent events',
  examples: ['hangar machine status 148ed193b95e89 -a acme'],
  app: true,
  json: true,
  async run({ app, arg, client, out }) {
    const m = await client().machines.get(app(), arg(0));
    out.show(m, [
      ['ID', m.id],
      ['Name', m.name],
      ['State', m.state],
      ['Cordoned', m.cordoned ? 'yes' : 'no'],
      ['Region', m.region],
      ['Image', machineImage(m)],
      ['Version', m.instance_id],
      ['Private IP', m.private_ip],
      ['CPUs', m.config?.guest?.cpus],
      ['Memory', m.config?.guest?.memory_mb === undefined ? undefined : `${m.config.guest.memory_mb} MB`],
      ['Created', formatTime(m.created_at)],
      ['Updated', formatTime(m.updated_at)],
    ]);
    if (out.json || !m.events?.length) return;
    out.line('');
    out.line('Events');
    out.line(
      renderTable(
        ['State', 'Event', 'Source', 'Timestamp', 'Info'],
        m.events.slice(0, 10).map((e) => [e.status, e.type, e.source, formatTime(e.timestamp), eventInfo(e)]),
      ),
    );
  },
});

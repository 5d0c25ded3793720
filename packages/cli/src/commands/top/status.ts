import type { CheckStatus, Machine } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { appMachines, processGroup } from '../../groups.js';
import { formatTime, renderTable } from '../../output.js';
import { machineImage } from '../machine/shared.js';

/** `2 total, 1 passing, 1 critical`, as flyctl shows it. */
export function checksSummary(checks: CheckStatus[] | undefined): string {
  if (!checks?.length) return '';
  const counts = new Map<string, number>();
  for (const c of checks) counts.set(c.status, (counts.get(c.status) ?? 0) + 1);
  return [`${checks.length} total`, ...[...counts].map(([status, n]) => `${n} ${status}`)].join(', ');
}

export default defineVerb<{ all?: boolean }>({
  usage: 'status',
  summary: 'Show an app and its machines: process group, version, region, state, checks',
  examples: ['hangar status -a acme', 'hangar status -a acme --json'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--all', 'include throwaway machines (release commands, consoles)');
  },
  async run({ app, opts, client, out }) {
    const name = app();
    const api = client();
    const [info, listed] = await Promise.all([api.apps.get(name), api.machines.list(name)]);
    const machines = opts.all ? listed.filter((m) => m.state !== 'destroyed') : appMachines(listed);
    machines.sort((a, b) => processGroup(a).localeCompare(processGroup(b)) || a.id.localeCompare(b.id));
    if (out.json) return out.printJson({ app: info, machines });
    out.show(info, [
      ['App', info.name],
      ['Owner', info.organization?.slug],
      ['Network', info.network],
      ['Status', info.status],
    ]);
    out.line('');
    if (machines.length === 0) {
      out.line(`No machines; create one with \`hangar machine run IMAGE -a ${name}\``);
      return;
    }
    out.line('Machines');
    out.line(
      renderTable(
        ['Process', 'ID', 'Version', 'Region', 'State', 'Checks', 'Image', 'Last updated'],
        machines.map((m: Machine) => [
          processGroup(m),
          m.id,
          m.instance_id,
          m.region,
          m.cordoned ? `${m.state} (cordoned)` : m.state,
          checksSummary(m.checks),
          machineImage(m),
          formatTime(m.updated_at),
        ]),
      ),
    );
  },
});

import { defineVerb } from '../../command.js';
import { appMachines, processGroup } from '../../groups.js';

interface GroupScale {
  process_group: string;
  count: number;
  cpu_kind: string;
  cpus: number;
  memory_mb: number;
  regions: string[];
}

export default defineVerb({
  usage: 'show',
  summary: 'Show each process group’s machine count, VM size and regions',
  examples: ['hangar scale show -a acme', 'hangar scale show -a acme --json'],
  app: true,
  json: true,
  async run({ app, client, out }) {
    const name = app();
    const groups = new Map<string, GroupScale>();
    for (const m of appMachines(await client().machines.list(name))) {
      const key = processGroup(m);
      const guest = m.config?.guest;
      const g = groups.get(key) ?? {
        process_group: key,
        count: 0,
        cpu_kind: guest?.cpu_kind ?? 'shared',
        cpus: guest?.cpus ?? 1,
        memory_mb: guest?.memory_mb ?? 256,
        regions: [],
      };
      g.count++;
      // Machines of a group may differ while a scale is under way: show the largest.
      g.cpus = Math.max(g.cpus, guest?.cpus ?? 1);
      g.memory_mb = Math.max(g.memory_mb, guest?.memory_mb ?? 256);
      if (!g.regions.includes(m.region)) g.regions.push(m.region);
      groups.set(key, g);
    }
    out.list(
      [...groups.values()].sort((a, b) => a.process_group.localeCompare(b.process_group)),
      [
        { header: 'Process group', value: (g) => g.process_group },
        { header: 'Count', value: (g) => g.count },
        { header: 'Kind', value: (g) => g.cpu_kind },
        { header: 'CPUs', value: (g) => g.cpus },
        { header: 'Memory', value: (g) => `${g.memory_mb} MB` },
        { header: 'Regions', value: (g) => g.regions.join(',') },
      ],
      `No machines in app ${name}`,
    );
  },
});

import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { intFlag } from '../../flags.js';
import { resizeMachines } from './resize.js';

export default defineVerb<{ processGroup?: string }>({
  usage: 'memory <MB>',
  summary: 'Give every machine this much memory',
  description:
    'Set the memory of every machine of the app (or of --process-group), one machine at a time, each ' +
    'rebooted into the new size. CPU kind and count stay.',
  examples: ['hangar scale memory 512 -a acme'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--process-group <name>', 'only this process group');
  },
  async run(ctx) {
    const memory = intFlag(ctx.arg(0), 'memory', 1);
    if (memory === undefined)
      throw new CliError('no memory size given', 'e.g. `hangar scale memory 512 -a APP`');
    await resizeMachines(
      ctx,
      (current) => ({ cpu_kind: 'shared', cpus: 1, ...current, memory_mb: memory }),
      'hangar scale memory',
    );
  },
});

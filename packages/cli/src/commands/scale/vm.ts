import { defineVerb } from '../../command.js';
import { intFlag } from '../../flags.js';
import { VM_SIZES, vmSize } from '../../machine-config.js';
import { resizeMachines } from './resize.js';

export default defineVerb<{ vmMemory?: string; processGroup?: string }>({
  usage: 'vm <size>',
  summary: 'Give every machine a VM size preset (CPU kind, CPUs and memory)',
  description: `Give every machine of the app (or of --process-group) a VM size, one machine at a time, each rebooted into the new size. Sizes: ${Object.keys(VM_SIZES).join(', ')}.`,
  examples: [
    'hangar scale vm shared-cpu-2x -a acme',
    'hangar scale vm performance-1x -a acme --vm-memory 4096',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--vm-memory <MB>', 'memory in megabytes instead of the preset’s');
    cmd.option('--process-group <name>', 'only this process group');
  },
  async run(ctx) {
    const size = vmSize(ctx.arg(0));
    const memory = intFlag(ctx.opts.vmMemory, '--vm-memory');
    await resizeMachines(
      ctx,
      (current) => ({ ...current, ...size, ...(memory ? { memory_mb: memory } : {}) }),
      'hangar scale vm',
    );
  },
});

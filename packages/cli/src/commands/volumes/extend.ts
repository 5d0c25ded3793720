import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { volumeFields } from './shared.js';

export default defineVerb<{ size: string }>({
  usage: 'extend <id>',
  summary: 'Grow a volume (volumes never shrink)',
  examples: [
    'hangar volumes extend vol_4x8kq2w0m1n5z7yp -a acme --size 10',
    'hangar volumes extend vol_4x8kq2w0m1n5z7yp -a acme --size +2',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd.requiredOption('-s, --size <GB>', 'new total size in gigabytes, or +N to add N');
  },
  async run({ app, arg, opts, client, out }) {
    const appName = app();
    const id = arg(0);
    const m = /^(\+)?(\d+)$/.exec(opts.size.trim());
    if (!m || Number(m[2]) < 1)
      throw new CliError(`invalid --size "${opts.size}"`, 'use a whole number of GB, or +N');
    const current = m[1] ? (await client().volumes.get(appName, id)).size_gb : 0;
    const { volume, needs_restart } = await client().volumes.extend(appName, id, current + Number(m[2]));
    if (out.json) return out.printJson({ volume, needs_restart });
    out.show(volume, volumeFields(volume));
    if (needs_restart && volume.attached_machine_id) {
      out.line('');
      out.line(
        `Restart the machine to use the new size: hangar machine restart ${volume.attached_machine_id} -a ${appName}`,
      );
    }
  },
});

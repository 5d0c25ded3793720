import { defineVerb } from '../../command.js';
import { confirm } from '../../confirm.js';

export default defineVerb<{ yes?: boolean }>({
  usage: 'destroy <id>',
  aliases: ['delete', 'remove', 'rm'],
  summary: 'Destroy a volume and its data',
  examples: ['hangar volumes destroy vol_4x8kq2w0m1n5z7yp -a acme --yes'],
  app: true,
  options(cmd) {
    cmd.option('-y, --yes', 'do not ask for confirmation');
  },
  async run(ctx) {
    const app = ctx.app();
    const id = ctx.arg(0);
    await confirm(ctx, `destroy volume ${id} of ${app} and all its data`);
    const volume = await ctx.client().volumes.destroy(app, id);
    ctx.out.line(`Destroyed volume ${id}${volume?.state ? ` (${volume.state})` : ''}`);
  },
});

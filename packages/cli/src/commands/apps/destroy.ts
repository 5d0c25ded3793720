import { defineVerb } from '../../command.js';
import { confirm } from '../../confirm.js';

export default defineVerb<{ yes?: boolean }>({
  usage: 'destroy <name>',
  aliases: ['delete', 'remove', 'rm'],
  summary: 'Destroy an app with its machines, volumes, secrets and IPs',
  examples: ['hangar apps destroy acme --yes'],
  options(cmd) {
    cmd.option('-y, --yes', 'do not ask for confirmation');
  },
  async run(ctx) {
    const name = ctx.arg(0);
    await confirm(ctx, `destroy app ${name} and everything in it`);
    // force: stop and delete running machines too, as `fly apps destroy` does.
    await ctx.client().apps.delete(name, { force: true });
    ctx.out.line(`Destroyed app ${name}`);
  },
});

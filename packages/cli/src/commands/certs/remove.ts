import { defineVerb } from '../../command.js';
import { confirm } from '../../confirm.js';

export default defineVerb<{ yes?: boolean }>({
  usage: 'remove <hostname>',
  aliases: ['delete', 'rm'],
  summary: 'Remove a custom hostname and its certificate from an app',
  examples: ['hangar certs remove www.example.com -a acme --yes'],
  app: true,
  options(cmd) {
    cmd.option('-y, --yes', 'do not ask for confirmation');
  },
  async run(ctx) {
    const name = ctx.app();
    const hostname = ctx.arg(0);
    await confirm(ctx, `remove hostname ${hostname} from app ${name}`);
    await ctx.client().certificates.remove(name, hostname);
    ctx.out.line(`Removed ${hostname} from ${name}`);
  },
});

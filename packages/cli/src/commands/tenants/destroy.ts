import { defineVerb } from '../../command.js';
import { confirm } from '../../confirm.js';
import { CliError } from '../../errors.js';
import { getTenantApp } from './shared.js';

export default defineVerb<{ yes?: boolean }>({
  usage: 'destroy <customer>',
  aliases: ['delete', 'rm'],
  summary: 'Destroy a customer’s app with its machines, volumes, secrets and addresses',
  examples: ['hangar tenants destroy acme --yes'],
  options(cmd) {
    cmd.option('-y, --yes', 'do not ask for confirmation');
  },
  async run(ctx) {
    const customer = ctx.arg(0);
    const client = ctx.client();
    // Only tenants: a mistyped name never removes an app that is not one.
    const app = await getTenantApp(client, customer);
    if (!app) throw new CliError(`no tenant ${customer}`, 'run `hangar tenants list`');
    await confirm(ctx, `destroy tenant ${customer} and everything in it`);
    await client.apps.delete(customer, { force: true });
    ctx.out.line(`Destroyed tenant ${customer}`);
  },
});

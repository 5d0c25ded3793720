import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { describeTenant, getTenantApp } from './shared.js';

export default defineVerb({
  usage: 'show <customer>',
  aliases: ['status'],
  summary: 'Show a customer’s app: network, Flycast addresses, secrets and machines',
  examples: ['hangar tenants show acme', 'hangar tenants show acme --json'],
  json: true,
  async run(ctx) {
    const customer = ctx.arg(0);
    const client = ctx.client();
    const app = await getTenantApp(client, customer);
    if (!app) throw new CliError(`no tenant ${customer}`, 'run `hangar tenants list`');
    const view = await describeTenant(client, app);
    ctx.out.show(view, [
      ['Customer', view.customer],
      ['Network', view.network],
      ['Flycast', view.flycast.map((f) => `${f.ip} (from ${f.network})`).join(', ')],
      ['Secrets', view.secrets.join(', ')],
      ['Machines', view.machines.map((m) => `${m.id} ${m.group} ${m.state}`).join(', ')],
    ]);
  },
});

import { cloneMachine } from '../../clone.js';
import { defineVerb } from '../../command.js';
import { confirm } from '../../confirm.js';
import { CliError } from '../../errors.js';
import { intFlag } from '../../flags.js';
import { planScale } from '../../scale-plan.js';

export default defineVerb<{ region?: string; processGroup?: string; yes?: boolean; waitTimeout: string }>({
  usage: 'count <count>',
  summary: 'Run this many machines in each process group: clone to grow, destroy the excess',
  description:
    'Set how many machines each process group runs (only --process-group’s, when given), counted in ' +
    '--region when given. New machines are clones of one of the group’s machines (a started one, the ' +
    'newest), placed in --region or the source’s region; a machine with a volume gets an unattached ' +
    'volume of the same name, else a new one. Excess machines are destroyed (stopped ones first, then the ' +
    'newest), after a confirmation; their volumes stay, unattached, for the next scale-up.',
  examples: ['hangar scale count 3 -a acme', 'hangar scale count 1 -a acme --process-group worker --yes'],
  app: true,
  json: true,
  options(cmd) {
    cmd
      .option('-r, --region <code>', 'count and create machines in this region')
      .option('--process-group <name>', 'scale only this process group')
      .option('-y, --yes', 'do not ask before destroying machines')
      .option('--wait-timeout <seconds>', 'how long each new machine may take to start', '120');
  },
  async run(ctx) {
    const { app, arg, opts, client, out } = ctx;
    const appName = app();
    const count = intFlag(arg(0), 'count', 0);
    if (count === undefined) throw new CliError('no count given', 'e.g. `hangar scale count 2 -a APP`');
    const api = client();
    const plans = planScale(await api.machines.list(appName), count, {
      group: opts.processGroup,
      region: opts.region,
    });
    const doomed = plans.flatMap((p) => p.destroy);
    for (const p of plans) {
      const where = p.region ? ` in ${p.region}` : '';
      const change = p.create ? `+${p.create}` : p.destroy.length ? `-${p.destroy.length}` : 'no change';
      out.note(`${p.group}${where}: ${p.before} -> ${p.after} machines (${change})`);
    }
    if (doomed.length)
      await confirm(
        ctx,
        `destroy ${doomed.length} machine${doomed.length === 1 ? '' : 's'} of ${appName} (${doomed.map((m) => m.id).join(', ')})`,
      );

    const waitMs = (intFlag(opts.waitTimeout, '--wait-timeout') ?? 120) * 1000;
    const taken = new Set<string>();
    const report = [];
    for (const p of plans) {
      const created: string[] = [];
      for (let i = 0; i < p.create && p.source; i++) {
        const m = await cloneMachine(api, appName, p.source, out, {
          region: p.region,
          reuseUnattached: true,
          taken,
          waitMs,
        });
        created.push(m.id);
      }
      for (const m of p.destroy) {
        // Leased, as flyctl does, so a deploy running at the same moment sees the machine taken.
        const lease = await api.machines.acquireLease(appName, m.id, {
          ttl: 60,
          description: 'hangar scale count',
        });
        await api.machines.destroy(appName, m.id, { force: true }, { nonce: lease.nonce });
        out.note(`Destroyed machine ${m.id}`);
      }
      report.push({
        process_group: p.group,
        region: p.region ?? null,
        before: p.before,
        after: p.after,
        created,
        destroyed: p.destroy.map((m) => m.id),
      });
    }
    if (out.json) return out.printJson(report);
    for (const r of report) {
      out.line(
        `${r.process_group}: ${r.after} machine${r.after === 1 ? '' : 's'}${r.region ? ` in ${r.region}` : ''}`,
      );
    }
  },
});

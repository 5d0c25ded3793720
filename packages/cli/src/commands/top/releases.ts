import { isMachinesApiError, type Machine, type MachinesClient } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { confirm } from '../../confirm.js';
import type { Ctx } from '../../context.js';
import { CliError } from '../../errors.js';
import { intFlag } from '../../flags.js';
import { appMachines } from '../../groups.js';
import { updateMachine } from '../../machine-update.js';
import { formatTime } from '../../output.js';
import { buildReleases, type MachineHistory, planRollback, type Release } from '../../releases.js';

interface Opts {
  all?: boolean;
  yes?: boolean;
  waitTimeout: string;
}

/** Every machine's versions, destroyed machines included (they are part of the history). */
async function histories(api: MachinesClient, app: string): Promise<MachineHistory[]> {
  const machines = await api.machines.list(app, { includeDeleted: true });
  const out: MachineHistory[] = [];
  for (const machine of machines) {
    try {
      out.push({ machine, versions: await api.machines.versions(app, machine.id) });
    } catch (err) {
      // A machine removed between the list and this call has no history left to show.
      if (!isMachinesApiError(err, 'not_found')) throw err;
    }
  }
  return out;
}

/**
 * The machines that run now, from the listing the history was read from: it includes destroyed machines,
 * which appMachines leaves out as it does for a plain listing, so a second list call would add nothing.
 */
function liveMachines(history: MachineHistory[]): Machine[] {
  return appMachines(history.map((h) => h.machine));
}

/** `releases rollback [VERSION]`: every machine that runs now back to release VERSION (default: the one before the newest). */
async function rollback(ctx: Ctx<Opts>, app: string, version: string | undefined): Promise<void> {
  const { client, out, opts } = ctx;
  const api = client();
  const history = await histories(api, app);
  const releases = buildReleases(history);
  const wanted = version === undefined ? undefined : intFlag(version.replace(/^v/, ''), 'release version');
  const target = wanted === undefined ? releases.at(-2) : releases.find((r) => r.version === wanted);
  if (!target) {
    throw new CliError(
      wanted === undefined
        ? 'there is no earlier release to roll back to'
        : `app ${app} has no release v${wanted}`,
      `list them with \`hangar releases -a ${app}\``,
    );
  }
  const live = liveMachines(history);
  if (live.length === 0) throw new CliError(`app ${app} has no machines to roll back`);
  const steps = planRollback(history, target, live);
  for (const step of steps) {
    out.note(
      step.how === 'own'
        ? `${step.machine.id}: back to its config of v${target.version}`
        : `${step.machine.id}: was not in v${target.version}; keeps its config with image ${target.image}`,
    );
  }
  out.note('Secrets are not versioned: machines boot with the app’s current secrets.');
  await confirm(
    ctx,
    `roll back ${app} to v${target.version} (${target.image}), updating ${steps.length} machine${steps.length === 1 ? '' : 's'}`,
  );
  const waitMs = (intFlag(opts.waitTimeout, '--wait-timeout') ?? 120) * 1000;
  const results = [];
  for (const step of steps) {
    out.note(`Updating machine ${step.machine.id}...`);
    results.push(
      await updateMachine(api, app, step.machine.id, () => step.config, out, {
        waitMs,
        reason: 'hangar releases rollback',
      }),
    );
  }
  if (out.json) return out.printJson(results.map((r) => r.machine));
  const changed = results.filter((r) => r.updated).length;
  out.line(
    `Rolled back ${app} to v${target.version} (${target.image}): ${changed} machine${changed === 1 ? '' : 's'} updated`,
  );
}

export default defineVerb<Opts>({
  usage: 'releases [action] [version]',
  summary:
    'List the app’s releases (the machine versions that brought in each image); rollback goes back to one',
  description:
    'List the app’s releases, newest first. Hangar keeps every version of every machine’s config; a ' +
    'release groups the versions that brought in one image (or one `fly_release_id`, which deploys set): ' +
    'changing machines to a new image starts a release, other machines moved to that image and clones ' +
    'join it, and updates that keep a machine’s image (env, size, secrets deploy) stay in its release. ' +
    '`releases rollback [VERSION]` (default: the release before the newest) updates every machine that ' +
    'runs now, one at a time, back to the config it last had in that release, or, for machines created ' +
    'since, to that release’s image; it makes a new release. Secrets are not versioned, destroyed ' +
    'machines are not brought back, and volumes stay as they are.',
  examples: ['hangar releases -a acme', 'hangar releases rollback v3 -a acme --yes'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--all', 'list every release (default: the last 20)');
    cmd.option('-y, --yes', 'rollback: do not ask for confirmation');
    cmd.option('--wait-timeout <seconds>', 'rollback: how long each machine may take to start', '120');
  },
  async run(ctx) {
    const { app, args, opts, client, out } = ctx;
    const name = app();
    const [action, version, ...extra] = args(0).concat(args(1));
    if (action === 'rollback' && extra.length === 0) return rollback(ctx, name, version);
    if (action !== undefined && action !== 'list') {
      throw new CliError(
        `unknown releases action "${[action, version, ...extra].filter(Boolean).join(' ')}"`,
        'use `hangar releases` or `hangar releases rollback [VERSION]`',
      );
    }
    const api = client();
    const history = await histories(api, name);
    const releases = buildReleases(history).reverse();
    const shown = opts.all ? releases : releases.slice(0, 20);
    const live = new Set(liveMachines(history).map((m) => m.id));
    out.list<Release>(
      shown,
      [
        { header: 'Version', value: (r) => `v${r.version}` },
        {
          header: 'Status',
          value: (r) => {
            const running = r.running.filter((id) => live.has(id)).length;
            return running ? `running on ${running}` : 'superseded';
          },
        },
        { header: 'Image', value: (r) => r.image },
        { header: 'Machines', value: (r) => r.machines.length },
        { header: 'Created', value: (r) => formatTime(r.created_at) },
      ],
      `No releases in app ${name}: it has never had a machine`,
    );
  },
});

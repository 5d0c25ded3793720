import { isMachinesApiError, type MachinesClient } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { appMachines } from '../../groups.js';
import { formatTime } from '../../output.js';
import { buildReleases, type MachineHistory, type Release } from '../../releases.js';

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

export default defineVerb<{ all?: boolean }>({
  usage: 'releases',
  summary: 'List the app’s releases: the machine versions that brought in each image',
  description:
    'List the app’s releases, newest first. Hangar keeps every version of every machine’s config; a ' +
    'release groups the versions that brought in one image (or one `fly_release_id`, which deploys set): ' +
    'changing machines to a new image starts a release, other machines moved to that image and clones ' +
    'join it, and updates that keep a machine’s image (env, size, secrets deploy) stay in its release. ' +
    'Going back to an earlier image is a new release. There is no rollback command yet: ' +
    '`hangar machine update ID --image OLD` goes back by hand.',
  examples: ['hangar releases -a acme', 'hangar releases -a acme --json'],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--all', 'list every release (default: the last 20)');
  },
  async run({ app, opts, client, out }) {
    const name = app();
    const api = client();
    const releases = buildReleases(await histories(api, name)).reverse();
    const shown = opts.all ? releases : releases.slice(0, 20);
    const live = new Set(appMachines(await api.machines.list(name)).map((m) => m.id));
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

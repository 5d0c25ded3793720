// A new machine with an existing machine's config: `machine clone` and `scale count` (which is how
// flyctl grows a process group). A mount gets a volume of its own: one named by the caller, else an
// unattached volume of the same name when the caller allows reuse, else a new empty one.

import type { Machine, MachineConfig, MachinesClient, Volume } from '@hangar/sdk';
import type { Output } from './output.js';

export interface CloneOptions {
  name?: string;
  region?: string;
  /** Mount this volume id instead of finding or creating one. */
  volume?: string;
  /** Use an unattached volume of the source's volume name in the region, if there is one. */
  reuseUnattached?: boolean;
  /** Volume ids already given to other clones of this run. */
  taken?: Set<string>;
  detach?: boolean;
  waitMs: number;
}

/** The volume for the clone's mount: named, reused, or created like the source's. */
async function volumeFor(
  api: MachinesClient,
  app: string,
  sourceVolumeId: string,
  region: string,
  out: Output,
  options: CloneOptions,
): Promise<string> {
  if (options.volume) return options.volume;
  const source = await api.volumes.get(app, sourceVolumeId);
  if (options.reuseUnattached) {
    const free = (await api.volumes.list(app)).find(
      (v: Volume) =>
        v.name === source.name &&
        v.region === region &&
        !v.attached_machine_id &&
        v.state === 'created' &&
        !options.taken?.has(v.id),
    );
    if (free) {
      options.taken?.add(free.id);
      out.note(`Reusing unattached volume ${free.id} (${free.name})`);
      return free.id;
    }
  }
  const created = await api.volumes.create(app, {
    name: source.name,
    region,
    size_gb: source.size_gb,
    ...(source.snapshot_retention === undefined ? {} : { snapshot_retention: source.snapshot_retention }),
  });
  options.taken?.add(created.id);
  out.note(`Created volume ${created.id} (${created.name}, ${created.size_gb} GB)`);
  return created.id;
}

export async function cloneMachine(
  api: MachinesClient,
  app: string,
  source: Machine,
  out: Output,
  options: CloneOptions,
): Promise<Machine> {
  const config: MachineConfig = structuredClone(source.config ?? source.incomplete_config ?? { image: '' });
  const region = options.region ?? source.region;
  const mount = config.mounts?.[0];
  if (mount?.volume) {
    config.mounts = [{ ...mount, volume: await volumeFor(api, app, mount.volume, region, out, options) }];
  }
  const machine = await api.machines.launch(app, {
    config,
    region,
    ...(options.name ? { name: options.name } : {}),
  });
  out.note(`Machine ${machine.id} (${machine.name}) created from ${source.id}`);
  if (options.detach) return machine;
  out.note(`Waiting for ${machine.id} to start...`);
  await api.waitForState(app, machine.id, 'started', {
    timeoutMs: options.waitMs,
    instanceId: machine.instance_id,
  });
  return api.machines.get(app, machine.id);
}

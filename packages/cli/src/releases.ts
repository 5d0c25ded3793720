// What a release is on Hangar. hangard keeps, per machine, every version of its config (a ULID, so it
// carries its creation time, and the config). Releases are made of those versions, walked in time order,
// by a release key: the `fly_release_id` metadata when a deploy set it, else the image.
//  - A version with the same key as its machine's previous version stays in that version's release
//    (env, size and secrets updates change no release).
//  - Otherwise (a machine's first version, or a new image): it joins the newest release if that has the
//    same key (the other machines of a rolling update, clones), else it starts a new release. Going back
//    to an earlier image is therefore a new release, as a rollback is.
// Releases are numbered from 1 in the order they began.

import type { Machine, MachineConfig, MachineVersion } from '@hangar/sdk';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** The millisecond timestamp in a ULID's first 10 characters; undefined if it is not a ULID. */
export function ulidTime(id: string): number | undefined {
  if (!/^[0-9A-HJKMNP-TV-Z]{26}$/i.test(id)) return undefined;
  let ms = 0;
  for (const c of id.slice(0, 10).toUpperCase()) ms = ms * 32 + CROCKFORD.indexOf(c);
  return ms;
}

export function releaseKey(config: MachineConfig | undefined): string {
  return config?.metadata?.fly_release_id ?? config?.image ?? '';
}

export interface Release {
  version: number;
  image: string;
  release_id: string | null;
  created_at: string | null;
  /** Machines that had a version in this release. */
  machines: string[];
  /** Machines whose current version belongs to this release. */
  running: string[];
  /** The machine versions that make it up, oldest first. */
  machine_versions: Array<{ machine_id: string; version: string }>;
}

export interface MachineHistory {
  machine: Machine;
  versions: MachineVersion[];
}

export function buildReleases(histories: MachineHistory[]): Release[] {
  const entries = histories.flatMap(({ machine, versions }) =>
    versions.map((v) => ({ machine, version: v.version, config: v.user_config, time: ulidTime(v.version) })),
  );
  // Oldest first; versions without a readable time sort by id, which is what a ULID orders by anyway.
  entries.sort((a, b) => (a.time ?? 0) - (b.time ?? 0) || a.version.localeCompare(b.version));

  const releases: Release[] = [];
  const keys: string[] = [];
  /** Each machine's release and key so far. */
  const last = new Map<string, { release: Release; key: string }>();
  for (const e of entries) {
    const key = releaseKey(e.config);
    const previous = last.get(e.machine.id);
    let current: Release | undefined;
    if (previous && previous.key === key) current = previous.release;
    else if (releases.length && keys.at(-1) === key) current = releases.at(-1);
    if (!current) {
      current = {
        version: releases.length + 1,
        image: e.config?.image ?? '',
        release_id: e.config?.metadata?.fly_release_id ?? null,
        created_at: e.time === undefined ? null : new Date(e.time).toISOString(),
        machines: [],
        running: [],
        machine_versions: [],
      };
      releases.push(current);
      keys.push(key);
    }
    last.set(e.machine.id, { release: current, key });
    current.machine_versions.push({ machine_id: e.machine.id, version: e.version });
    if (!current.machines.includes(e.machine.id)) current.machines.push(e.machine.id);
    const live = e.machine.state !== 'destroyed' && e.machine.state !== 'destroying';
    if (live && e.machine.instance_id === e.version) current.running.push(e.machine.id);
  }
  return releases;
}

export interface RollbackStep {
  machine: Machine;
  /** The config the machine goes back to. */
  config: MachineConfig;
  /** `own`: the config it last had in the target release; `image`: it was not in it, only the image changes. */
  how: 'own' | 'image';
}

/**
 * Rolling back to `target` on the machines that run now: each goes back to the config it last had in
 * that release, or, if it was not in it (created later), keeps its config with the release's image (and
 * release id). Secrets are not versioned: every machine boots with the app's current secrets.
 */
export function planRollback(histories: MachineHistory[], target: Release, live: Machine[]): RollbackStep[] {
  const configs = new Map<string, MachineConfig | undefined>();
  for (const h of histories) for (const v of h.versions) configs.set(v.version, v.user_config);
  return live.map((machine) => {
    const own = target.machine_versions.filter((v) => v.machine_id === machine.id).at(-1);
    const config = own ? configs.get(own.version) : undefined;
    if (config) return { machine, config: structuredClone(config), how: 'own' as const };
    const current: MachineConfig = structuredClone(machine.config ?? { image: target.image });
    current.image = target.image;
    if (target.release_id) current.metadata = { ...current.metadata, fly_release_id: target.release_id };
    return { machine, config: current, how: 'image' as const };
  });
}

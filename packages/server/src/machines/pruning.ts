import type { ResolvedConfig } from '../config/config.js';
import type { Store } from '../store/store.js';

/**
 * What the store would otherwise keep for ever: every event and version of every machine, and
 * destroyed machines. Run on a schedule (daemon.ts): each machine keeps its newest events and versions
 * (its current version always), and a machine destroyed longer ago than the retention goes with its
 * events, versions and lease.
 */

export type PruneSettings = Pick<
  ResolvedConfig['pruning'],
  'eventsPerMachine' | 'versionsPerMachine' | 'destroyedRetentionHours'
>;

export interface PruneResult {
  events: number;
  versions: number;
  machines: number;
}

/** Machines per transaction: a pass over many machines never holds the store for long. */
const BATCH = 200;

export async function pruneStore(store: Store, settings: PruneSettings, now: number): Promise<PruneResult> {
  const result: PruneResult = { events: 0, versions: 0, machines: 0 };
  const ids = await store.read((tx) => tx.machines.list().map((m) => m.id));
  const cutoff = now - settings.destroyedRetentionHours * 3600_000;
  for (let start = 0; start < ids.length; start += BATCH) {
    await store.write((tx) => {
      for (const id of ids.slice(start, start + BATCH)) {
        const machine = tx.machines.get(id);
        if (!machine) continue;
        if (machine.state === 'destroyed' && Date.parse(machine.updatedAt) <= cutoff) {
          result.events += tx.machineEvents.deleteWhere({ machineId: id });
          result.versions += tx.machineVersions.deleteWhere({ machineId: id });
          tx.leases.delete(id);
          tx.machines.delete(id);
          result.machines++;
          continue;
        }
        // Event ids are ULIDs: newest first by key.
        const events = tx.machineEvents.list({ machineId: id }, { newestFirst: true });
        for (const event of events.slice(settings.eventsPerMachine)) {
          tx.machineEvents.delete(event.id);
          result.events++;
        }
        const versions = tx.machineVersions.list({ machineId: id }, { newestFirst: true });
        for (const version of versions.slice(settings.versionsPerMachine)) {
          if (version.version === machine.instanceId) continue;
          tx.machineVersions.delete(`${version.machineId}/${version.version}`);
          result.versions++;
        }
      }
    });
  }
  return result;
}

// `scale count`'s plan, as flyctl makes it: per process group (and region, when one is named), clone
// the group's machines up to the count, or destroy the excess. Pure, so the choice of which machines go
// is testable without a server.

import type { Machine } from '@hangar/sdk';
import { CliError } from './errors.js';
import { appMachines, processGroup } from './groups.js';

export interface GroupPlan {
  group: string;
  /** The region counted and cloned into; undefined means all of the group's machines. */
  region: string | undefined;
  before: number;
  after: number;
  /** The machine whose config new machines copy (when some are to be created). */
  source: Machine | undefined;
  create: number;
  /** Machines to destroy, in the order they go. */
  destroy: Machine[];
}

/** Stopped, suspended, failed and created machines go first (they serve nothing), then the newest. */
function destroyOrder(a: Machine, b: Machine): number {
  const idle = (m: Machine) => (m.state === 'started' || m.state === 'starting' ? 1 : 0);
  return idle(a) - idle(b) || String(b.created_at ?? '').localeCompare(String(a.created_at ?? ''));
}

/** A started machine is the best model; among equals the newest carries the latest config. */
function cloneSource(machines: Machine[]): Machine | undefined {
  return [...machines].sort(
    (a, b) =>
      Number(b.state === 'started') - Number(a.state === 'started') ||
      String(b.created_at ?? '').localeCompare(String(a.created_at ?? '')),
  )[0];
}

export function planScale(
  all: Machine[],
  count: number,
  options: { group?: string; region?: string } = {},
): GroupPlan[] {
  const machines = appMachines(all);
  const groups = options.group ? [options.group] : [...new Set(machines.map(processGroup))].sort();
  if (groups.length === 0) {
    throw new CliError('the app has no machines to scale', 'create the first one with `hangar machine run`');
  }
  return groups.map((group) => {
    const inGroup = machines.filter((m) => processGroup(m) === group);
    const source = cloneSource(inGroup);
    if (!source) {
      throw new CliError(
        `no machine in process group ${group} to clone from`,
        'check the name with `hangar scale show`',
      );
    }
    const counted = options.region ? inGroup.filter((m) => m.region === options.region) : inGroup;
    const excess = counted.length - count;
    return {
      group,
      region: options.region,
      before: counted.length,
      after: count,
      source: excess < 0 ? (cloneSource(counted) ?? source) : undefined,
      create: Math.max(0, -excess),
      destroy: excess > 0 ? [...counted].sort(destroyOrder).slice(0, excess) : [],
    };
  });
}

/**
 * The ports an app serves, read from its machines' configs: what a Flycast address of the app opens to
 * its network. The proxy listens on a Flycast address on each `services[].ports[]` port (a single `port`
 * or a `start_port`..`end_port` range) with the service's protocol, so those, and nothing else of the
 * host, are what a machine calling the address may reach. Pure: configs in, merged ranges out.
 */
import { HangarError } from '../shared/errors.js';
import type { MachineConfig } from '../shared/machine-config.js';

/** A protocol's ports `start`..`end`, both included. */
export interface PortRange {
  protocol: 'tcp' | 'udp';
  start: number;
  end: number;
}

/** The external ports of one machine config's services, unmerged. */
function portsOfConfig(config: Pick<MachineConfig, 'services'>): PortRange[] {
  return (config.services ?? []).flatMap((service) =>
    (service.ports ?? []).flatMap((p): PortRange[] => {
      if (p.port !== undefined) return [{ protocol: service.protocol, start: p.port, end: p.port }];
      if (p.start_port !== undefined && p.end_port !== undefined)
        return [{ protocol: service.protocol, start: p.start_port, end: p.end_port }];
      return [];
    }),
  );
}

/**
 * Every port the configs expose, per protocol, with overlapping and adjacent ranges merged and sorted:
 * one text per set of ports, so the rule elements of two equal states compare equal (and nft refuses
 * overlapping elements in an interval set).
 */
export function servicePorts(configs: Iterable<Pick<MachineConfig, 'services'>>): PortRange[] {
  const all: PortRange[] = [];
  for (const config of configs) all.push(...portsOfConfig(config));
  return mergeRanges(all);
}

/**
 * A range as nft set elements write it, `tcp . 80` or `udp . 8000-8010`; a range outside 1..65535 or
 * reversed is a bug upstream, never written.
 */
export function portRange({ protocol, start, end }: PortRange): string {
  const valid = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65_535;
  if ((protocol !== 'tcp' && protocol !== 'udp') || !valid(start) || !valid(end) || start > end) {
    throw new HangarError('internal', `"${protocol} ${start}-${end}" is not a port range`);
  }
  return `${protocol} . ${start === end ? start : `${start}-${end}`}`;
}

export function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort(
    (a, b) => a.protocol.localeCompare(b.protocol) || a.start - b.start || a.end - b.end,
  );
  const merged: PortRange[] = [];
  for (const range of sorted) {
    const last = merged.at(-1);
    if (last && last.protocol === range.protocol && range.start <= last.end + 1) {
      last.end = Math.max(last.end, range.end);
    } else {
      merged.push({ ...range });
    }
  }
  return merged;
}

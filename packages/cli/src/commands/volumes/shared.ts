import type { Volume } from '@hangar/sdk';
import type { Cell, Column } from '../../output.js';
import { formatTime } from '../../output.js';

/** States of volumes on their way out; `list` hides them unless --all (as flyctl does). */
export const GONE_STATES = new Set([
  'scheduling_destroy',
  'fork_cleanup',
  'waiting_for_detach',
  'pending_destroy',
  'destroying',
  'destroyed',
]);

export const VOLUME_COLUMNS: Column<Volume>[] = [
  { header: 'ID', value: (v) => v.id },
  { header: 'State', value: (v) => v.state },
  { header: 'Name', value: (v) => v.name },
  { header: 'Size', value: (v) => `${v.size_gb}GB` },
  { header: 'Region', value: (v) => v.region },
  { header: 'Zone', value: (v) => v.zone },
  { header: 'Encrypted', value: (v) => v.encrypted },
  { header: 'Attached VM', value: (v) => v.attached_machine_id },
  { header: 'Created', value: (v) => formatTime(v.created_at) },
];

export function volumeFields(v: Volume): Array<[string, Cell]> {
  return VOLUME_COLUMNS.map((c) => [c.header, c.value(v)]);
}

import type { IPAssignment } from '@hangar/sdk';
import type { Column } from '../../output.js';
import { formatTime } from '../../output.js';

/** Hangar says the type; Fly's API does not, so infer it the way flyctl does (Flycast lives in fdaa::/16). */
export function ipType(ip: IPAssignment): string {
  if (ip.type) return ip.type;
  if (ip.ip.toLowerCase().startsWith('fdaa:')) return 'private_v6';
  if (ip.ip.includes(':')) return 'v6';
  return ip.shared ? 'shared_v4' : 'v4';
}

const TYPE_LABELS: Record<string, string> = {
  v4: 'public (dedicated)',
  shared_v4: 'public (shared)',
  v6: 'public',
  private_v6: 'private (Flycast)',
};

function networkName(ip: IPAssignment): string | undefined {
  return typeof ip.network === 'string' ? ip.network : ip.network?.name;
}

export const IP_COLUMNS: Column<IPAssignment>[] = [
  { header: 'Version', value: (ip) => (ip.ip.includes(':') ? 'v6' : 'v4') },
  { header: 'IP', value: (ip) => ip.ip },
  { header: 'Type', value: (ip) => TYPE_LABELS[ipType(ip)] ?? ipType(ip) },
  { header: 'Network', value: networkName },
  { header: 'Region', value: (ip) => ip.region },
  { header: 'Created', value: (ip) => formatTime(ip.created_at) },
];

import type { AppView } from '../machines/apps.js';
import { displayIp, type IpView } from '../machines/ips.js';
import type { MachineView } from '../machines/machines.js';
import type {
  ImageRefRecord,
  LeaseRecord,
  MachineEventRecord,
  MachineVersionRecord,
  SecretRecord,
  TokenRecord,
  VolumeRecord,
  VolumeSnapshotRecord,
} from '../store/records.js';

/** Record → Fly wire shape (snake_case). Fields Fly leaves out when unset are left out here too. */

export const app = ({ app, org, network, machineCount, volumeCount }: AppView) => ({
  id: app.id,
  name: app.name,
  status: app.status,
  organization: { name: org.name, slug: org.slug, internal_numeric_id: org.internalNumericId },
  network: network.name,
  machine_count: machineCount,
  volume_count: volumeCount,
  internal_numeric_id: app.internalNumericId,
  created_at: app.createdAt,
});

export const listApp = ({ app, network, machineCount, volumeCount }: AppView) => ({
  id: app.id,
  name: app.name,
  machine_count: machineCount,
  volume_count: volumeCount,
  network: network.name,
});

export const event = (e: MachineEventRecord) => ({
  id: e.id,
  type: e.type,
  status: e.status,
  source: e.source,
  timestamp: e.timestamp,
  ...(e.request ? { request: e.request } : {}),
});

/** Until an image is pulled, its reference is described from the config (no digest yet). */
export function imageRefFromReference(reference: string): ImageRefRecord {
  let rest = reference;
  let digest = '';
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  const hasRegistry = first.includes('.') || first.includes(':') || first === 'localhost';
  const registry = hasRegistry ? first : 'docker.io';
  let repository = hasRegistry ? rest.slice(slash + 1) : rest;
  let tag = digest === '' ? 'latest' : '';
  const colon = repository.lastIndexOf(':');
  if (colon >= 0) {
    tag = repository.slice(colon + 1);
    repository = repository.slice(0, colon);
  }
  if (!hasRegistry && !repository.includes('/')) repository = `library/${repository}`;
  return { registry, repository, tag, digest, labels: {} };
}

export const machine = ({ machine: m, events, nonce }: MachineView, options: { summary?: boolean } = {}) => ({
  id: m.id,
  name: m.name,
  state: m.state,
  region: m.region,
  instance_id: m.instanceId,
  version: m.instanceId,
  ...(m.privateIp ? { private_ip: m.privateIp } : {}),
  created_at: m.createdAt,
  updated_at: m.updatedAt,
  ...(options.summary ? {} : { config: m.config }),
  image_ref: m.imageRef ?? imageRefFromReference(String(m.config.image)),
  events: events.map(event),
  checks: [],
  host_status: 'ok',
  cordoned: m.cordoned,
  ...(nonce ? { nonce } : {}),
});

export const version = (v: MachineVersionRecord) => ({ version: v.version, user_config: v.config });

export const lease = (l: LeaseRecord) => ({
  status: 'success',
  data: {
    nonce: l.nonce,
    expires_at: l.expiresAt,
    owner: l.owner,
    description: l.description,
    version: l.version,
  },
});

const BLOCK_SIZE = 4096;
export const volume = (v: VolumeRecord) => ({
  id: v.id,
  name: v.name,
  state: v.state,
  size_gb: v.sizeGb,
  region: v.region,
  zone: v.zone,
  encrypted: v.encrypted,
  attached_machine_id: v.attachedMachineId,
  attached_alloc_id: null,
  created_at: v.createdAt,
  block_size: BLOCK_SIZE,
  blocks: (v.sizeGb * 1024 ** 3) / BLOCK_SIZE,
  fstype: v.fstype,
  snapshot_retention: v.snapshotRetention,
  auto_backup_enabled: v.autoBackupEnabled,
  host_status: 'ok',
});

export const snapshot = (s: VolumeSnapshotRecord) => ({
  id: s.id,
  size: s.sizeBytes,
  volume_size: s.volumeSizeGb,
  digest: s.digest,
  created_at: s.createdAt,
  status: s.status,
  retention_days: s.retentionDays,
});

export const secret = (s: SecretRecord) => ({
  name: s.name,
  digest: s.digest,
  created_at: s.createdAt,
  updated_at: s.updatedAt,
});

export const ip = ({ ip: record, network }: IpView) => ({
  ip: displayIp(record),
  type: record.type,
  region: record.region,
  service_name: record.serviceName,
  shared: record.shared,
  egress: false,
  network: network ? { name: network.name, org_slug: network.orgSlug } : null,
  created_at: record.createdAt,
});

export const token = (t: TokenRecord, orgSlug: string, appName: string | null) => ({
  id: t.id,
  type: t.type,
  name: t.name,
  org_slug: orgSlug,
  app_name: appName,
  created_at: t.createdAt,
  expires_at: t.expiresAt,
});

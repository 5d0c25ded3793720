import type { AppView } from '../machines/apps.js';
import { displayIp, type IpView } from '../machines/ips.js';
import type { MachineView } from '../machines/machines.js';
import type { VolumeView } from '../machines/volumes.js';
import { parseReference } from '../shared/image-reference.js';
import type {
  CertificateRecord,
  ImageRefRecord,
  LeaseRecord,
  MachineEventRecord,
  MachineVersionRecord,
  SecretRecord,
  TokenRecord,
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
  try {
    return { ...parseReference(reference), labels: {} };
  } catch {
    // An image that no longer parses (it was accepted before stricter rules) is shown as given.
    return { registry: '', repository: reference, tag: '', digest: '', labels: {} };
  }
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
  image_ref: m.imageRef ?? imageRefFromReference(m.config.image),
  events: events.map(event),
  checks: (m.checks ?? []).map((c) => ({
    name: c.name,
    status: c.status,
    output: c.output,
    updated_at: c.updatedAt,
  })),
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
/** The filesystem's own figures when the volume has real storage; otherwise blocks derive from size_gb. */
export const volume = (v: VolumeView) => ({
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
  block_size: v.usage?.blockSize ?? BLOCK_SIZE,
  blocks: v.usage?.blocks ?? (v.sizeGb * 1024 ** 3) / BLOCK_SIZE,
  ...(v.usage
    ? {
        blocks_free: v.usage.blocksFree,
        blocks_avail: v.usage.blocksAvail,
        bytes_total: v.usage.bytesTotal,
        bytes_used: v.usage.bytesUsed,
      }
    : {}),
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

/** A custom hostname in the certificates API's shape; the key is never part of it. */
export const certificate = (c: CertificateRecord) => ({
  hostname: c.hostname,
  configured: true,
  acme_requested: false,
  status: 'active',
  source: c.source,
  created_at: c.createdAt,
  updated_at: c.updatedAt,
  certificates: [
    {
      source: c.source,
      status: 'active',
      issuer: c.issuer,
      subject: c.subject,
      not_before: c.notBefore,
      expires_at: c.notAfter,
      fingerprint_sha256: c.fingerprint,
      created_at: c.createdAt,
    },
  ],
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

import type { MachineConfig } from '../shared/machine-config.js';

/**
 * What the store holds. Records are the daemon's own model (camelCase); the api turns them into Fly's
 * wire shapes. Machine configs are kept in Fly's shape (snake_case), validated and with defaults filled in.
 */
export type MachineState =
  | 'created'
  | 'starting'
  | 'started'
  | 'stopping'
  | 'stopped'
  | 'suspending'
  | 'suspended'
  | 'replacing'
  | 'destroying'
  | 'destroyed'
  | 'failed';

export type JsonObject = { [key: string]: unknown };

export interface OrgRecord {
  id: string;
  slug: string;
  name: string;
  internalNumericId: number;
  createdAt: string;
}

export interface NetworkRecord {
  /** 32-bit, allocated from a sequence, never reused; embedded in every 6PN address of the network. */
  id: number;
  orgId: string;
  name: string;
  createdAt: string;
}

export interface AppRecord {
  id: string;
  name: string;
  orgId: string;
  networkId: number;
  status: 'pending' | 'deployed' | 'suspended';
  internalNumericId: number;
  /** Bumped by every secrets change; `min_secrets_version` compares against it. */
  secretsVersion: number;
  createdAt: string;
  updatedAt: string;
}

export interface ImageRefRecord {
  registry: string;
  repository: string;
  tag: string;
  digest: string;
  labels: Record<string, string>;
}

export interface MachineRecord {
  id: string;
  appId: string;
  name: string;
  region: string;
  /** The host that owns the machine; one host today, kept as data for clusters. */
  hostId: string;
  state: MachineState;
  /** The current version (a ULID); also reported as `version`. */
  instanceId: string;
  config: MachineConfig;
  imageRef: ImageRefRecord | null;
  /**
   * The machine's number on its host (1 to 2^32-1, from a sequence, never reused): names its veth and
   * fills groups 6-7 of its 6PN address. Absent on machines created before private networks.
   */
  machineNumber?: number;
  /** `fdaa:<network>:<host>:<machine number>::2`, fixed at create (see net/address-plan.ts). */
  privateIp: string | null;
  cordoned: boolean;
  /** The latest results of the machine's health checks, as the proxy's checker last recorded them. */
  checks?: CheckStatusRecord[];
  /** Boot without the app's secrets (`skip_secrets` on create or update). */
  skipSecrets?: boolean;
  createdAt: string;
  updatedAt: string;
}

export interface CheckStatusRecord {
  name: string;
  status: 'passing' | 'warning' | 'critical';
  output: string;
  updatedAt: string;
}

export interface MachineVersionRecord {
  machineId: string;
  version: string;
  config: MachineConfig;
  createdAt: string;
}

export interface MachineEventRecord {
  id: string;
  machineId: string;
  type: string;
  status: string;
  source: 'user' | 'flyd' | 'hangar';
  /** Unix milliseconds, as Fly reports event times. */
  timestamp: number;
  request?: JsonObject;
}

export interface LeaseRecord {
  machineId: string;
  nonce: string;
  /** Unix seconds, as Fly reports lease expiry. */
  expiresAt: number;
  owner: string;
  description: string;
  version: string;
}

export type VolumeState = 'created' | 'extending' | 'restoring' | 'destroyed';

export interface VolumeRecord {
  id: string;
  appId: string;
  name: string;
  state: VolumeState;
  sizeGb: number;
  region: string;
  zone: string;
  hostId: string;
  encrypted: boolean;
  fstype: 'ext4' | 'raw';
  snapshotRetention: number;
  autoBackupEnabled: boolean;
  attachedMachineId: string | null;
  /** Where the volume's data came from, if it was restored or forked. */
  sourceSnapshotId: string | null;
  sourceVolumeId: string | null;
  createdAt: string;
}

export interface VolumeSnapshotRecord {
  id: string;
  volumeId: string;
  appId: string;
  sizeBytes: number;
  volumeSizeGb: number;
  digest: string;
  status: 'created' | 'running' | 'failed';
  retentionDays: number;
  createdAt: string;
}

export interface SecretRecord {
  appId: string;
  name: string;
  /** AES-256-GCM sealed value, base64: never the plaintext. */
  sealed: string;
  /** Keyed hash of the value, so clients can tell whether a value changed without seeing it. */
  digest: string;
  /** The app's secrets version at which this value was set. */
  version: number;
  createdAt: string;
  updatedAt: string;
}

/**
 * A custom hostname of an app with the certificate the proxy serves for it (Fly's certificates API). A
 * hostname belongs to one app at a time: it is the record's key.
 */
export interface CertificateRecord {
  /** Lower case, no trailing dot. */
  hostname: string;
  appId: string;
  /** Only `custom` (imported) certificates exist so far; ACME is not implemented. */
  source: 'custom';
  /** The certificate chain, PEM, leaf first. Public. */
  fullchain: string;
  /** The private key, sealed by the vault (AES-256-GCM), base64: never the plaintext. */
  sealedKey: string;
  issuer: string;
  subject: string;
  /** The leaf's validity, ISO. */
  notBefore: string;
  notAfter: string;
  /** SHA-256 fingerprint of the leaf, as Node prints it (AA:BB:...). */
  fingerprint: string;
  createdAt: string;
  updatedAt: string;
}

export type IpType = 'v6' | 'shared_v4' | 'private_v6';

export interface IpAssignmentRecord {
  ip: string;
  appId: string;
  type: IpType;
  region: string;
  /** For private_v6 (Flycast): the network whose callers reach the app through this address. */
  networkId: number | null;
  serviceName: string | null;
  shared: boolean;
  createdAt: string;
}

export type TokenType = 'org' | 'deploy' | 'readonly';

export interface TokenRecord {
  id: string;
  type: TokenType;
  orgId: string;
  /** Deploy tokens are bound to one app. */
  appId: string | null;
  name: string;
  /** SHA-256 of the secret part; the token itself is never stored. */
  secretHash: string;
  createdAt: string;
  expiresAt: string | null;
}

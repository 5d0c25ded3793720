import type {
  AppRecord,
  CertificateRecord,
  IpAssignmentRecord,
  LeaseRecord,
  MachineEventRecord,
  MachineRecord,
  MachineVersionRecord,
  NetworkRecord,
  OrgRecord,
  SecretRecord,
  TokenRecord,
  VolumeRecord,
  VolumeSnapshotRecord,
} from './records.js';

/**
 * The store is a set of collections of JSON documents, each with a primary key and a few indexed fields.
 * No SQL leaves the store: an etcd implementation keeps the same shape (key → JSON, indexes as extra keys).
 *
 * Transactions take a synchronous callback. A callback must only read and write through its `tx`, with
 * no other side effects, because an optimistic implementation (etcd: compare revisions, retry) may run it
 * more than once. Whatever it writes commits atomically or not at all.
 */
export interface Store {
  read<T>(fn: (tx: ReadTx) => T): Promise<T>;
  write<T>(fn: (tx: WriteTx) => T): Promise<T>;
  /** Called after every committed write transaction, in commit order. Returns an unsubscribe function. */
  watch(listener: (batch: ChangeBatch) => void): () => void;
  close(): void;
}

export interface ChangeBatch {
  /** Increases by one with every committed write transaction. */
  revision: number;
  changes: Change[];
}

export interface Change {
  collection: CollectionName;
  key: string;
  /** The document after the change; undefined when it was deleted. */
  doc: unknown;
}

export type Filter<T> = Partial<{ [K in keyof T]: T[K] }>;

export interface ListOptions {
  /** Sort by primary key, descending (keys that are ULIDs sort by time: newest first). */
  newestFirst?: boolean;
  limit?: number;
}

export interface ReadCollection<T> {
  get(key: string): T | undefined;
  /** Equality filter on the collection's indexed fields only (see COLLECTION_INDEXES). */
  list(filter?: Filter<T>, options?: ListOptions): T[];
  count(filter?: Filter<T>): number;
}

export interface WriteCollection<T> extends ReadCollection<T> {
  /** Fails with `name_taken`-style conflict (StoreConflictError) when a unique index is violated. */
  insert(doc: T): void;
  /** Replaces an existing document; fails with not_found when there is none. */
  update(doc: T): void;
  delete(key: string): boolean;
  /** Deletes every document matching the filter; returns how many. */
  deleteWhere(filter: Filter<T>): number;
}

export interface Collections {
  orgs: OrgRecord;
  networks: NetworkRecord;
  apps: AppRecord;
  machines: MachineRecord;
  machineVersions: MachineVersionRecord;
  machineEvents: MachineEventRecord;
  leases: LeaseRecord;
  volumes: VolumeRecord;
  volumeSnapshots: VolumeSnapshotRecord;
  secrets: SecretRecord;
  ipAssignments: IpAssignmentRecord;
  tokens: TokenRecord;
  certificates: CertificateRecord;
}
export type CollectionName = keyof Collections;

export type ReadTx = { readonly [K in CollectionName]: ReadCollection<Collections[K]> };

export type WriteTx = { readonly [K in CollectionName]: WriteCollection<Collections[K]> } & {
  /** Next value of a named sequence, starting at 1. Values are never handed out twice, even after deletes. */
  nextSequence(name: string): number;
};

/** How each collection is keyed and which fields are indexed (and may be filtered on). */
export interface CollectionSpec<T> {
  key(doc: T): string;
  indexes: readonly (keyof T & string)[];
  /** Index field groups that must be unique; a null value in the group exempts a document. */
  unique?: readonly (readonly (keyof T & string)[])[];
}

type Specs = { [K in CollectionName]: CollectionSpec<Collections[K]> };

export const COLLECTIONS: Specs = {
  orgs: { key: (o) => o.id, indexes: ['slug'], unique: [['slug']] },
  networks: { key: (n) => String(n.id), indexes: ['orgId', 'name'], unique: [['orgId', 'name']] },
  apps: { key: (a) => a.id, indexes: ['name', 'orgId', 'networkId'], unique: [['name']] },
  machines: { key: (m) => m.id, indexes: ['appId', 'state', 'region', 'name'] },
  machineVersions: { key: (v) => `${v.machineId}/${v.version}`, indexes: ['machineId'] },
  machineEvents: { key: (e) => e.id, indexes: ['machineId'] },
  leases: { key: (l) => l.machineId, indexes: [] },
  volumes: { key: (v) => v.id, indexes: ['appId', 'attachedMachineId'] },
  volumeSnapshots: { key: (s) => s.id, indexes: ['volumeId', 'appId'] },
  secrets: { key: (s) => `${s.appId}/${s.name}`, indexes: ['appId'] },
  ipAssignments: { key: (i) => i.ip, indexes: ['appId', 'networkId'] },
  tokens: { key: (t) => t.id, indexes: ['orgId', 'appId'] },
  certificates: { key: (c) => c.hostname, indexes: ['appId'] },
};

export class StoreConflictError extends Error {
  constructor(
    readonly collection: CollectionName,
    readonly fields: readonly string[],
  ) {
    super(`${collection}: a document with the same ${fields.join(', ')} already exists`);
    this.name = 'StoreConflictError';
  }
}

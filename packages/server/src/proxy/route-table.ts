import { durationToMs } from '../shared/duration.js';
import { HangarError } from '../shared/errors.js';
import type { MachineCheck, NormalizedService } from '../shared/machine-config.js';
import type {
  AppRecord,
  CertificateRecord,
  IpAssignmentRecord,
  MachineRecord,
  MachineState,
} from '../store/records.js';
import type { Change, ChangeBatch, Store } from '../store/store.js';
import { portsOf } from './services.js';

/**
 * What the proxy knows: apps, their machines with state and typed services, which apps have a public
 * address, and the Flycast addresses. Built from one store read and then kept current from the change
 * feed (the same pattern as dns/view.ts), so the request path never reads the store.
 */

export interface RouteMachine {
  readonly id: string;
  readonly appId: string;
  readonly state: MachineState;
  readonly region: string;
  readonly cordoned: boolean;
  /** The 6PN address the proxy dials; null until the machine has one. */
  readonly privateIp: string | null;
  readonly services: readonly NormalizedService[];
  readonly checks: Readonly<Record<string, MachineCheck>>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly stopTimeoutMs: number | undefined;
}

export interface RouteApp {
  readonly id: string;
  readonly name: string;
  readonly orgId: string;
  readonly networkId: number;
  /** By machine id; destroyed machines are left out. */
  readonly machines: ReadonlyMap<string, RouteMachine>;
  /** Whether the app holds a `v6` or `shared_v4` assignment: only then is it served on public HTTP. */
  readonly isPublic: boolean;
}

export interface FlycastAddress {
  readonly ip: string;
  readonly appId: string;
  /** The network whose callers use this address (the app may live in another). */
  readonly networkId: number;
}

/** One Flycast listener the table asks for: an address and one port its app's services expose. */
export interface FlycastBinding {
  readonly ip: string;
  readonly port: number;
  readonly appId: string;
}

interface AppState {
  id: string;
  name: string;
  orgId: string;
  networkId: number;
  machines: Map<string, RouteMachine>;
  isPublic: boolean;
}

interface IpEntry {
  appId: string;
  type: IpAssignmentRecord['type'];
  networkId: number | null;
}

export class RouteTable {
  readonly #store: Store | undefined;
  readonly #apps = new Map<string, AppState>();
  readonly #appsByName = new Map<string, AppState>();
  /** Machines by app id, kept apart from the apps: a machine may arrive before its app. */
  readonly #machinesByApp = new Map<string, Map<string, RouteMachine>>();
  readonly #machines = new Map<string, RouteMachine>();
  readonly #ips = new Map<string, IpEntry>();
  /** Custom hostnames by name, with their certificates (keys still sealed). */
  readonly #certificates = new Map<string, CertificateRecord>();
  readonly #listeners = new Set<() => void>();
  #revision = 0;
  #unwatch: (() => void) | undefined;
  #closed = false;

  /** Without a store the table is filled by `apply` alone (unit tests). */
  constructor(store?: Store) {
    this.#store = store;
  }

  get revision(): number {
    return this.#revision;
  }

  /** Subscribes first, then reads everything; batches committed meanwhile are replayed after the read. */
  async start(): Promise<void> {
    if (this.#closed) throw new HangarError('internal', 'the route table is closed');
    const store = this.#store;
    if (!store || this.#unwatch) return;
    let held: ChangeBatch[] | undefined = [];
    this.#unwatch = store.watch((batch) => {
      if (held) held.push(batch);
      else this.apply(batch);
    });
    const all = await store.read((tx) => ({
      apps: tx.apps.list(),
      machines: tx.machines.list(),
      ips: tx.ipAssignments.list(),
      certificates: tx.certificates.list(),
    }));
    for (const app of all.apps) this.#putApp(app);
    for (const machine of all.machines) this.#putMachine(machine);
    for (const ip of all.ips) this.#putIp(ip);
    for (const certificate of all.certificates) this.#certificates.set(certificate.hostname, certificate);
    const pending = held;
    held = undefined;
    for (const batch of pending) this.apply(batch, false);
    this.#notify();
  }

  close(): void {
    this.#closed = true;
    this.#unwatch?.();
    this.#unwatch = undefined;
    this.#listeners.clear();
  }

  /** Called after every applied batch that touched apps, machines or IPs. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  apply(batch: ChangeBatch, notify = true): void {
    let touched = false;
    for (const change of batch.changes) touched = this.#applyChange(change) || touched;
    this.#revision = Math.max(this.#revision, batch.revision);
    if (touched && notify) this.#notify();
  }

  apps(): IterableIterator<RouteApp> {
    return this.#apps.values();
  }

  app(id: string): RouteApp | undefined {
    return this.#apps.get(id);
  }

  appByName(name: string): RouteApp | undefined {
    return this.#appsByName.get(name.toLowerCase());
  }

  machine(id: string): RouteMachine | undefined {
    return this.#machines.get(id);
  }

  /** A custom hostname's record (its app and certificate), by lower-case name. */
  certificate(hostname: string): CertificateRecord | undefined {
    return this.#certificates.get(hostname);
  }

  /** The app a custom hostname belongs to. */
  appByHostname(hostname: string): RouteApp | undefined {
    const record = this.#certificates.get(hostname);
    return record && this.#apps.get(record.appId);
  }

  flycast(ip: string): FlycastAddress | undefined {
    const entry = this.#ips.get(ip);
    if (entry?.type !== 'private_v6' || entry.networkId === null) return undefined;
    return { ip, appId: entry.appId, networkId: entry.networkId };
  }

  /** Every Flycast address with every TCP port its app's machines expose (union over machines). */
  flycastBindings(): FlycastBinding[] {
    const bindings: FlycastBinding[] = [];
    for (const [ip, entry] of this.#ips) {
      if (entry.type !== 'private_v6' || entry.networkId === null) continue;
      const ports = new Set<number>();
      for (const machine of this.#machinesByApp.get(entry.appId)?.values() ?? []) {
        for (const service of machine.services) for (const port of portsOf(service)) ports.add(port);
      }
      for (const port of [...ports].sort((a, b) => a - b)) bindings.push({ ip, port, appId: entry.appId });
    }
    return bindings;
  }

  #notify(): void {
    for (const listener of this.#listeners) listener();
  }

  #applyChange(change: Change): boolean {
    switch (change.collection) {
      case 'apps':
        this.#removeApp(change.key);
        if (change.doc) this.#putApp(change.doc as AppRecord);
        return true;
      case 'machines':
        this.#removeMachine(change.key);
        if (change.doc) this.#putMachine(change.doc as MachineRecord);
        return true;
      case 'ipAssignments':
        this.#removeIp(change.key);
        if (change.doc) this.#putIp(change.doc as IpAssignmentRecord);
        return true;
      case 'certificates':
        if (change.doc) this.#certificates.set(change.key, change.doc as CertificateRecord);
        else this.#certificates.delete(change.key);
        return true;
      default:
        return false;
    }
  }

  #machineMap(appId: string): Map<string, RouteMachine> {
    let machines = this.#machinesByApp.get(appId);
    if (!machines) {
      machines = new Map();
      this.#machinesByApp.set(appId, machines);
    }
    return machines;
  }

  #putApp(record: AppRecord): void {
    const app: AppState = {
      id: record.id,
      name: record.name.toLowerCase(),
      orgId: record.orgId,
      networkId: record.networkId,
      machines: this.#machineMap(record.id),
      isPublic: [...this.#ips.values()].some((ip) => ip.appId === record.id && isPublicType(ip.type)),
    };
    this.#apps.set(app.id, app);
    this.#appsByName.set(app.name, app);
  }

  #removeApp(id: string): void {
    const app = this.#apps.get(id);
    if (!app) return;
    this.#apps.delete(id);
    if (this.#appsByName.get(app.name) === app) this.#appsByName.delete(app.name);
    if (app.machines.size === 0) this.#machinesByApp.delete(id);
  }

  #putMachine(record: MachineRecord): void {
    if (record.state === 'destroyed') return;
    const timeout = record.config.stop_config?.timeout;
    const machine: RouteMachine = {
      id: record.id,
      appId: record.appId,
      state: record.state,
      region: record.region,
      cordoned: record.cordoned,
      privateIp: record.privateIp,
      services: record.config.services ?? [],
      checks: record.config.checks ?? {},
      metadata: record.config.metadata ?? {},
      stopTimeoutMs: timeout === undefined ? undefined : durationToMs(timeout, 'stop_config.timeout'),
    };
    this.#machines.set(machine.id, machine);
    this.#machineMap(machine.appId).set(machine.id, machine);
  }

  #removeMachine(id: string): void {
    const machine = this.#machines.get(id);
    if (!machine) return;
    this.#machines.delete(id);
    const machines = this.#machinesByApp.get(machine.appId);
    machines?.delete(id);
    if (machines?.size === 0 && !this.#apps.has(machine.appId)) this.#machinesByApp.delete(machine.appId);
  }

  #putIp(record: IpAssignmentRecord): void {
    this.#ips.set(record.ip, { appId: record.appId, type: record.type, networkId: record.networkId });
    this.#refreshPublic(record.appId);
  }

  #removeIp(ip: string): void {
    const entry = this.#ips.get(ip);
    if (!entry) return;
    this.#ips.delete(ip);
    this.#refreshPublic(entry.appId);
  }

  #refreshPublic(appId: string): void {
    const app = this.#apps.get(appId);
    if (!app) return;
    app.isPublic = [...this.#ips.values()].some((ip) => ip.appId === appId && isPublicType(ip.type));
  }
}

const isPublicType = (type: IpAssignmentRecord['type']) => type === 'v6' || type === 'shared_v4';

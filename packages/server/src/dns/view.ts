import { HangarError } from '../shared/errors.js';
import type {
  AppRecord,
  IpAssignmentRecord,
  MachineRecord,
  MachineState,
  NetworkRecord,
} from '../store/records.js';
import type { Change, ChangeBatch, Store } from '../store/store.js';

/**
 * What DNS knows, per network: its apps with their machines, and the Flycast addresses callers in that
 * network may use. Built from one full store read and then kept current from the change feed, one change
 * at a time, so a write costs the view O(changes in the batch), never a rebuild.
 */

export interface DnsMachine {
  readonly id: string;
  readonly appId: string;
  readonly state: MachineState;
  readonly region: string;
  /** The machine's 6PN address; null until the network plumbing has given it one. */
  readonly privateIp: string | null;
  /** `metadata.fly_process_group`, or `app` as Fly defaults it. */
  readonly processGroup: string;
  /** The string-valued entries of `config.metadata` (what `kv._metadata` names match on). */
  readonly metadata: Readonly<Record<string, string>>;
}

export interface DnsApp {
  readonly id: string;
  readonly name: string;
  readonly networkId: number;
  /** By machine id, in insertion order. */
  readonly machines: ReadonlyMap<string, DnsMachine>;
}

export interface DnsNetwork {
  readonly id: number;
  /** The apps that live in this network, by (lowercase) name. */
  readonly apps: ReadonlyMap<string, DnsApp>;
  /**
   * Flycast addresses allocated in this network, by app id. The app itself may live in another network:
   * `--network N` exposes it to callers in N only.
   */
  readonly flycast: ReadonlyMap<string, ReadonlySet<string>>;
}

/**
 * The resolver's read-only handle on the view. It is the view's own live state, not a copy: taking it costs
 * nothing, and because the resolver reads it synchronously and batches are applied synchronously, one
 * answer never mixes two revisions. Do not keep it across an `await` and expect it to stand still.
 */
export interface DnsSnapshot {
  /** Revision of the last change batch applied (0 before the first one). */
  readonly revision: number;
  /** A network the store knows (a NetworkRecord exists); undefined otherwise. */
  network(id: number): DnsNetwork | undefined;
  /** Any app by name, whatever its network: only for Flycast, where the caller's network decides. */
  appByName(name: string): DnsApp | undefined;
  /**
   * Whether the machine at this 6PN address belongs to an app whose egress policy is `off`: then its
   * names outside .internal/.flycast are not forwarded (query names would be a way out).
   */
  egressOff?(address: string): boolean;
}

interface NetworkState {
  id: number;
  /** A NetworkRecord was seen; apps and Flycast entries can arrive first and create the state early. */
  known: boolean;
  apps: Map<string, AppState>;
  flycast: Map<string, Set<string>>;
}

interface AppState {
  id: string;
  name: string;
  networkId: number;
  machines: Map<string, DnsMachine>;
}

/** The Flycast facts kept per address, so a deletion (which carries only the key) can be undone. */
interface FlycastEntry {
  appId: string;
  networkId: number;
}

export class DnsView {
  readonly #store: Store;
  readonly #networks = new Map<number, NetworkState>();
  readonly #apps = new Map<string, AppState>();
  readonly #appsByName = new Map<string, AppState>();
  /**
   * Machines by app id, separate from the apps: a machine may be seen before its app (or outlive it by a
   * batch), and the app picks up the same map when it arrives.
   */
  readonly #machinesByApp = new Map<string, Map<string, DnsMachine>>();
  readonly #machines = new Map<string, DnsMachine>();
  /** Apps whose egress policy is `off`, by id. */
  readonly #egressOff = new Set<string>();
  /** The app of each machine's 6PN address. */
  readonly #appOfAddress = new Map<string, string>();
  readonly #flycast = new Map<string, FlycastEntry>();
  #revision = 0;
  #snapshot: DnsSnapshot | undefined;
  #unwatch: (() => void) | undefined;
  #started = false;
  #closed = false;

  constructor(store: Store) {
    this.#store = store;
  }

  /**
   * Subscribes to the change feed, then reads everything once. Batches that commit while the read runs
   * are held and replayed after it: each change carries the whole document (or a deletion), so replaying
   * one the read already saw is harmless, and replaying in commit order ends at the newest state.
   */
  async start(): Promise<void> {
    if (this.#closed) throw new HangarError('internal', 'the DNS view is closed');
    if (this.#started) return;
    this.#started = true;
    let held: ChangeBatch[] | undefined = [];
    this.#unwatch = this.#store.watch((batch) => {
      if (held) held.push(batch);
      else this.apply(batch);
    });
    try {
      const all = await this.#store.read((tx) => ({
        networks: tx.networks.list(),
        apps: tx.apps.list(),
        machines: tx.machines.list(),
        ips: tx.ipAssignments.list(),
      }));
      for (const network of all.networks) this.#putNetwork(network);
      for (const app of all.apps) this.#putApp(app);
      for (const machine of all.machines) this.#putMachine(machine);
      for (const ip of all.ips) this.#putIp(ip);
    } catch (error) {
      this.close();
      throw error;
    }
    const pending = held;
    held = undefined;
    for (const batch of pending) this.apply(batch);
  }

  close(): void {
    this.#closed = true;
    this.#unwatch?.();
    this.#unwatch = undefined;
  }

  /**
   * Applies one committed batch. Each change is a whole document or a deletion by key, and maps as:
   * - networks: upsert marks the network known (networks are never deleted: ids are not reused);
   * - apps: upsert (re)links the app under its network and name, delete unlinks it (its machines stay
   *   indexed by app id until their own deletions arrive, which the store sends in the same batch);
   * - machines: upsert replaces the machine in its app's map, delete removes it;
   * - ipAssignments: a `private_v6` with a network adds the address to that network's Flycast set for the
   *   app; any other upsert or a delete removes whatever that address contributed before;
   * - every other collection is ignored.
   */
  apply(batch: ChangeBatch): void {
    for (const change of batch.changes) this.#applyChange(change);
    this.#revision = Math.max(this.#revision, batch.revision);
  }

  /** O(1): the handle is made once per applied batch, not per query. */
  snapshot(): DnsSnapshot {
    if (this.#snapshot?.revision !== this.#revision) {
      const networks = this.#networks;
      const appsByName = this.#appsByName;
      this.#snapshot = {
        revision: this.#revision,
        network: (id) => {
          const network = networks.get(id);
          return network?.known ? network : undefined;
        },
        appByName: (name) => appsByName.get(name.toLowerCase()),
        egressOff: (address) => {
          const appId = this.#appOfAddress.get(address.replace(/%.*$/, ''));
          return appId !== undefined && this.#egressOff.has(appId);
        },
      };
    }
    return this.#snapshot;
  }

  #applyChange(change: Change): void {
    switch (change.collection) {
      case 'networks':
        if (change.doc) this.#putNetwork(change.doc as NetworkRecord);
        return;
      case 'apps':
        this.#removeApp(change.key);
        if (change.doc) this.#putApp(change.doc as AppRecord);
        return;
      case 'machines':
        this.#removeMachine(change.key);
        if (change.doc) this.#putMachine(change.doc as MachineRecord);
        return;
      case 'ipAssignments':
        this.#removeIp(change.key);
        if (change.doc) this.#putIp(change.doc as IpAssignmentRecord);
        return;
      default:
        return;
    }
  }

  #network(id: number): NetworkState {
    let network = this.#networks.get(id);
    if (!network) {
      network = { id, known: false, apps: new Map(), flycast: new Map() };
      this.#networks.set(id, network);
    }
    return network;
  }

  #machineMap(appId: string): Map<string, DnsMachine> {
    let machines = this.#machinesByApp.get(appId);
    if (!machines) {
      machines = new Map();
      this.#machinesByApp.set(appId, machines);
    }
    return machines;
  }

  #putNetwork(record: NetworkRecord): void {
    this.#network(record.id).known = true;
  }

  #putApp(record: AppRecord): void {
    const app: AppState = {
      id: record.id,
      name: record.name.toLowerCase(),
      networkId: record.networkId,
      machines: this.#machineMap(record.id),
    };
    this.#apps.set(app.id, app);
    this.#appsByName.set(app.name, app);
    if (record.egress?.mode === 'off') this.#egressOff.add(app.id);
    this.#network(app.networkId).apps.set(app.name, app);
  }

  #removeApp(id: string): void {
    this.#egressOff.delete(id);
    const app = this.#apps.get(id);
    if (!app) return;
    this.#apps.delete(id);
    if (this.#appsByName.get(app.name) === app) this.#appsByName.delete(app.name);
    const network = this.#networks.get(app.networkId);
    if (network?.apps.get(app.name) === app) network.apps.delete(app.name);
    if (app.machines.size === 0) this.#machinesByApp.delete(id);
  }

  #putMachine(record: MachineRecord): void {
    const metadata = record.config.metadata ?? {};
    const machine: DnsMachine = {
      id: record.id,
      appId: record.appId,
      state: record.state,
      region: record.region,
      privateIp: record.privateIp,
      processGroup: metadata.fly_process_group ?? 'app',
      metadata,
    };
    this.#machines.set(machine.id, machine);
    this.#machineMap(machine.appId).set(machine.id, machine);
    if (machine.privateIp !== null) this.#appOfAddress.set(machine.privateIp, machine.appId);
  }

  #removeMachine(id: string): void {
    const machine = this.#machines.get(id);
    if (!machine) return;
    this.#machines.delete(id);
    if (machine.privateIp !== null && this.#appOfAddress.get(machine.privateIp) === machine.appId) {
      this.#appOfAddress.delete(machine.privateIp);
    }
    const machines = this.#machinesByApp.get(machine.appId);
    if (!machines) return;
    machines.delete(id);
    // Keep the (empty) map while its app exists: the app holds a reference to it.
    if (machines.size === 0 && !this.#apps.has(machine.appId)) this.#machinesByApp.delete(machine.appId);
  }

  #putIp(record: IpAssignmentRecord): void {
    if (record.type !== 'private_v6' || record.networkId === null) return;
    const entry: FlycastEntry = { appId: record.appId, networkId: record.networkId };
    this.#flycast.set(record.ip, entry);
    const byApp = this.#network(entry.networkId).flycast;
    let addresses = byApp.get(entry.appId);
    if (!addresses) {
      addresses = new Set();
      byApp.set(entry.appId, addresses);
    }
    addresses.add(record.ip);
  }

  #removeIp(ip: string): void {
    const entry = this.#flycast.get(ip);
    if (!entry) return;
    this.#flycast.delete(ip);
    const byApp = this.#networks.get(entry.networkId)?.flycast;
    const addresses = byApp?.get(entry.appId);
    if (!byApp || !addresses) return;
    addresses.delete(ip);
    if (addresses.size === 0) byApp.delete(entry.appId);
  }
}

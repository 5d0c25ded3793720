/**
 * The host's private networks, kept in step with the store: the orchestrator never calls it. A bridge
 * exists for every network that has an app, a veth for every live machine that has booted here, and
 * the rules list exactly the store's live machines and Flycast addresses. It follows the store's change
 * feed (an app deleted, a machine destroyed, an address allocated) and is rebuilt from the store at
 * start; the one call it takes from elsewhere is `attach`, from the runtime, as a machine boots.
 */

import {
  type Attachment,
  type AttachmentRequest,
  type NetworkPlan,
  planAttachment,
  planNetwork,
} from '../sixpn/address-plan.js';
import { DEFAULT_PRIVATE_V4_RANGE, isMachineIpv4, parseIpv4Range } from '../sixpn/ipv4.js';
import { netnsName } from '../sixpn/netns.js';
import type { AppRecord, EgressPolicyRecord, IpAssignmentRecord, MachineRecord } from '../store/records.js';
import type { ChangeBatch, Store } from '../store/store.js';
import { acquireHostNetworkLock, type HostLock, type HostLockOptions } from './host-lock.js';
import { LinuxNetwork, type ReconcileResult } from './linux-net.js';
import type { DesiredNetState } from './ruleset.js';
import { servicePorts } from './service-ports.js';

export interface HostNetworkOptions {
  store: Store;
  /** This host's id (8 hex digits): part of every machine address here. */
  hostId: string;
  /** Machines may reach the outside world through the host. */
  egress: boolean;
  /** The machines' private IPv4 range (config `network.privateV4Range`); default sixpn/ipv4.ts's. */
  privateV4Range?: string;
  /** Local networks the operator lets machines reach (config `network.egressLocal`). */
  egressLocal?: readonly string[];
  /** Conditions the operator should hear of; nothing fails because of them. */
  onWarning: (message: string) => void;
  /** A network's bridge came up here (at reconcile or later): its `::3` can be listened on now. */
  onNetworkUp?: (network: NetworkPlan) => Promise<void>;
  /** For tests that share one host: wait for the host lock instead of failing at once. */
  lock?: HostLockOptions;
  linux?: LinuxNetwork;
}

/** The plumbing the records ask for on this host. Pure: records in, desired state out. */
export function desiredNetState(
  records: { apps: AppRecord[]; machines: MachineRecord[]; ips: IpAssignmentRecord[] },
  hostId: string,
  egress: boolean,
  privateV4Range: string = DEFAULT_PRIVATE_V4_RANGE,
  egressLocal: readonly string[] = [],
): DesiredNetState {
  const range = parseIpv4Range(privateV4Range);
  const policyOfApp = new Map(
    records.apps.flatMap((app) => (app.egress ? [[app.id, app.egress] as const] : [])),
  );
  const egressPolicies = new Map<string, EgressPolicyRecord>();
  const networkOfApp = new Map(records.apps.map((app) => [app.id, app.networkId]));
  const networkIds = [...new Set(networkOfApp.values())].sort((a, b) => a - b);
  const attachments = records.machines.flatMap((machine) => {
    const networkId = networkOfApp.get(machine.appId);
    if (!isAttachable(machine, hostId) || networkId === undefined) return [];
    const policy = policyOfApp.get(machine.appId);
    if (policy) egressPolicies.set(machine.id, policy);
    // An address outside the range (the operator changed it) is replaced at start; until then, none.
    const ipv4 =
      machine.privateIpv4 !== undefined && isMachineIpv4(range, machine.privateIpv4)
        ? { ipv4: machine.privateIpv4 }
        : {};
    return [
      planAttachment({
        machineId: machine.id,
        machineNumber: machine.machineNumber!,
        networkId,
        hostId,
        ...ipv4,
      }),
    ];
  });
  // A Flycast address opens what its app's machines serve (the proxy's listeners): the services of
  // every machine of the app that is not destroyed, stopped ones included (the proxy starts them).
  const configsOfApp = new Map<string, MachineRecord['config'][]>();
  for (const machine of records.machines) {
    if (machine.state === 'destroyed') continue;
    configsOfApp.set(machine.appId, [...(configsOfApp.get(machine.appId) ?? []), machine.config]);
  }
  const flycast = records.ips.flatMap((ip) =>
    ip.type === 'private_v6' && ip.networkId !== null
      ? [{ networkId: ip.networkId, address: ip.ip, ports: servicePorts(configsOfApp.get(ip.appId) ?? []) }]
      : [],
  );
  return {
    networks: networkIds.map((id) => planNetwork(id, hostId)),
    attachments,
    flycast,
    egress,
    egressPolicies,
    egressLocal,
    privateV4Range: range.cidr,
  };
}

/** A machine of this host that is not destroyed and has a machine number has (or will have) a veth. */
function isAttachable(machine: MachineRecord, hostId: string): boolean {
  return machine.state !== 'destroyed' && machine.machineNumber !== undefined && machine.hostId === hostId;
}

/**
 * It is the runtime's NetworkAttacher (declared in runtime/runtime.ts, which net/ does not import):
 * daemon.ts hands it to the runtime, and the compiler checks the fit there.
 */
export class HostNetwork {
  readonly #options: HostNetworkOptions;
  readonly #linux: LinuxNetwork;
  readonly #lock: HostLock;
  readonly #unwatch: () => void;
  /** Networks whose bridge is up here. */
  readonly #up = new Set<number>();
  /** Machines that may have a veth here, with what it was planned as (detach needs the names). */
  readonly #attached = new Map<string, Attachment>();
  /** Machines the applied rules list: a boot of one of them (a wake after stop) needs no rules change. */
  #ruled = new Set<string>();
  /** What the change feed last showed, so only changes that matter start a sync. */
  readonly #liveMachines = new Set<string>();
  /** The service ports of each machine not destroyed, as text: a change reopens its app's Flycast ports. */
  readonly #servicePorts = new Map<string, string>();
  /** Each live machine's private IPv4 address: a new one (given at start) is plugged in by a sync. */
  readonly #ipv4 = new Map<string, string | undefined>();
  readonly #apps = new Set<string>();
  /** Each app's egress policy as text, to notice a change. */
  readonly #egressOfApp = new Map<string, string>();
  /** Syncs asked for and finished, counted: a caller waits for a sync that started after its call. */
  #requested = 0;
  #finished = 0;
  #loop: Promise<void> | undefined;
  #waiters: { after: number; resolve: () => void; reject: (error: Error) => void }[] = [];

  private constructor(options: HostNetworkOptions, lock: HostLock) {
    this.#options = options;
    this.#lock = lock;
    this.#linux =
      options.linux ??
      new LinuxNetwork({
        onWarning: options.onWarning,
        ...(options.privateV4Range ? { privateV4Range: options.privateV4Range } : {}),
      });
    this.#unwatch = options.store.watch((batch) => this.#onChanges(batch));
  }

  /** Takes the host's networking (one owner per host) and rebuilds it from the store. */
  static async start(options: HostNetworkOptions): Promise<HostNetwork> {
    const lock = await acquireHostNetworkLock(options.lock);
    const network = new HostNetwork(options, lock);
    try {
      await network.reconcile();
    } catch (error) {
      await network.close();
      throw error;
    }
    return network;
  }

  /** Makes the host match the store: missing bridges and veths of running machines made, strays removed. */
  async reconcile(): Promise<ReconcileResult> {
    const desired = await this.#desired();
    this.#ruled = new Set();
    const result = await this.#linux.reconcile(desired);
    this.#ruled = ruledKeysOf(desired);
    this.#up.clear();
    this.#attached.clear();
    for (const attachment of desired.attachments) this.#attached.set(attachment.machineId, attachment);
    for (const network of desired.networks) {
      this.#up.add(network.id);
      await this.#options.onNetworkUp?.(network);
    }
    return result;
  }

  /** The runtime's call as a machine boots: its namespace gets its eth0, and the rules admit it. */
  async attach(
    machineId: string,
    netns: string,
    place: Pick<AttachmentRequest, 'networkId' | 'machineNumber' | 'ipv4'>,
  ): Promise<void> {
    const network = planNetwork(place.networkId, this.#options.hostId);
    if (!this.#up.has(network.id)) await this.#bringUp(network);
    const attachment = planAttachment({ machineId, hostId: this.#options.hostId, ...place });
    await this.#linux.attach(netns, attachment);
    this.#attached.set(machineId, attachment);
    // Until the rules list the machine the bridge drops what it sends: wait for them. They name it by
    // its veth and addresses, which never change, so once listed it stays covered across boots.
    if (!this.#ruled.has(ruledKey(attachment))) await this.sync();
  }

  /** The networks whose bridge is up here. */
  networksUp(): NetworkPlan[] {
    return [...this.#up].map((id) => planNetwork(id, this.#options.hostId));
  }

  /** Brings links and rules in line with the store; resolves once a pass that began after the call ends. */
  sync(): Promise<void> {
    const after = ++this.#requested;
    const done = new Promise<void>((resolve, reject) => this.#waiters.push({ after, resolve, reject }));
    this.#loop ??= this.#runSyncs();
    return done;
  }

  /**
   * Stops following the store. Bridges, veths and rules stay while the store has live machines, which
   * keep running while hangard restarts; with none (or with `removeAll`: tests, uninstall) every
   * bridge, veth, route and rule goes, and the next start rebuilds what the store asks for.
   */
  async close(options: { removeAll?: boolean } = {}): Promise<void> {
    this.#unwatch();
    try {
      await this.#loop;
      const idle = await this.#desired().then(
        (desired) => desired.attachments.length === 0,
        () => false,
      );
      if (options.removeAll || idle) await this.#linux.removeAll();
      await this.#linux.close();
    } finally {
      this.#lock.release();
    }
  }

  // ---- internals ------------------------------------------------------------------------------------

  async #desired(): Promise<DesiredNetState> {
    const records = await this.#options.store.read((tx) => ({
      apps: tx.apps.list(),
      machines: tx.machines.list(),
      ips: tx.ipAssignments.list(),
    }));
    for (const app of records.apps) {
      this.#apps.add(app.id);
      this.#egressOfApp.set(app.id, JSON.stringify(app.egress ?? null));
    }
    for (const machine of records.machines) {
      if (isAttachable(machine, this.#options.hostId)) {
        this.#liveMachines.add(machine.id);
        this.#ipv4.set(machine.id, machine.privateIpv4);
      }
      this.#noteServicePorts(machine.id, machine);
    }
    return desiredNetState(
      records,
      this.#options.hostId,
      this.#options.egress,
      this.#options.privateV4Range,
      this.#options.egressLocal,
    );
  }

  /** Only what changes the plumbing starts a sync: apps and live machines coming and going, Flycast. */
  #onChanges(batch: ChangeBatch): void {
    let relevant = false;
    for (const change of batch.changes) {
      if (change.collection === 'ipAssignments') relevant = true;
      else if (change.collection === 'apps') {
        relevant = flip(this.#apps, change.key, change.doc !== undefined) || relevant;
        // The app's egress policy follows the store live: a change is a rules delta.
        const egress = JSON.stringify((change.doc as AppRecord | undefined)?.egress ?? null);
        if (change.doc === undefined) this.#egressOfApp.delete(change.key);
        else if (this.#egressOfApp.get(change.key) !== egress) {
          this.#egressOfApp.set(change.key, egress);
          relevant = true;
        }
      } else if (change.collection === 'machines') {
        const machine = change.doc as MachineRecord | undefined;
        const live = machine !== undefined && isAttachable(machine, this.#options.hostId);
        relevant = flip(this.#liveMachines, change.key, live) || relevant;
        relevant = this.#noteServicePorts(change.key, machine) || relevant;
        const ipv4 = live ? machine.privateIpv4 : undefined;
        relevant = (this.#ipv4.get(change.key) !== ipv4 && live) || relevant;
        if (live) this.#ipv4.set(change.key, ipv4);
        else this.#ipv4.delete(change.key);
      }
    }
    if (relevant) {
      this.sync().catch((error: Error) =>
        this.#options.onWarning(`private networks: could not follow a change: ${error.message}`),
      );
    }
  }

  /** Records what a machine serves (nothing once destroyed or gone); whether that changed. */
  #noteServicePorts(machineId: string, machine: MachineRecord | undefined): boolean {
    const ports =
      machine && machine.state !== 'destroyed' ? JSON.stringify(servicePorts([machine.config])) : '[]';
    const before = this.#servicePorts.get(machineId) ?? '[]';
    if (ports === '[]') this.#servicePorts.delete(machineId);
    else this.#servicePorts.set(machineId, ports);
    return ports !== before;
  }

  async #runSyncs(): Promise<void> {
    while (this.#finished < this.#requested) {
      const target = this.#requested;
      let failure: Error | undefined;
      try {
        await this.#syncOnce();
      } catch (error) {
        failure = error as Error;
      }
      this.#finished = target;
      const settled = this.#waiters.filter((w) => w.after <= target);
      this.#waiters = this.#waiters.filter((w) => w.after > target);
      for (const waiter of settled) {
        if (failure) waiter.reject(failure);
        else waiter.resolve();
      }
    }
    this.#loop = undefined;
  }

  async #syncOnce(): Promise<void> {
    const desired = await this.#desired();
    // Destroyed machines are unplugged, and a network whose last app is gone loses its bridge (its id
    // stays reserved in the store).
    const live = machineIdsOf(desired);
    for (const [machineId, attachment] of this.#attached) {
      if (live.has(machineId)) continue;
      await this.#linux.detach(attachment);
      this.#attached.delete(machineId);
    }
    const wanted = new Set(desired.networks.map((n) => n.id));
    for (const id of this.#up) {
      if (wanted.has(id)) continue;
      await this.#linux.removeNetwork(planNetwork(id, this.#options.hostId));
      this.#up.delete(id);
    }
    for (const network of desired.networks) if (!this.#up.has(network.id)) await this.#bringUp(network);
    this.#ruled = new Set(); // unknown until this apply succeeds
    await this.#linux.applyRules(desired);
    this.#ruled = ruledKeysOf(desired);
    // A machine plugged in before it had a private IPv4 address (given at start) gets it now.
    for (const attachment of desired.attachments) {
      const plugged = this.#attached.get(attachment.machineId);
      if (!plugged || plugged.ipv4 === attachment.ipv4 || attachment.ipv4 === undefined) continue;
      await this.#linux.attach(netnsName(attachment.machineId), attachment);
      this.#attached.set(attachment.machineId, attachment);
    }
  }

  async #bringUp(network: NetworkPlan): Promise<void> {
    await this.#linux.ensureNetwork(network);
    this.#up.add(network.id);
    await this.#options.onNetworkUp?.(network);
  }
}

const machineIdsOf = (desired: DesiredNetState) => new Set(desired.attachments.map((a) => a.machineId));
/** The rules cover a machine as planned: its id with its IPv4 address (which a start may give it). */
const ruledKey = (a: Attachment) => `${a.machineId} ${a.ipv4 ?? ''}`;
const ruledKeysOf = (desired: DesiredNetState) => new Set(desired.attachments.map(ruledKey));

/** Puts `key` in or out of `set`; whether that changed anything. */
function flip(set: Set<string>, key: string, present: boolean): boolean {
  if (set.has(key) === present) return false;
  if (present) set.add(key);
  else set.delete(key);
  return true;
}

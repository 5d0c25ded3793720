/**
 * Hangar's networks on a Linux host: one bridge per network, a veth from each machine's network
 * namespace into its network's bridge, and the nftables rules of ruleset.ts. Everything is found by
 * name (address-plan.ts), so a reconcile pass can rebuild it from the store and remove what the store
 * no longer has.
 *
 * Where traffic goes, and what that needs from the kernel:
 *
 * - Machine ↔ machine of one network on this host: switched by the bridge (L2). The machine has a
 *   route for the network's /80 block on this host on-link through eth0, so its peers are reached by
 *   neighbour discovery on the bridge, never through the host's routing. No forwarding sysctl is
 *   involved; the bridge table of the rules checks every frame's source.
 * - Machine → its network's ::3 and fdaa::3: to the default gateway (the bridge's address) and
 *   delivered locally on the host. `<prefix>::3` sits on the network's bridge. `fdaa::3` sits once on
 *   the host's loopback rather than on every bridge: one address whatever the number of networks, not
 *   removed with any one network, and a DNS server binds it once. A machine still reaches it only
 *   through its own bridge (its only interface, whose gateway is that bridge), the rules accept it only
 *   as `<that bridge> . fdaa::3 . udp|tcp . 53`, and the answer is attributed to the caller's network
 *   by source address (networkIdOf), which the bridge table guarantees is the machine's own.
 * - Machine → a Flycast address of its network (`fdaa:N:N:0:1::<n>`, the proxy): outside the machine's
 *   on-link block, so to the gateway, and delivered locally on the host because each bridge carries a
 *   local route for its network's whole Flycast block (AnyIP: a socket on `::` accepts any address in
 *   it, so allocating an address needs no change here, only a rule element). The route is on the
 *   network's bridge, so it goes with the bridge; the kernel also drops it when the bridge goes down,
 *   which reconcile repairs. Every bridge's block is local to the host, so the rules, not routing,
 *   keep a machine to its own network's addresses, and only to allocated ones.
 * - Machine → another network: it would be routed (bridge A → host → bridge B). It is dropped by the
 *   rules, and, unless egress is on, the kernel would not even forward it.
 * - Host → a machine's private IPv4 address (the proxy): a /32 route through the machine's bridge, from
 *   the gateway address that sits (as a /32) on every bridge. The machine has the address as a /32 on
 *   eth0 with the gateway as its only neighbour and default route, so its IPv4 always goes through the
 *   host, whose rules let only replies to the host's own connections through. The rest of the range is
 *   an unreachable route on the host.
 * - Machine → the outside (egress): routed and masqueraded. Needs IPv6 forwarding on the bridge it
 *   enters through (per-interface `force_forwarding`, Linux 6.17 or later, written only on Hangar's
 *   bridges and only while egress is on) and for the replies on the uplink, which is the operator's to
 *   allow (`net.ipv6.conf.all.forwarding=1` or `net.ipv6.conf.<uplink>.force_forwarding=1`); Hangar
 *   never changes host-wide or uplink sysctls and warns when egress cannot work.
 *
 * Sysctls written, all per interface and all on interfaces Hangar created: on each bridge `accept_dad=0`
 * (see #configureBridge), `accept_ra=0` (a machine must never configure the host), `forwarding=1` (the
 * IPv6 per-interface flag only makes the bridge act as a router in neighbour discovery: it is the
 * machines' gateway; it forwards nothing), `force_forwarding` = egress, and for IPv4 `forwarding` =
 * egress (IPv4 decides by the interface a packet arrives on) and `send_redirects=0`; on each host-side veth
 * `disable_ipv6=1` (a bridge port needs no address). Inside the machine's namespace nothing is written:
 * eth0 gets `addrgenmode none` and explicit addresses instead.
 */
import { existsSync } from 'node:fs';
import { readFile, readlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { HangarError } from '../shared/errors.js';
import { KeyedQueue } from '../shared/keyed-queue.js';
import { type CommandResult, type RunOptions, runCommand } from '../shared/run.js';
import {
  type Attachment,
  HOST_BLOCK_PREFIX_LENGTH,
  MACHINE_INTERFACE,
  MACHINE_PREFIX_LENGTH,
  machineNumberOfVeth,
  type NetworkPlan,
  networkIdOfBridge,
  pendingVethName,
} from '../sixpn/address-plan.js';
import { cidrContains, networkOfInterfaceAddress, parseCidr } from '../sixpn/cidr.js';
import {
  DEFAULT_PRIVATE_V4_RANGE,
  type Ipv4Range,
  inIpv4Range,
  ipv4Gateway,
  parseIpv4Range,
} from '../sixpn/ipv4.js';
import { netnsName } from '../sixpn/netns.js';
import { RESOLVER_ADDRESS } from '../sixpn/resolver.js';
import {
  buildRuleset,
  type DesiredNetState,
  deleteRulesetText,
  flycastBlock,
  type RulesetState,
  rulesetDelta,
  rulesetState,
} from './ruleset.js';

/** Runs a tool with an argument array; the default is shared/run.ts's runCommand. */
export type CommandRunner = (
  file: string,
  args: readonly string[],
  options?: RunOptions,
) => Promise<CommandResult>;

export interface LinuxNetworkOptions {
  run?: CommandRunner;
  /** Bound on one ip or nft run. */
  commandTimeoutMs?: number;
  /** Where `ip netns` keeps named namespaces. */
  netnsDir?: string;
  /** Conditions that do not fail an operation but that the operator should hear of (egress). */
  onWarning?: (message: string) => void;
  /** The machines' private IPv4 range (sixpn/ipv4.ts); default DEFAULT_PRIVATE_V4_RANGE. */
  privateV4Range?: string;
}

export interface ApplyOptions {
  /** Replace both tables even when adding and deleting set elements would do (reconcile does). */
  full?: boolean;
}

export interface ApplyResult {
  networks: number;
  machines: number;
  /** How the kernel was updated: tables replaced, set elements changed, or nothing to change. */
  mode: 'full' | 'delta' | 'unchanged';
  /** Egress rules were written (the host's switch is on). */
  egress: boolean;
  warnings: string[];
}

export interface ReconcileOptions {
  /** The network namespace of an attachment's machine; by default the runtime's `hangar-<machine id>`. */
  netnsOf?: (attachment: Attachment) => string;
}

export interface ReconcileResult {
  createdBridges: string[];
  removedBridges: string[];
  attached: string[];
  removedVeths: string[];
  /** Attachments whose machine has no network namespace (not running): nothing to plug in yet. */
  skipped: string[];
  rules: ApplyResult;
}

interface PendingApply {
  desired: DesiredNetState;
  full: boolean;
  promise?: Promise<ApplyResult>;
}

interface LinkInfo {
  ifname: string;
  master?: string;
  flags?: string[];
}

const PROC_IPV6_CONF = '/proc/sys/net/ipv6/conf';
const PROC_IPV4_CONF = '/proc/sys/net/ipv4/conf';
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
/**
 * Extra time per command of an `ip -batch`: deleting a bridge waits for the kernel to retire it (about
 * 35 ms each here), so removing a thousand networks takes longer than any fixed bound.
 */
const PER_BATCH_LINE_MS = 200;
const LINKS = 'links';
const RULES = 'rules';

/** Only names of the plan's exact shape are Hangar's to remove (`hgn` + up to 8 hex digits, …). */
const isHangarBridge = (name: string) => networkIdOfBridge(name) !== undefined;
const isHangarVeth = (name: string) => machineNumberOfVeth(name) !== undefined;
/** ip's way of saying that a link is already gone: deleting it again is success. */
const GONE = /Cannot find device|does not exist/;

export class LinuxNetwork {
  readonly #run: CommandRunner;
  readonly #timeoutMs: number;
  readonly #netnsDir: string;
  readonly #onWarning: (message: string) => void;
  readonly #v4: Ipv4Range;
  readonly #v4Gateway: string;
  /** Link changes run one at a time (a network's removal never interleaves with an attach to it). */
  readonly #queue = new KeyedQueue();
  /** The next rules apply that has not started yet; callers arriving meanwhile share it (coalescing). */
  #nextApply: PendingApply | undefined;
  /** What the kernel holds since the last successful apply; unknown (undefined) after a failure. */
  #applied: RulesetState | undefined;
  /** The egress setting of the last applied rules; bridges created later get the matching sysctl. */
  #egress = false;
  /** Warnings already given (each is given once). */
  readonly #warned = new Set<string>();
  /** fdaa::3 is on the loopback (added once, by the first ensureNetwork or reconcile). */
  #resolverReady = false;
  /** The private IPv4 range has its unreachable route (added once, like the resolver). */
  #v4RangeReady = false;
  #closed = false;

  constructor(options: LinuxNetworkOptions = {}) {
    this.#run = options.run ?? runCommand;
    this.#timeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.#netnsDir = options.netnsDir ?? '/var/run/netns';
    this.#onWarning = options.onWarning ?? (() => {});
    this.#v4 = parseIpv4Range(options.privateV4Range ?? DEFAULT_PRIVATE_V4_RANGE);
    this.#v4Gateway = ipv4Gateway(this.#v4);
  }

  /** Creates the network's bridge with its addresses, sysctls and Flycast route; idempotent. */
  ensureNetwork(network: NetworkPlan): Promise<void> {
    return this.#links(async () => {
      if (!(await this.#linkExists(network.bridge))) await this.#createBridges([network]);
      await this.#configureBridge(network);
      await this.#ip(
        ['-6', '-batch', '-'],
        [...bridgeAddressLines(network), `link set dev ${network.bridge} up`, flycastRouteLine(network)],
      );
      await this.#ip(['-4', '-batch', '-'], [this.#bridgeV4Line(network)]);
      await this.#ensureResolver();
      await this.#ensureV4Range();
    });
  }

  /**
   * Plugs a machine's network namespace into its network's bridge: a veth pair whose machine end is
   * `eth0` with the machine's /112 address (nodad: no duplicate detection delay, the plan makes addresses
   * unique), an on-link route for the network's block on this host, and the default route via the
   * bridge. The network must exist (ensureNetwork). Until the rules list the attachment, the bridge
   * drops everything the machine sends (fail closed), so call applyRules next. Idempotent: an existing
   * attachment is only re-enslaved and brought up.
   */
  attach(machineNetns: string, attachment: Attachment): Promise<void> {
    return this.#links(async () => {
      // A machine that boots again after a stop kept its veth: nothing to do, and no process to learn it.
      if (await isPluggedIn(attachment.veth, attachment.bridge)) return;
      if (await this.#linkExists(attachment.veth)) {
        await this.#ip(['link', 'set', 'dev', attachment.veth, 'master', attachment.bridge, 'up']);
        // A machine attached before it had an IPv4 address gets it at its next boot.
        await this.#plugIpv4(machineNetns, attachment);
        return;
      }
      await this.#attachNew(machineNetns, attachment);
    });
  }

  /** Unplugs a machine (its eth0 goes with the host end); idempotent. Apply the rules without it next. */
  detach(attachment: Attachment): Promise<void> {
    return this.#links(async () => {
      await this.#deleteLinks([attachment.veth, pendingVethName(attachment.machineNumber)]);
      if (attachment.ipv4 !== undefined) await this.#deleteV4Routes([attachment.ipv4]);
    });
  }

  /** Removes the network's bridge and every veth still plugged into it; idempotent. */
  removeNetwork(network: NetworkPlan): Promise<void> {
    return this.#links(async () => {
      const ports = (await this.#listLinks('veth')).filter(
        (link) => link.master === network.bridge && isHangarVeth(link.ifname),
      );
      await this.#deleteLinks([...ports.map((link) => link.ifname), network.bridge]);
    });
  }

  /**
   * Makes the Hangar tables hold the rules for `desired`, atomically (one nft transaction). The first
   * apply of an instance, a change of egress, a failed apply and `full` replace both tables; otherwise
   * only the set elements that changed are added and deleted, so attaching one machine costs the same
   * with 1 or 1,000 networks. Applies are serialized; calls made while one is waiting to run share it
   * with the newest desired state, so a burst of attaches costs one or two applies, and every caller
   * resolves once rules at least as new as its own are in place (or rejects with that apply's error).
   */
  applyRules(desired: DesiredNetState, options: ApplyOptions = {}): Promise<ApplyResult> {
    this.#checkOpen();
    const waiting = this.#nextApply;
    if (waiting) {
      waiting.desired = desired;
      waiting.full ||= options.full === true;
      return waiting.promise!;
    }
    const pending: PendingApply = { desired, full: options.full === true };
    // The queue starts the task on a later tick, after #nextApply is set below.
    pending.promise = this.#queue.run(RULES, () => {
      if (this.#nextApply === pending) this.#nextApply = undefined;
      return this.#applyNow(pending.desired, pending.full);
    });
    this.#nextApply = pending;
    return pending.promise;
  }

  /**
   * Makes the host match `desired`: rules first (so whatever appears next is already policed), then
   * creates missing bridges, addresses, Flycast routes and veths, and removes Hangar-named bridges and
   * veths that are not desired. Running it again changes nothing. Bridges, addresses and routes are fixed
   * with one `ip -batch` per step whatever the number of networks; each missing veth costs one attach.
   */
  async reconcile(desired: DesiredNetState, options: ReconcileOptions = {}): Promise<ReconcileResult> {
    // A full replace: whatever changed the tables behind this instance's back is undone.
    const rules = await this.applyRules(desired, { full: true });
    const netnsOf = options.netnsOf ?? ((a: Attachment) => netnsName(a.machineId));
    return this.#links(async () => {
      const result: ReconcileResult = {
        createdBridges: [],
        removedBridges: [],
        attached: [],
        removedVeths: [],
        skipped: [],
        rules,
      };
      const wantedBridges = new Map(desired.networks.map((n) => [n.bridge, n]));
      const wantedVeths = new Map(desired.attachments.map((a) => [a.veth, a]));
      const bridges = (await this.#listLinks('bridge')).filter((l) => isHangarBridge(l.ifname));
      const veths = (await this.#listLinks('veth')).filter((l) => isHangarVeth(l.ifname));

      // 1. Remove what is not desired: leftovers of an interrupted attach (hgw…), veths of machines
      //    that are gone, bridges of networks that are gone.
      result.removedVeths = veths.filter((l) => !wantedVeths.has(l.ifname)).map((l) => l.ifname);
      result.removedBridges = bridges.filter((l) => !wantedBridges.has(l.ifname)).map((l) => l.ifname);
      await this.#deleteLinks([...result.removedVeths, ...result.removedBridges]);

      // 2. Bridges: create the missing ones, then addresses and state for all, in one batch.
      const present = new Set(bridges.map((l) => l.ifname));
      const missing = desired.networks.filter((n) => !present.has(n.bridge));
      await this.#createBridges(missing);
      result.createdBridges = missing.map((n) => n.bridge);
      for (const network of desired.networks) await this.#configureBridge(network);
      const interfaces = await this.#interfaces();
      // The host's own networks leave Hangar's links out: the bridges just made do not change them.
      this.#checkV4RangeIsFree(localNetworksOf(interfaces));
      const addresses = addressesOf(interfaces);
      const routes = await this.#localRoutes();
      const up = new Set(bridges.filter((l) => l.flags?.includes('UP')).map((l) => l.ifname));
      const lines: string[] = [];
      for (const network of desired.networks) {
        const have = addresses.get(network.bridge) ?? new Set<string>();
        lines.push(...bridgeAddressLines(network).filter((line) => !have.has(line.split(' ')[2]!)));
        if (!up.has(network.bridge)) lines.push(`link set dev ${network.bridge} up`);
        // After the link is up: the kernel refuses a route on a down device (and drops it on down).
        if (!routes.has(`${network.bridge} ${flycastBlock(network.id)}`))
          lines.push(flycastRouteLine(network));
      }
      // 3. Existing veths: each must be in its bridge and up. One without a bridge lost it when the bridge
      //    was recreated and is plugged back; one in another network's bridge is stale (its machine's
      //    address is of that network) and is made anew below.
      const existing = new Map(veths.map((l) => [l.ifname, l]));
      const stale: string[] = [];
      for (const attachment of desired.attachments) {
        const link = existing.get(attachment.veth);
        if (!link) continue;
        if (link.master !== undefined && link.master !== attachment.bridge) {
          stale.push(link.ifname);
          existing.delete(link.ifname);
        } else if (link.master === undefined || !link.flags?.includes('UP')) {
          lines.push(`link set dev ${attachment.veth} master ${attachment.bridge} up`);
        }
      }
      await this.#deleteLinks(stale);
      result.removedVeths.push(...stale);
      await this.#ip(['-6', '-batch', '-'], lines);
      await this.#ip(
        ['-4', '-batch', '-'],
        desired.networks
          .filter((n) => !addresses.get(n.bridge)?.has(`${this.#v4Gateway}/32`))
          .map((n) => this.#bridgeV4Line(n)),
      );
      if (!addresses.get('lo')?.has(`${RESOLVER_ADDRESS}/128`)) await this.#ensureResolver();
      await this.#ensureV4Range();

      // 3b. Private IPv4 of the machines whose veth is there: each needs its /32 route on its bridge (and
      //     its address in its namespace, which a machine plugged in before it had one lacks). Routes of
      //     machines that are gone are removed.
      const v4Routes = await this.#v4HostRoutes();
      const wantedV4 = new Set<string>();
      for (const attachment of desired.attachments) {
        if (attachment.ipv4 === undefined || !existing.has(attachment.veth)) continue;
        wantedV4.add(attachment.ipv4);
        if (v4Routes.get(attachment.ipv4) === attachment.bridge) continue;
        const netns = netnsOf(attachment);
        if (existsSync(join(this.#netnsDir, netns))) await this.#plugIpv4(netns, attachment);
      }
      await this.#deleteV4Routes([...v4Routes.keys()].filter((ip) => !wantedV4.has(ip)));

      // 4. Missing veths of running machines (their namespace exists).
      for (const attachment of desired.attachments) {
        if (existing.has(attachment.veth)) continue;
        const netns = netnsOf(attachment);
        if (!existsSync(join(this.#netnsDir, netns))) {
          result.skipped.push(attachment.machineId);
          continue;
        }
        await this.#attachNew(netns, attachment);
        result.attached.push(attachment.machineId);
      }
      return result;
    });
  }

  /**
   * Removes everything Hangar's networking put on the host: both tables, every hgn/hgv/hgw link and
   * fdaa::3 on the loopback. For uninstalling, tests and benchmarks; a daemon's close() leaves the
   * plumbing in place because machines keep running across daemon restarts.
   */
  async removeAll(): Promise<void> {
    await this.#queue.run(RULES, async () => {
      this.#applied = undefined;
      await this.#nft(deleteRulesetText());
    });
    await this.#links(async () => {
      const links = [...(await this.#listLinks('veth')), ...(await this.#listLinks('bridge'))];
      await this.#deleteLinks(
        links.map((l) => l.ifname).filter((name) => isHangarVeth(name) || isHangarBridge(name)),
      );
      const result = await this.#run('ip', ['-6', 'addr', 'del', `${RESOLVER_ADDRESS}/128`, 'dev', 'lo'], {
        timeoutMs: this.#timeoutMs,
      });
      if (result.code !== 0 && !/Cannot assign|not found/i.test(result.stderr)) {
        throw new HangarError('internal', `removing ${RESOLVER_ADDRESS} from lo: ${result.stderr.trim()}`);
      }
      this.#resolverReady = false;
      // The machines' /32 routes went with the bridges; the range's unreachable route is left.
      await this.#run('ip', ['-4', 'route', 'del', 'unreachable', this.#v4.cidr], {
        timeoutMs: this.#timeoutMs,
      });
      this.#v4RangeReady = false;
    });
  }

  /** Waits for queued work; later calls fail. Leaves the plumbing in place (see removeAll). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue.drain();
  }

  // ---- internals ------------------------------------------------------------------------------------

  #checkOpen(): void {
    if (this.#closed) throw new HangarError('internal', 'LinuxNetwork is closed');
  }

  #links<T>(task: () => Promise<T>): Promise<T> {
    this.#checkOpen();
    return this.#queue.run(LINKS, task);
  }

  /** Runs ip; with `lines`, as `ip … -batch -` fed those commands on stdin (nothing to do: no run). */
  async #ip(args: string[], lines?: string[]): Promise<void> {
    if (lines && lines.length === 0) return;
    const result = await this.#run('ip', args, {
      timeoutMs: this.#timeoutMs + (lines?.length ?? 0) * PER_BATCH_LINE_MS,
      ...(lines ? { input: `${lines.join('\n')}\n` } : {}),
    });
    if (result.code !== 0) {
      const what = lines
        ? `${args.join(' ')} (${lines.length} commands, first: ${lines[0]})`
        : args.join(' ');
      throw new HangarError('internal', `ip ${what} failed: ${(result.stderr || result.stdout).trim()}`);
    }
  }

  async #nft(ruleset: string): Promise<void> {
    await this.#checked('nft', ['-f', '-'], ruleset);
  }

  /** Runs a tool and returns its stdout; fails with its stderr unless it exits 0. */
  async #checked(file: string, args: string[], input?: string): Promise<string> {
    const result = await this.#run(file, args, {
      timeoutMs: this.#timeoutMs,
      ...(input === undefined ? {} : { input }),
    });
    if (result.code !== 0) {
      const detail = (result.stderr || result.stdout).trim().split('\n').slice(-5).join(' | ');
      throw new HangarError('internal', `${file} ${args.join(' ')} failed (exit ${result.code}): ${detail}`);
    }
    return result.stdout;
  }

  async #linkExists(name: string): Promise<boolean> {
    const result = await this.#run('ip', ['link', 'show', 'dev', name], { timeoutMs: this.#timeoutMs });
    if (result.code === 0) return true;
    if (GONE.test(result.stderr)) return false;
    throw new HangarError('internal', `ip link show dev ${name} failed: ${result.stderr.trim()}`);
  }

  async #listLinks(kind: 'bridge' | 'veth'): Promise<LinkInfo[]> {
    const stdout = await this.#checked('ip', ['-j', 'link', 'show', 'type', kind]);
    return stdout.trim() ? (JSON.parse(stdout) as LinkInfo[]) : [];
  }

  /** Every interface with its IPv6 and IPv4 addresses (`ip -j addr show`). */
  async #interfaces(): Promise<InterfaceAddresses[]> {
    const stdout = await this.#checked('ip', ['-j', 'addr', 'show']);
    return stdout.trim() ? (JSON.parse(stdout) as InterfaceAddresses[]) : [];
  }

  /** The host's IPv6 local routes as `<device> <destination>` (prefixes as ip prints them). */
  async #localRoutes(): Promise<Set<string>> {
    const table = ['table', 'local', 'type', 'local'];
    const stdout = await this.#checked('ip', ['-j', '-6', 'route', 'show', ...table]);
    const routes = (stdout.trim() ? JSON.parse(stdout) : []) as { dst?: string; dev?: string }[];
    return new Set(routes.map((r) => `${r.dev} ${r.dst}`));
  }

  async #deleteLinks(names: string[]): Promise<void> {
    // One batch with -force runs every delete even when some links are already gone; the failures that
    // matter are those whose link is still there afterwards.
    if (names.length === 0) return;
    const result = await this.#run('ip', ['-force', '-batch', '-'], {
      timeoutMs: this.#timeoutMs + names.length * PER_BATCH_LINE_MS,
      input: `${names.map((name) => `link del dev ${name}`).join('\n')}\n`,
    });
    if (result.code === 0) return;
    const left = [];
    for (const name of names) if (await this.#linkExists(name)) left.push(name);
    if (left.length > 0)
      throw new HangarError('internal', `could not delete ${left.join(', ')}: ${result.stderr.trim()}`);
  }

  async #createBridges(networks: readonly NetworkPlan[]): Promise<void> {
    // Fixed MAC: a bridge otherwise takes its lowest port's, which changes as machines come and go and
    // leaves the machines' cached gateway entry stale. No multicast snooping: the bridge then floods
    // neighbour solicitations to every port instead of depending on MLD reports machines may not send.
    await this.#ip(
      ['-batch', '-'],
      networks.map((n) => `link add name ${n.bridge} address ${n.mac} type bridge mcast_snooping 0`),
    );
  }

  async #configureBridge(network: NetworkPlan): Promise<void> {
    // No duplicate address detection: the kernel sends no neighbour solicitation from the bridge until
    // its link-local address has passed DAD (a second after it comes up), so the host could not reach a
    // machine or forward to one meanwhile. The bridge's MAC, hence its link-local, is unique by the plan
    // and the rules drop any machine frame that claims it.
    await writeSysctl(network.bridge, 'accept_dad', '0');
    await writeSysctl(network.bridge, 'accept_ra', '0');
    await writeSysctl(network.bridge, 'forwarding', '1');
    await this.#setForceForwarding(network.bridge, this.#egress);
    // IPv4: the host never tells a machine of a shorter path (it has none: every machine is a /32).
    await writeFile(join(PROC_IPV4_CONF, network.bridge, 'send_redirects'), '0');
  }

  async #setForceForwarding(bridge: string, on: boolean): Promise<void> {
    if (!existsSync(join(PROC_IPV6_CONF, bridge))) return; // not created yet: ensureNetwork sets it
    // IPv4 forwarding is decided by the interface a packet arrives on: a machine's packets may be
    // routed onward only when they may leave at all.
    await writeFile(join(PROC_IPV4_CONF, bridge, 'forwarding'), on ? '1' : '0');
    if (!existsSync(join(PROC_IPV6_CONF, bridge, 'force_forwarding'))) {
      if (on) {
        this.#onWarning(
          'egress: this kernel has no per-interface force_forwarding (Linux 6.17+); egress needs ' +
            'net.ipv6.conf.all.forwarding=1, which Hangar does not set',
        );
      }
      return;
    }
    await writeSysctl(bridge, 'force_forwarding', on ? '1' : '0');
  }

  async #ensureResolver(): Promise<void> {
    if (this.#resolverReady) return;
    await this.#ip(['-6', 'addr', 'replace', `${RESOLVER_ADDRESS}/128`, 'dev', 'lo', 'nodad']);
    this.#resolverReady = true;
  }

  /**
   * The whole private IPv4 range is unreachable from the host but for the machines' /32 routes: a
   * machine whose route is missing (not plugged in yet, or gone) answers the proxy's connect at once
   * with EHOSTUNREACH, and nothing for the range ever leaves by the host's default route.
   */
  async #ensureV4Range(): Promise<void> {
    if (this.#v4RangeReady) return;
    await this.#ip(['-4', 'route', 'replace', 'unreachable', this.#v4.cidr]);
    this.#v4RangeReady = true;
  }

  /** The gateway's /32 on a bridge (the same address on every bridge), for `ip -4 -batch`. */
  #bridgeV4Line(network: NetworkPlan): string {
    return `addr replace ${this.#v4Gateway}/32 dev ${network.bridge}`;
  }

  /**
   * The machine's IPv4 address as a /32 on its eth0 with the gateway as its only neighbour and default
   * route, and the host's /32 route to it through its bridge (from the gateway's address, which is the
   * source the machine sees for the proxy's connections). Idempotent.
   */
  async #plugIpv4(machineNetns: string, a: Attachment): Promise<void> {
    if (a.ipv4 === undefined) return;
    await this.#ip(['-4', '-n', machineNetns, '-batch', '-'], this.#machineV4Lines(a));
    await this.#ip(['-4', 'route', 'replace', `${a.ipv4}/32`, 'dev', a.bridge, 'src', this.#v4Gateway]);
  }

  #machineV4Lines(a: Attachment): string[] {
    if (a.ipv4 === undefined) return [];
    return [
      `addr replace ${a.ipv4}/32 dev ${MACHINE_INTERFACE}`,
      `route replace ${this.#v4Gateway}/32 dev ${MACHINE_INTERFACE} scope link`,
      `route replace default via ${this.#v4Gateway} dev ${MACHINE_INTERFACE}`,
    ];
  }

  /** The host's /32 routes into the private IPv4 range through Hangar bridges: address → bridge. */
  async #v4HostRoutes(): Promise<Map<string, string>> {
    const stdout = await this.#checked('ip', ['-j', '-4', 'route', 'show', 'table', 'main']);
    const routes = (stdout.trim() ? JSON.parse(stdout) : []) as { dst?: string; dev?: string }[];
    const found = new Map<string, string>();
    for (const route of routes) {
      const dst = route.dst?.replace(/\/32$/, '');
      if (dst && route.dev && isHangarBridge(route.dev) && !dst.includes('/') && inIpv4Range(this.#v4, dst)) {
        found.set(dst, route.dev);
      }
    }
    return found;
  }

  async #deleteV4Routes(addresses: string[]): Promise<void> {
    if (addresses.length === 0) return;
    // -force: a route already gone is no failure.
    await this.#run('ip', ['-4', '-force', '-batch', '-'], {
      timeoutMs: this.#timeoutMs + addresses.length * PER_BATCH_LINE_MS,
      input: `${addresses.map((ip) => `route del ${ip}/32`).join('\n')}\n`,
    });
  }

  async #attachNew(machineNetns: string, a: Attachment): Promise<void> {
    if (!existsSync(join(this.#netnsDir, machineNetns))) {
      throw new HangarError(
        'internal',
        `attaching machine ${a.machineId}: network namespace ${machineNetns} does not exist`,
      );
    }
    // Under a temporary name until the machine's end is configured, then renamed: an hgv… link always
    // stands for a finished attach, and reconcile removes any hgw… an interrupted one left.
    const pending = pendingVethName(a.machineNumber);
    const add = [
      ...['link', 'add', 'name', pending, 'type', 'veth'],
      ...['peer', 'name', MACHINE_INTERFACE, 'address', a.mac, 'netns', machineNetns],
    ];
    try {
      await this.#ip(add);
    } catch (error) {
      // Left by an attach that was interrupted: remove it (its eth0 goes with it) and try once more.
      if (!/File exists/.test((error as Error).message)) throw error;
      await this.#deleteLinks([pending]);
      await this.#ip(add);
    }
    try {
      await writeSysctl(pending, 'disable_ipv6', '1');
      await this.#ip(
        ['-6', '-n', machineNetns, '-batch', '-'],
        [
          'link set dev lo up',
          // The link-local address is set here rather than generated: no DAD delay, and it is exactly
          // the one the rules bind to this port, whatever the namespace's addr_gen_mode.
          `link set dev ${MACHINE_INTERFACE} addrgenmode none`,
          `link set dev ${MACHINE_INTERFACE} up`,
          `addr replace ${a.linkLocal}/64 dev ${MACHINE_INTERFACE} nodad`,
          `addr replace ${a.address}/${MACHINE_PREFIX_LENGTH} dev ${MACHINE_INTERFACE} nodad`,
          // The network's machines on this host are on-link (same bridge): switched, not routed.
          `route replace ${a.hostBlock} dev ${MACHINE_INTERFACE}`,
          `route replace default via ${a.gateway} dev ${MACHINE_INTERFACE}`,
        ],
      );
      await this.#ip(
        ['-batch', '-'],
        [`link set dev ${pending} name ${a.veth}`, `link set dev ${a.veth} master ${a.bridge} up`],
      );
      await this.#plugIpv4(machineNetns, a);
    } catch (error) {
      await this.#deleteLinks([pending, a.veth]).catch(() => {});
      throw new HangarError(
        'internal',
        `attaching machine ${a.machineId} to ${a.bridge}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  async #applyNow(desired: DesiredNetState, full: boolean): Promise<ApplyResult> {
    const warnings: string[] = [];
    // Re-read at every apply: an interface that came or went changes what counts as local.
    const localNetworks = desired.egress ? localNetworksOf(await this.#interfaces()) : [];
    const next = rulesetState(desired, { localNetworks });
    const delta = !full && this.#applied ? rulesetDelta(this.#applied, next) : undefined;
    let mode: ApplyResult['mode'] = delta === undefined ? 'full' : delta === '' ? 'unchanged' : 'delta';
    this.#applied = undefined; // unknown until this apply succeeds
    if (mode === 'delta') {
      // A delta fails only when the kernel does not hold what this instance applied (someone changed
      // the tables): then replace them.
      await this.#nft(delta!).catch((error: Error) => {
        mode = 'full';
        warnings.push(`the Hangar tables were not as last applied (${error.message}); replacing them`);
      });
    }
    if (mode === 'full') await this.#nft(buildRuleset(desired, { localNetworks }, next));
    this.#applied = next;
    // Per bridge, so only when it can have changed: an attach must not cost a write per network.
    if (mode === 'full' || desired.egress !== this.#egress) {
      for (const network of desired.networks) await this.#setForceForwarding(network.bridge, desired.egress);
    }
    this.#egress = desired.egress;
    if (desired.egress) warnings.push(...(await uplinkForwardingWarnings(await this.#uplinks())));
    for (const warning of warnings) this.#warnOnce(warning);
    return {
      networks: desired.networks.length,
      machines: desired.attachments.length,
      mode,
      egress: desired.egress,
      warnings,
    };
  }

  /** The interfaces of the host's default routes, IPv4 and IPv6: where egress usually leaves. */
  async #uplinks(): Promise<{ v4: string[]; v6: string[] }> {
    const devices = async (family: '-4' | '-6') => {
      const stdout = await this.#checked('ip', ['-j', family, 'route', 'show', 'default']);
      const routes = (stdout.trim() ? JSON.parse(stdout) : []) as { dev?: string }[];
      return [...new Set(routes.flatMap((r) => (r.dev && !isHangarBridge(r.dev) ? [r.dev] : [])))];
    };
    return { v4: await devices('-4'), v6: await devices('-6') };
  }

  /**
   * The private IPv4 range must not overlap a network of the host's own: the host's routes to machines
   * would shadow part of it (or it theirs). Said once, not refused: the operator picks another range.
   */
  #checkV4RangeIsFree(localNetworks: readonly string[]): void {
    const range = parseCidr(this.#v4.cidr)!;
    for (const text of localNetworks) {
      const local = parseCidr(text);
      if (local?.family !== 4 || local.length === 32) continue;
      if (cidrContains(local, range) || cidrContains(range, local)) {
        this.#warnOnce(
          `network.privateV4Range ${this.#v4.cidr} overlaps the host's network ${text}: ` +
            'machines and that network shadow each other; set another range',
        );
      }
    }
  }

  /** Applies and reconciles are frequent: the operator needs to hear each condition once per instance. */
  #warnOnce(warning: string): void {
    if (this.#warned.has(warning)) return;
    this.#warned.add(warning);
    this.#onWarning(warning);
  }
}

/** One interface as `ip -j addr show` lists it. */
interface InterfaceAddresses {
  ifname: string;
  addr_info?: { local?: string; prefixlen?: number }[];
}

/** Each interface's addresses as `address/length`. */
function addressesOf(interfaces: readonly InterfaceAddresses[]): Map<string, Set<string>> {
  return new Map(
    interfaces.map((i) => [i.ifname, new Set((i.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`))]),
  );
}

/** The networks of the host's own interfaces (Hangar's links left out), as CIDRs. */
function localNetworksOf(interfaces: readonly InterfaceAddresses[]): string[] {
  const found = new Set<string>();
  for (const link of interfaces) {
    if (isHangarBridge(link.ifname) || isHangarVeth(link.ifname)) continue;
    for (const a of link.addr_info ?? []) {
      const network =
        a.local === undefined || a.prefixlen === undefined
          ? undefined
          : networkOfInterfaceAddress(a.local, a.prefixlen);
      if (network) found.add(network.text);
    }
  }
  return [...found].sort();
}

/** The address lines of a bridge for `ip -6 -batch`; the third word is the address as ip lists it. */
function bridgeAddressLines(network: NetworkPlan): string[] {
  return [
    `addr replace ${network.gateway}/${HOST_BLOCK_PREFIX_LENGTH} dev ${network.bridge} nodad`,
    `addr replace ${network.serviceAddress}/128 dev ${network.bridge} nodad`,
  ];
}

/**
 * The network's Flycast block as local on its bridge, for `ip -6 -batch` once the bridge is up: the host
 * accepts every address in it (the proxy listens on `::`); which callers get through is the rules' call.
 */
function flycastRouteLine(network: NetworkPlan): string {
  return `route replace local ${flycastBlock(network.id)} dev ${network.bridge} table local`;
}

async function writeSysctl(ifname: string, key: string, value: string): Promise<void> {
  await writeFile(join(PROC_IPV6_CONF, ifname, key), value);
}

/** Replies from the outside are forwarded from the uplink to a bridge: the uplink must forward. */
async function uplinkForwardingWarnings(uplinks: { v4: string[]; v6: string[] }): Promise<string[]> {
  const read = (path: string) =>
    readFile(path, 'utf8').then(
      (text) => text.trim(),
      () => '0',
    );
  const warnings: string[] = [];
  if (uplinks.v4.length === 0 && uplinks.v6.length === 0) {
    warnings.push('egress is on but the host has no default route: machines reach only what it routes');
  }
  // IPv4 decides by the interface a reply arrives on.
  for (const uplink of uplinks.v4) {
    if ((await read(join(PROC_IPV4_CONF, uplink, 'forwarding'))) !== '1') {
      warnings.push(
        `egress: IPv4 replies arriving on ${uplink} are not forwarded to machines; set ` +
          `net.ipv4.conf.${uplink}.forwarding=1 or net.ipv4.ip_forward=1 (Hangar leaves host-wide and ` +
          'uplink sysctls to the operator)',
      );
    }
  }
  if ((await read(join(PROC_IPV6_CONF, 'all/forwarding'))) === '1') return warnings;
  for (const uplink of uplinks.v6) {
    if ((await read(join(PROC_IPV6_CONF, uplink, 'force_forwarding'))) !== '1') {
      warnings.push(
        `egress: IPv6 replies arriving on ${uplink} are not forwarded to machines; set ` +
          `net.ipv6.conf.${uplink}.force_forwarding=1 or net.ipv6.conf.all.forwarding=1 (Hangar leaves ` +
          'host-wide and uplink sysctls to the operator)',
      );
    }
  }
  return warnings;
}

/** IFF_UP in a link's sysfs `flags`. */
const IFF_UP = 0x1;

/**
 * Whether the host end of a veth is enslaved to `bridge` and up, read from sysfs: no process started.
 * Anything unreadable (no such link, sysfs of another namespace) answers false, and the caller looks
 * the slow way.
 */
async function isPluggedIn(veth: string, bridge: string): Promise<boolean> {
  try {
    const [master, flags] = await Promise.all([
      readlink(`/sys/class/net/${veth}/master`),
      readFile(`/sys/class/net/${veth}/flags`, 'utf8'),
    ]);
    return basename(master) === bridge && (Number.parseInt(flags, 16) & IFF_UP) !== 0;
  } catch {
    return false;
  }
}

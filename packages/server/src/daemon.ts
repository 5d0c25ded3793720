import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi, closeApi } from './api/server.js';
import { mintToken } from './auth/tokens.js';
import { dnsForwards, parseListen, type ResolvedConfig, registryPolicyOf } from './config/config.js';
import { type HostDns, startHostDns } from './dns/host-dns.js';
import { createPlatform, type Platform } from './machines/platform.js';
import { pruneStore } from './machines/pruning.js';
import { limitsOf } from './machines/quotas.js';
import type { HostLockOptions } from './net/host-lock.js';
import { HostNetwork } from './net/host-network.js';
import { HangarProxy } from './proxy/proxy.js';
import { RegistryProxy } from './registry/registry-proxy.js';
import { type HostRuntime, startHostRuntime } from './runtime/host-runtime.js';
import type { MachineRuntime } from './runtime/runtime.js';
import { hostCanLoopMount, VolumeStorage } from './runtime/volumes/volume-storage.js';
import { Vault } from './secrets/vault.js';
import { chooseLogFormat, type EventFields, eventLine, logDestination } from './shared/log-format.js';
import { MetricsRegistry } from './shared/metrics.js';
import { DNS_PORT, RESOLVER_ADDRESS } from './sixpn/resolver.js';
import type { MachineRecord } from './store/records.js';
import { SqliteStore } from './store/sqlite/sqlite-store.js';
import type { Store } from './store/store.js';

export interface Hangard {
  /** Base URL of the Machines API, e.g. http://127.0.0.1:4280 */
  url: string;
  platform: Platform;
  /** Set on the first start only: the new `personal` org token, also written to `tokenFile`. */
  createdToken: string | undefined;
  tokenFile: string;
  /** The machine runtime in use, and why there is none when there is none. */
  runtime: Status;
  /** Private networks and DNS, and why there are none when there are none. */
  network: Status;
  /** The proxy, and why it is not running when it is not. */
  proxy: Status;
  /** Base URL of the proxy's public HTTP listener, when it runs. */
  proxyUrl: string | undefined;
  /** Base URL of the proxy's public HTTPS listener, when it runs. */
  proxyHttpsUrl: string | undefined;
  close(): Promise<void>;
}

export type Status = { description: string } | { missing: string };

export interface StartOptions {
  /** A runtime to use instead of the host's (tests pass a fake); otherwise config.runtime decides. */
  runtime?: MachineRuntime;
  now?: () => number;
  /**
   * Back volumes with real ext4 images (default true). Used only where the host can loop-mount (root,
   * losetup, mkfs.ext4); elsewhere volumes stay records.
   */
  realVolumes?: boolean;
  /**
   * Tests only: close() also removes every machine's container, mounts and namespace, so nothing is
   * left on the host. Normally machines keep running while hangard restarts.
   */
  removeMachinesOnClose?: boolean;
  /** Tests that share a host wait for its networking instead of failing (see net/host-lock.ts). */
  hostLock?: HostLockOptions;
  /** Where conditions the operator should know of go; default stderr (unless logLevel is silent). */
  onWarning?: (message: string) => void;
  /**
   * Where host-side details that tenants must not see go (why a pull failed, with addresses and tool
   * output); default stderr unless logLevel is silent.
   */
  onDetail?: (message: string) => void;
  /** Whether stdout is a terminal, for `logFormat: auto` (default: asks process.stdout). */
  stdoutIsTTY?: boolean;
}

/** At shutdown, requests in flight get this long before the API cuts what is still open. */
const SHUTDOWN_GRACE_MS = 2_000;

export const dataFiles = (dataDir: string) => ({
  database: join(dataDir, 'hangar.db'),
  secretsKey: join(dataDir, 'secrets.key'),
  token: join(dataDir, 'personal.token'),
});

/**
 * Composition root: store → volumes → private networks → machine runtime (and the registry's public
 * address) → platform → reconcile → DNS → api, in that order; close() undoes it in reverse.
 */
export async function startHangard(config: ResolvedConfig, options: StartOptions = {}): Promise<Hangard> {
  const files = dataFiles(config.dataDir);
  const warn =
    options.onWarning ??
    ((message: string) => {
      if (config.logLevel !== 'silent') process.stderr.write(`hangard: warning: ${message}\n`);
    });
  const detail =
    options.onDetail ??
    ((message: string) => {
      if (config.logLevel !== 'silent') process.stderr.write(`hangard: ${message}\n`);
    });
  const store = new SqliteStore({ path: files.database, synchronous: config.databaseSync });
  const logFormat = chooseLogFormat(config.logFormat, options.stdoutIsTTY ?? process.stdout.isTTY === true);
  const logsInfo = !['silent', 'fatal', 'error', 'warn'].includes(config.logLevel);
  const logEvent = (msg: string, fields: EventFields) => {
    if (logsInfo) process.stdout.write(eventLine(logFormat, msg, fields));
  };
  const unwatchStates = logsInfo ? watchMachineStates(store, logEvent) : () => {};
  let api: FastifyInstance | undefined;
  let volumeStorage: VolumeStorage | undefined;
  let hostRuntime: HostRuntime | undefined;
  let registryProxy: RegistryProxy | undefined;
  let hostNetwork: HostNetwork | undefined;
  let dns: HostDns | undefined;
  let proxy: HangarProxy | undefined;
  let pruneTimer: NodeJS.Timeout | undefined;
  let stopPruning = async () => {};
  try {
    if ((options.realVolumes ?? true) && (await hostCanLoopMount())) {
      volumeStorage = new VolumeStorage({ dir: join(config.dataDir, 'volumes') });
      // Half-written images of a previous run are never published: drop them before serving.
      await volumeStorage.cleanup();
      // A snapshot cut short by a crash between its freeze and its thaw leaves the filesystem frozen
      // (its machine's writers blocked): nothing of this process can be freezing one yet, so thaw all.
      const { thawed, failed } = await volumeStorage.thawAll();
      for (const volumeId of thawed) {
        warn(`volume ${volumeId} was left frozen by a snapshot interrupted by a crash; thawed it`);
      }
      for (const { volumeId, error } of failed) {
        warn(`volume ${volumeId} may be frozen and could not be thawed: ${error.message}`);
      }
    }
    let runtime = options.runtime;
    let runtimeStatus: Status = { description: runtime?.name ?? 'none' };
    let networkStatus: Status = { missing: 'machines do not run on this host' };
    if (!runtime && config.runtime !== 'off') {
      // Networks first: the runtime plugs each machine in as it boots.
      if (config.network.mode === 'off') {
        networkStatus = { missing: 'private networks are off in the configuration' };
      } else {
        try {
          hostNetwork = await HostNetwork.start({
            store,
            hostId: config.hostId,
            egress: config.network.egress,
            privateV4Range: config.network.privateV4Range,
            egressLocal: config.network.egressLocal,
            onWarning: warn,
            onNetworkUp: async (network) => dns?.addNetwork(network),
            ...(options.hostLock ? { lock: options.hostLock } : {}),
          });
        } catch (error) {
          if (config.network.mode === 'required') throw error;
          networkStatus = { missing: (error as Error).message };
        }
      }
      try {
        hostRuntime = await startHostRuntime(config, volumeStorage, hostNetwork, detail);
        // Tenants reach the registry only through this authenticating proxy on its public address.
        registryProxy = await RegistryProxy.listen({
          host: '127.0.0.1',
          port: config.registry.port,
          upstreamSocket: hostRuntime.registry.socket!,
          internalCredential: hostRuntime.registryCredential,
          log: detail,
          quotas: {
            storageRoot: hostRuntime.registry.storageRoot,
            imagesPerApp: config.quotas.registryImagesPerApp,
            bytesPerApp: config.quotas.registryBytesPerApp,
          },
        });
        runtime = hostRuntime.runtime;
        runtimeStatus = { description: hostRuntime.description };
      } catch (error) {
        if (config.runtime === 'required') throw error;
        runtimeStatus = { missing: (error as Error).message };
        await hostRuntime?.close();
        hostRuntime = undefined;
        await hostNetwork?.close();
        hostNetwork = undefined;
      }
    } else if (!runtime) {
      runtimeStatus = { missing: 'the runtime is off in the configuration' };
    }
    const vault = Vault.open(files.secretsKey);
    const platform = createPlatform({
      store,
      vault,
      runtime,
      ...(volumeStorage ? { volumeStorage } : {}),
      hostId: config.hostId,
      privateV4Range: config.network.privateV4Range,
      region: config.region,
      ips: config.ips,
      registryPolicy: registryPolicyOf(config),
      limits: limitsOf(config),
      proxyDomain: config.proxy.domain,
      now: options.now ?? Date.now,
    });
    // Before reconcile, whose restarts may pull from it.
    registryProxy?.serve(platform);
    let createdToken: string | undefined;
    if (await platform.tokens.needsBootstrap()) {
      const minted = mintToken();
      writePrivateFile(files.token, `${minted.token}\n`);
      await platform.tokens.bootstrap(minted);
      createdToken = minted.token;
    }
    // Before serving: adopt what survived a restart, settle what ended meanwhile, remove what nobody knows.
    await platform.machines.reconcile();
    await platform.volumes.recover();
    await platform.volumes.reconcile();
    // Unpacked images no machine record names any more are removed (a later boot pulls again if
    // needed), at start and then on the pruning schedule with the store's old events, versions and
    // destroyed machines.
    const collectImages = async (spareRecentMs: number) => {
      if (!hostRuntime) return;
      const inUse = await store.read(
        (tx) =>
          new Set(
            tx.machines
              .list()
              .flatMap((m) => (m.state !== 'destroyed' && m.imageRef ? [m.imageRef.digest] : [])),
          ),
      );
      await hostRuntime.images.gc(inUse, { spareRecentMs });
    };
    // At start no boot is under way; later, an image a boot prepared in the last 10 minutes stays.
    await collectImages(0);
    let pruning: Promise<void> | undefined;
    pruneTimer = setInterval(() => {
      pruning ??= (async () => {
        try {
          await pruneStore(store, config.pruning, (options.now ?? Date.now)());
          await collectImages(10 * 60_000);
        } catch (error) {
          warn(`pruning: ${(error as Error).message}`);
        } finally {
          pruning = undefined;
        }
      })();
    }, config.pruning.intervalSeconds * 1000);
    pruneTimer.unref();
    stopPruning = async () => {
      clearInterval(pruneTimer);
      await pruning;
    };
    if (hostNetwork) {
      let dnsNote = `.internal DNS on ${RESOLVER_ADDRESS} port ${DNS_PORT} (other names ${dnsForwards(config) ? 'forwarded' : 'refused'})`;
      try {
        dns = await startHostDns({
          store,
          networks: hostNetwork.networksUp(),
          onError: (error) => warn(`DNS: ${error.message}`),
          forward: dnsForwards(config),
          pendingPerNetwork: config.dns.pendingPerNetwork,
        });
        platform.tunnels.useNames(dns.view);
      } catch (error) {
        // Port 53 of fdaa::3 taken by something else: machines still run and reach each other by address.
        if (config.network.mode === 'required') throw error;
        dnsNote = `no .internal DNS (${(error as Error).message})`;
      }
      const egress = config.network.egress ? 'on' : 'off';
      networkStatus = {
        description: `private networks on (${hostNetwork.networksUp().length} up), ${dnsNote}, egress ${egress}`,
      };
    }
    const metrics = new MetricsRegistry();
    let proxyStatus: Status = { missing: 'proxy.mode is "off"' };
    if (config.proxy.mode === 'on' && !runtime) {
      proxyStatus = { missing: 'no machines run on this host' };
    } else if (config.proxy.mode === 'on') {
      const listenAt = parseListen(config.proxy.http);
      proxy = new HangarProxy({
        store,
        orchestrator: platform.machines,
        region: config.region,
        domain: config.proxy.domain,
        http: listenAt,
        ...(config.proxy.https === 'off' ? {} : { https: parseListen(config.proxy.https) }),
        tls: { vault, dataDir: config.dataDir, files: config.proxy.certificates },
        idleStopMs: config.proxy.idleStopMs,
        autostopIntervalMs: config.proxy.autostopIntervalMs,
        wakeTimeoutMs: config.proxy.wakeTimeoutMs,
        queueTimeoutMs: config.proxy.queueTimeoutMs,
        replayAcrossOrgs: config.proxy.replayAcrossOrgs,
        metrics,
        onLog: (line) => {
          if (config.logLevel !== 'silent') process.stderr.write(`hangard: ${line}\n`);
        },
        onEvent: logEvent,
      });
      await proxy.start();
      const https = config.proxy.https === 'off' ? '' : ` and HTTPS on ${config.proxy.https}`;
      proxyStatus = { description: `proxy on ${config.proxy.http}${https} for *.${config.proxy.domain}` };
    }
    const runningProxy = proxy;
    api = buildApi({
      platform,
      metrics,
      // Reconcile has run by now (the API listens only after it); the store and listeners are asked.
      readiness: async () => {
        const storeOpen = await store.read(() => true).catch(() => false);
        const listeners = runningProxy
          ? runningProxy.httpAddress !== undefined &&
            (config.proxy.https === 'off' || runningProxy.httpsAddress !== undefined)
          : true;
        return {
          ready: storeOpen && listeners,
          checks: { store: storeOpen, reconcile: true, proxy_listeners: listeners },
        };
      },
      rateLimits: config.rateLimits,
      bodyLimitBytes: config.api.bodyLimitBytes,
      timeouts: {
        headersMs: config.api.headersTimeoutMs,
        requestMs: config.api.requestTimeoutMs,
        keepAliveMs: config.api.keepAliveTimeoutMs,
        idleMs: config.api.idleTimeoutMs,
      },
      logger:
        config.logLevel === 'silent'
          ? false
          : {
              level: config.logLevel,
              stream: logDestination(logFormat, process.stdout),
            },
    });
    const address = await api.listen({ host: config.listen.host, port: config.listen.port });
    const opened = api;
    let closing: Promise<void> | undefined;
    return {
      url: address,
      platform,
      createdToken,
      tokenFile: files.token,
      runtime: runtimeStatus,
      network: networkStatus,
      proxy: proxyStatus,
      proxyUrl: urlOf('http', proxy?.httpAddress),
      proxyHttpsUrl: urlOf('https', proxy?.httpsAddress),
      close: () => {
        closing ??= (async () => {
          // First: no new wakes or autostops while the orchestrator drains.
          proxy?.close();
          await stopPruning();
          await platform.machines.close();
          await closeApi(opened, SHUTDOWN_GRACE_MS);
          try {
            if (options.removeMachinesOnClose && runtime) {
              const ids = await store.read((tx) => tx.machines.list().map((m) => m.id));
              for (const id of ids) await runtime.destroy(id);
            }
            await registryProxy?.close();
            await (hostRuntime ?? runtime)?.close();
            await dns?.close();
            // Bridges and rules stay for the machines that keep running, unless none is left.
            await hostNetwork?.close({ removeAll: options.removeMachinesOnClose === true });
            // Running machines keep their volumes mounted across a restart; with no machine left, unmount.
            if (!runtime || options.removeMachinesOnClose) await volumeStorage?.close();
            else await volumeStorage?.releaseMountRoot();
          } finally {
            unwatchStates();
            store.close();
          }
        })();
        return closing;
      },
    };
  } catch (error) {
    proxy?.close();
    clearInterval(pruneTimer);
    await api?.close();
    await registryProxy?.close().catch(() => undefined);
    await dns?.close().catch(() => undefined);
    await hostRuntime?.close().catch(() => undefined);
    await hostNetwork?.close().catch(() => undefined);
    await volumeStorage?.close().catch(() => undefined);
    unwatchStates();
    store.close();
    throw error;
  }
}

function urlOf(scheme: string, address: { host: string; port: number } | undefined): string | undefined {
  if (!address) return undefined;
  return `${scheme}://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/** Written whole (temporary file, fsync, rename) with mode 0600: a crash never leaves half a token. */
function writePrivateFile(path: string, content: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  const fd = openSync(temporary, 'w', 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
}

/** Logs each machine's state changes as they commit (`machine state`, with the state it left). */
function watchMachineStates(store: Store, log: (msg: string, fields: EventFields) => void): () => void {
  const known = new Map<string, string>();
  return store.watch((batch) => {
    for (const change of batch.changes) {
      if (change.collection !== 'machines') continue;
      const machine = change.doc as MachineRecord | undefined;
      if (!machine) {
        known.delete(change.key);
        continue;
      }
      const previous = known.get(machine.id);
      if (previous === machine.state) continue;
      known.set(machine.id, machine.state);
      log('machine state', { machine: machine.id, name: machine.name, from: previous, to: machine.state });
    }
  });
}

import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi } from './api/server.js';
import { mintToken } from './auth/tokens.js';
import type { ResolvedConfig } from './config/config.js';
import { createPlatform, type Platform } from './machines/platform.js';
import { type HostRuntime, startHostRuntime } from './runtime/host-runtime.js';
import type { MachineRuntime } from './runtime/runtime.js';
import { hostCanLoopMount, VolumeStorage } from './runtime/volumes/volume-storage.js';
import { Vault } from './secrets/vault.js';
import { SqliteStore } from './store/sqlite/sqlite-store.js';

export interface Hangard {
  /** Base URL of the Machines API, e.g. http://127.0.0.1:4280 */
  url: string;
  platform: Platform;
  /** Set on the first start only: the new `personal` org token, also written to `tokenFile`. */
  createdToken: string | undefined;
  tokenFile: string;
  /** The machine runtime in use, and why there is none when there is none. */
  runtime: { description: string } | { missing: string };
  close(): Promise<void>;
}

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
}

export const dataFiles = (dataDir: string) => ({
  database: join(dataDir, 'hangar.db'),
  secretsKey: join(dataDir, 'secrets.key'),
  token: join(dataDir, 'personal.token'),
});

/** Composition root: store → vault → platform → api, in that order; close() undoes it in reverse. */
export async function startHangard(config: ResolvedConfig, options: StartOptions = {}): Promise<Hangard> {
  const files = dataFiles(config.dataDir);
  const store = new SqliteStore({ path: files.database, synchronous: config.databaseSync });
  let api: FastifyInstance | undefined;
  let volumeStorage: VolumeStorage | undefined;
  let hostRuntime: HostRuntime | undefined;
  try {
    if ((options.realVolumes ?? true) && (await hostCanLoopMount())) {
      volumeStorage = new VolumeStorage({ dir: join(config.dataDir, 'volumes') });
      // Half-written images of a previous run are never published: drop them before serving.
      await volumeStorage.cleanup();
    }
    let runtime = options.runtime;
    let runtimeStatus: Hangard['runtime'] = { description: runtime?.name ?? 'none' };
    if (!runtime && config.runtime !== 'off') {
      try {
        hostRuntime = await startHostRuntime(config, volumeStorage);
        runtime = hostRuntime.runtime;
        runtimeStatus = { description: hostRuntime.description };
      } catch (error) {
        if (config.runtime === 'required') throw error;
        runtimeStatus = { missing: (error as Error).message };
      }
    } else if (!runtime) {
      runtimeStatus = { missing: 'the runtime is off in the configuration' };
    }
    const platform = createPlatform({
      store,
      vault: Vault.open(files.secretsKey),
      runtime,
      ...(volumeStorage ? { volumeStorage } : {}),
      hostId: config.hostId,
      region: config.region,
      ips: config.ips,
      now: options.now ?? Date.now,
    });
    let createdToken: string | undefined;
    if (await platform.tokens.needsBootstrap()) {
      const minted = mintToken();
      writePrivateFile(files.token, `${minted.token}\n`);
      await platform.tokens.bootstrap(minted);
      createdToken = minted.token;
    }
    // Before serving: adopt what survived a restart, settle what ended meanwhile, remove what nobody knows.
    await platform.machines.reconcile();
    await platform.volumes.reconcile();
    if (hostRuntime) {
      // Unpacked images no machine record names any more are removed; a later boot pulls again if needed.
      const inUse = await store.read(
        (tx) =>
          new Set(
            tx.machines
              .list()
              .flatMap((m) => (m.state !== 'destroyed' && m.imageRef ? [m.imageRef.digest] : [])),
          ),
      );
      await hostRuntime.images.gc(inUse);
    }
    api = buildApi({
      platform,
      rateLimits: config.rateLimits,
      logger: config.logLevel === 'silent' ? false : { level: config.logLevel },
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
      close: () => {
        closing ??= (async () => {
          await platform.machines.close();
          await opened.close();
          try {
            if (options.removeMachinesOnClose && runtime) {
              const ids = await store.read((tx) => tx.machines.list().map((m) => m.id));
              for (const id of ids) await runtime.destroy(id);
            }
            await (hostRuntime ?? runtime)?.close();
            // Running machines keep their volumes mounted across a restart; with no machine left, unmount.
            if (!runtime || options.removeMachinesOnClose) await volumeStorage?.close();
          } finally {
            store.close();
          }
        })();
        return closing;
      },
    };
  } catch (error) {
    await api?.close();
    await hostRuntime?.close().catch(() => undefined);
    await volumeStorage?.close().catch(() => undefined);
    store.close();
    throw error;
  }
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

import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi } from './api/server.js';
import { mintToken } from './auth/tokens.js';
import type { ResolvedConfig } from './config/config.js';
import { createPlatform, type Platform } from './machines/platform.js';
import type { MachineRuntime } from './runtime/runtime.js';
import { Vault } from './secrets/vault.js';
import { SqliteStore } from './store/sqlite/sqlite-store.js';

export interface Hangard {
  /** Base URL of the Machines API, e.g. http://127.0.0.1:4280 */
  url: string;
  platform: Platform;
  /** Set on the first start only: the new `personal` org token, also written to `tokenFile`. */
  createdToken: string | undefined;
  tokenFile: string;
  close(): Promise<void>;
}

export interface StartOptions {
  runtime?: MachineRuntime;
  now?: () => number;
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
  try {
    const platform = createPlatform({
      store,
      vault: Vault.open(files.secretsKey),
      runtime: options.runtime,
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
      close: () => {
        closing ??= (async () => {
          await platform.machines.close();
          await opened.close();
          await options.runtime?.close();
          store.close();
        })();
        return closing;
      },
    };
  } catch (error) {
    await api?.close();
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

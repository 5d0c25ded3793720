import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ownRegistryAddresses, type ResolvedConfig, registryPolicyOf } from '../config/config.js';
import { ImageStore } from './images/image-store.js';
import { LocalRegistry } from './images/registry.js';
import { LinuxRuntime, type VolumeMounter } from './linux-runtime.js';
import { MachineCgroups } from './oci/cgroups.js';
import { detectOciRuntime } from './oci/detect.js';
import { OciCli } from './oci/oci-cli.js';
import type { NetworkAttacher } from './runtime.js';

export interface HostRuntime {
  runtime: LinuxRuntime;
  images: ImageStore;
  /** Hangar's registry behind its unix socket; hangard serves its public address (src/registry/). */
  registry: LocalRegistry;
  /**
   * The credential only this hangard holds, made afresh at every start: the registry proxy lets it pull
   * any repository, and the image store pulls with it.
   */
  registryCredential: string;
  /** What was found, for the start-up message. */
  description: string;
  close(): Promise<void>;
}

/**
 * Brings up what machines need on this host: an OCI runtime that works here (detected by running a
 * probe container), Hangar's image registry on its private socket, and the image store. Fails with the
 * reason when any piece is missing.
 */
export async function startHostRuntime(
  config: ResolvedConfig,
  volumes: VolumeMounter | undefined,
  network?: NetworkAttacher,
  log?: (line: string) => void,
): Promise<HostRuntime> {
  const stateRoot = join(config.dataDir, 'oci-state');
  const detection = await detectOciRuntime(join(config.dataDir, 'tmp'), stateRoot);
  const registry = new LocalRegistry({ dir: join(config.dataDir, 'registry') });
  await registry.start();
  try {
    const registryCredential = randomBytes(32).toString('base64url');
    const images = new ImageStore({
      dir: join(config.dataDir, 'images'),
      ownRegistry: { addresses: ownRegistryAddresses(config), credential: registryCredential },
      insecureRegistries: config.registry.insecure,
      policy: registryPolicyOf(config),
      limits: {
        ...config.images,
        imagesPerApp: config.quotas.imagesPerApp,
        imageBytesPerApp: config.quotas.imageBytesPerApp,
      },
      ...(log ? { log } : {}),
    });
    const cgroups = new MachineCgroups();
    const runtime = new LinuxRuntime({
      dataDir: config.dataDir,
      cli: new OciCli(detection.choice, stateRoot),
      cgroups,
      images,
      volumes,
      network,
      logMaxBytes: config.logs.maxBytesPerMachine,
    });
    const how = detection.choice.hideUnifiedCgroup ? ' (cgroup2 hidden from it: hybrid cgroups)' : '';
    return {
      runtime,
      images,
      registry,
      registryCredential,
      description: `${detection.choice.name}${how}, cgroup ${cgroups.mode}, image registry on 127.0.0.1:${config.registry.port}`,
      close: async () => {
        await runtime.close();
        await images.close();
        await registry.close();
      },
    };
  } catch (error) {
    await registry.close();
    throw error;
  }
}

import { type MachinesClientOptions, type RequestOptions, Transport } from './client.js';
import { AppsResource } from './resources/apps.js';
import { CertificatesResource } from './resources/certificates.js';
import { IPAssignmentsResource } from './resources/ips.js';
import { MachinesResource } from './resources/machines.js';
import { PlatformResource } from './resources/platform.js';
import { SecretsResource } from './resources/secrets.js';
import { TokensResource } from './resources/tokens.js';
import { VolumesResource } from './resources/volumes.js';
import type { WaitableState, WaitForStateOptions, WaitMachineResponse } from './types.js';

/**
 * Client for the Fly Machines REST API, as served by Hangar (hangard) and by Fly.io.
 *
 * ```ts
 * const client = new MachinesClient({ token: process.env.FLY_API_TOKEN });
 * const m = await client.machines.launch('my-app', { config: { image: 'nginx' } });
 * await client.waitForState('my-app', m.id, 'started', { timeoutMs: 120_000 });
 * ```
 */
export class MachinesClient {
  readonly apps: AppsResource;
  readonly machines: MachinesResource;
  readonly volumes: VolumesResource;
  readonly secrets: SecretsResource;
  readonly ipAssignments: IPAssignmentsResource;
  readonly certificates: CertificatesResource;
  readonly tokens: TokensResource;
  readonly platform: PlatformResource;
  /** The transport every resource shares (exposed for custom calls to endpoints not wrapped here). */
  readonly transport: Transport;

  constructor(options: MachinesClientOptions = {}) {
    this.transport = new Transport(options);
    this.apps = new AppsResource(this.transport);
    this.machines = new MachinesResource(this.transport);
    this.volumes = new VolumesResource(this.transport);
    this.secrets = new SecretsResource(this.transport);
    this.ipAssignments = new IPAssignmentsResource(this.transport);
    this.certificates = new CertificatesResource(this.transport);
    this.tokens = new TokensResource(this.transport);
    this.platform = new PlatformResource(this.transport);
  }

  /** The resolved API root, e.g. `http://127.0.0.1:4280`. */
  get baseUrl(): string {
    return this.transport.baseUrl;
  }

  /** Shortcut for `machines.waitForState`. */
  waitForState(
    app: string,
    id: string,
    state: WaitableState | WaitableState[],
    options: WaitForStateOptions = {},
    opts: RequestOptions = {},
  ): Promise<WaitMachineResponse> {
    return this.machines.waitForState(app, id, state, options, opts);
  }
}

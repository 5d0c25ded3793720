import { AppsService } from './apps.js';
import { CertificatesService } from './certificates.js';
import type { PlatformContext } from './context.js';
import { IpsService } from './ips.js';
import { MachinesService } from './machines.js';
import { RegistryAccessService } from './registry-access.js';
import { SecretsService } from './secrets.js';
import { TokensService } from './tokens.js';
import { TunnelsService } from './tunnels.js';
import { VolumesService } from './volumes.js';

/** The orchestrator's services, built over one shared context. The api calls only these. */
export interface Platform {
  apps: AppsService;
  machines: MachinesService;
  volumes: VolumesService;
  secrets: SecretsService;
  certificates: CertificatesService;
  ips: IpsService;
  tokens: TokensService;
  /** TCP connections from API clients into an app's private network. */
  tunnels: TunnelsService;
  /** Who may pull and push which space of Hangar's registry. */
  registry: RegistryAccessService;
  /** The region this host serves. */
  region: string;
}

export function createPlatform(ctx: PlatformContext): Platform {
  const machines = new MachinesService(ctx);
  const volumes = new VolumesService(ctx);
  return {
    apps: new AppsService(ctx, machines, volumes),
    machines,
    volumes,
    secrets: new SecretsService(ctx),
    certificates: new CertificatesService(ctx),
    ips: new IpsService(ctx),
    tokens: new TokensService(ctx),
    tunnels: new TunnelsService(ctx),
    registry: new RegistryAccessService(ctx),
    region: ctx.region,
  };
}

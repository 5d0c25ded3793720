import type { Principal } from '../auth/tokens.js';
import type { MachineRuntime } from '../runtime/runtime.js';
import type { VolumeStorage } from '../runtime/volumes/volume-storage.js';
import type { Vault } from '../secrets/vault.js';
import { HangarError } from '../shared/errors.js';
import type { RegistryPolicy } from '../shared/registry-policy.js';
import type { AppRecord, OrgRecord } from '../store/records.js';
import type { ReadTx, Store } from '../store/store.js';
import { DEFAULT_LIMITS, type Limits } from './quotas.js';

/** What every service of the orchestrator shares. */
export interface PlatformContext {
  store: Store;
  vault: Vault;
  /** Absent until the host has a machine runtime: then anything that needs a workload is refused. */
  runtime: MachineRuntime | undefined;
  /** Real volume storage (ext4 images) when the host can loop-mount; without it volumes are records only. */
  volumeStorage?: VolumeStorage;
  /** This host's id and region; machines and volumes record them as placement data. */
  hostId: string;
  region: string;
  ips: { sharedV4: string; publicV6Prefix: string };
  /** Where machines' images may come from (Hangar's registry and the operator's pull policy). */
  registryPolicy: RegistryPolicy;
  /** Per-app quotas and this host's capacity (default: DEFAULT_LIMITS of quotas.ts). */
  limits?: Limits;
  /** The proxy's domain: apps answer at `<app>.<proxyDomain>`, so no app may claim a name under it. */
  proxyDomain?: string;
  now: () => number;
}

export const limitsIn = (ctx: PlatformContext): Limits => ctx.limits ?? DEFAULT_LIMITS;

export type Access = 'read' | 'write';

/** ISO timestamp of the context's clock (tests pass a fixed clock). */
export const isoNow = (ctx: PlatformContext) => new Date(ctx.now()).toISOString();

export function assertWritable(principal: Principal): void {
  if (principal.type === 'readonly') {
    throw new HangarError('forbidden', 'this token is read-only; use an org or deploy token to make changes');
  }
}

/**
 * Finds an app the principal may use. A deploy token of app A gets 403 for every other name, existing or
 * not; an org token gets 404 for a free name and 403 for a name taken in another org (fly-go reads 403 as
 * "taken"), so nothing reveals more than the token could already learn.
 */
export function appFor(tx: ReadTx, principal: Principal, appName: string, access: Access): AppRecord {
  if (access === 'write') assertWritable(principal);
  const app = tx.apps.list({ name: appName })[0];
  if (principal.appId !== null) {
    if (!app || app.id !== principal.appId) {
      throw new HangarError(
        'forbidden',
        `this deploy token is for another app and cannot access "${appName}"`,
      );
    }
    return app;
  }
  if (!app)
    throw new HangarError(
      'not_found',
      `app "${appName}" was not found; list yours with GET /v1/apps?org_slug=`,
    );
  if (app.orgId !== principal.orgId) {
    throw new HangarError(
      'forbidden',
      `app "${appName}" belongs to an organization this token cannot access`,
    );
  }
  return app;
}

/** The org a request names; only org-wide tokens of that org may act on it. */
export function orgFor(tx: ReadTx, principal: Principal, orgSlug: string, access: Access): OrgRecord {
  if (access === 'write') assertWritable(principal);
  const org = tx.orgs.list({ slug: orgSlug })[0];
  if (!org || org.id !== principal.orgId) {
    throw new HangarError('forbidden', `this token cannot access organization "${orgSlug}"`);
  }
  return org;
}

export function requireOrgToken(principal: Principal, what: string): void {
  if (principal.appId !== null)
    throw new HangarError('forbidden', `a deploy token cannot ${what}; use an org token`);
}

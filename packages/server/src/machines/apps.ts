import type { Principal } from '../auth/tokens.js';
import { HangarError, invalidArgument } from '../shared/errors.js';
import { newAppId } from '../shared/ids.js';
import type { AppRecord, NetworkRecord, OrgRecord } from '../store/records.js';
import { StoreConflictError, type WriteTx } from '../store/store.js';
import { type Access, appFor, isoNow, orgFor, type PlatformContext, requireOrgToken } from './context.js';
import type { MachinesService } from './machines.js';
import type { VolumesService } from './volumes.js';

/** App names are DNS labels (they become `<app>.internal`): lowercase letters, digits, inner dashes. */
const APP_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** Network names: letters, digits and dashes, starting with a letter (Fly's rule). */
const NETWORK_NAME = /^[a-zA-Z][a-zA-Z0-9-]{0,62}$/;
export const DEFAULT_NETWORK = 'default';

export interface CreateAppInput {
  name: string;
  orgSlug: string;
  network?: string;
}

export interface AppView {
  app: AppRecord;
  org: OrgRecord;
  network: NetworkRecord;
  machineCount: number;
  volumeCount: number;
}

export function validateAppName(name: string): void {
  if (!APP_NAME.test(name)) {
    throw invalidArgument(
      `app_name: "${name}" is not a valid app name; use 1-63 lowercase letters, digits and dashes, not starting or ending with a dash`,
    );
  }
}

export class AppsService {
  constructor(
    private readonly ctx: PlatformContext,
    private readonly machines: MachinesService,
    private readonly volumes: VolumesService,
  ) {}

  /**
   * Throws 403 (or 404) unless the principal may `access` the app: the API checks this before it charges
   * the org's and the app's rate-limit buckets. The services check again on their own.
   */
  async authorize(principal: Principal, appName: string, access: Access): Promise<void> {
    await this.ctx.store.read((tx) => appFor(tx, principal, appName, access));
  }

  async create(principal: Principal, input: CreateAppInput): Promise<AppView> {
    requireOrgToken(principal, 'create apps');
    validateAppName(input.name);
    const networkName = input.network ?? DEFAULT_NETWORK;
    if (!NETWORK_NAME.test(networkName)) {
      throw invalidArgument(
        `network: "${networkName}" is not a valid network name; use letters, digits and dashes, starting with a letter`,
      );
    }
    try {
      return await this.ctx.store.write((tx) => {
        const org = orgFor(tx, principal, input.orgSlug, 'write');
        const network = findOrCreateNetwork(tx, org.id, networkName, isoNow(this.ctx));
        const now = isoNow(this.ctx);
        const app: AppRecord = {
          id: newAppId(),
          name: input.name,
          orgId: org.id,
          networkId: network.id,
          status: 'pending',
          internalNumericId: tx.nextSequence('app'),
          secretsVersion: 0,
          createdAt: now,
          updatedAt: now,
        };
        tx.apps.insert(app);
        return { app, org, network, machineCount: 0, volumeCount: 0 };
      });
    } catch (error) {
      if (error instanceof StoreConflictError && error.collection === 'apps') {
        // Clients grep for this legacy text; keep it.
        throw new HangarError(
          'name_taken',
          `Name has already been taken: an app named "${input.name}" exists`,
        );
      }
      throw error;
    }
  }

  async list(principal: Principal, orgSlug: string): Promise<AppView[]> {
    return this.ctx.store.read((tx) => {
      const org = tx.orgs.list({ slug: orgSlug })[0];
      if (!org || org.id !== principal.orgId) {
        throw new HangarError('forbidden', `this token cannot access organization "${orgSlug}"`);
      }
      const apps = tx.apps
        .list({ orgId: org.id })
        .filter((a) => principal.appId === null || a.id === principal.appId);
      return apps.map((app) => this.#view(tx, app, org));
    });
  }

  async get(principal: Principal, name: string): Promise<AppView> {
    return this.ctx.store.read((tx) => {
      const app = appFor(tx, principal, name, 'read');
      return this.#view(tx, app, tx.orgs.get(app.orgId)!);
    });
  }

  /**
   * Deletes the app and everything it owns in one transaction. Running machines block it unless
   * `force`; with force they are stopped first. The network stays (its id is never reused).
   */
  async destroy(principal: Principal, name: string, force: boolean): Promise<void> {
    requireOrgToken(principal, 'delete apps');
    const app = await this.ctx.store.read((tx) => appFor(tx, principal, name, 'write'));
    await this.machines.destroyAllForApp(app, force);
    await this.ctx.store.write((tx) => {
      const current = tx.apps.get(app.id);
      if (!current) return;
      const live =
        tx.machines.count({ appId: app.id }) - tx.machines.count({ appId: app.id, state: 'destroyed' });
      if (live > 0) {
        throw new HangarError(
          'failed_precondition',
          `machines were created in app ${app.name} while it was being deleted; delete it again`,
        );
      }
      for (const machine of tx.machines.list({ appId: app.id })) {
        tx.machineVersions.deleteWhere({ machineId: machine.id });
        tx.machineEvents.deleteWhere({ machineId: machine.id });
        tx.leases.delete(machine.id);
      }
      tx.machines.deleteWhere({ appId: app.id });
      tx.volumeSnapshots.deleteWhere({ appId: app.id });
      tx.volumes.deleteWhere({ appId: app.id });
      tx.secrets.deleteWhere({ appId: app.id });
      // Its custom hostnames are free again for any app.
      tx.certificates.deleteWhere({ appId: app.id });
      tx.ipAssignments.deleteWhere({ appId: app.id });
      tx.tokens.deleteWhere({ appId: app.id });
      tx.apps.delete(app.id);
    });
    // The records are gone; their volume images and snapshots go with them.
    await this.volumes.reconcile();
  }

  #view(tx: import('../store/store.js').ReadTx, app: AppRecord, org: OrgRecord): AppView {
    return {
      app,
      org,
      network: tx.networks.get(String(app.networkId))!,
      machineCount:
        tx.machines.count({ appId: app.id }) - tx.machines.count({ appId: app.id, state: 'destroyed' }),
      volumeCount: tx.volumes.count({ appId: app.id }),
    };
  }
}

/** Networks are bound to their name forever on first use; ids come from a sequence and are never reused. */
export function findOrCreateNetwork(
  tx: WriteTx,
  orgId: string,
  name: string,
  createdAt: string,
): NetworkRecord {
  const existing = tx.networks.list({ orgId, name })[0];
  if (existing) return existing;
  const network: NetworkRecord = { id: tx.nextSequence('network'), orgId, name, createdAt };
  if (network.id > 0xffff_ffff) throw new HangarError('internal', 'network ids are exhausted (32-bit space)');
  tx.networks.insert(network);
  return network;
}

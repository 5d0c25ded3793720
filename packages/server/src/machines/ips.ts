import type { Principal } from '../auth/tokens.js';
import { HangarError, invalidArgument } from '../shared/errors.js';
import { addressInPrefix, flycastAddress } from '../sixpn/ipv6.js';
import type { IpAssignmentRecord, IpType, NetworkRecord } from '../store/records.js';
import { StoreConflictError } from '../store/store.js';
import { appFor, isoNow, type PlatformContext } from './context.js';

export interface AllocateIpInput {
  type: string;
  region?: string;
  network?: string;
  orgSlug?: string;
  serviceName?: string;
}

export interface IpView {
  ip: IpAssignmentRecord;
  network: { name: string; orgSlug: string } | null;
}

const TYPES: readonly IpType[] = ['v6', 'shared_v4', 'private_v6'];

/**
 * IP assignments. `private_v6` is Flycast: an address inside the network its callers live in (the app's
 * own network by default). `v6` comes from the operator's public prefix, `shared_v4` is the host's one
 * shared IPv4 (routing by Host/SNI happens in the proxy).
 */
export class IpsService {
  constructor(private readonly ctx: PlatformContext) {}

  async list(principal: Principal, appName: string): Promise<IpView[]> {
    return this.ctx.store.read((tx) => {
      const app = appFor(tx, principal, appName, 'read');
      const org = tx.orgs.get(app.orgId)!;
      return tx.ipAssignments.list({ appId: app.id }).map((ip) => ({
        ip,
        network:
          ip.networkId === null
            ? null
            : { name: tx.networks.get(String(ip.networkId))?.name ?? 'unknown', orgSlug: org.slug },
      }));
    });
  }

  async allocate(principal: Principal, appName: string, input: AllocateIpInput): Promise<IpView> {
    if (input.type === 'v4') {
      throw invalidArgument(
        'type: dedicated IPv4 addresses are not available on this Hangar; allocate "shared_v4" instead',
      );
    }
    if (!TYPES.includes(input.type as IpType)) {
      throw invalidArgument(`type: expected one of ${TYPES.join(', ')}, got "${input.type}"`);
    }
    const type = input.type as IpType;
    if (type !== 'private_v6' && input.network !== undefined) {
      throw invalidArgument('network: only private_v6 (Flycast) addresses belong to a network');
    }
    const region = input.region ?? this.ctx.region;
    if (region !== this.ctx.region) {
      throw invalidArgument(`region: this Hangar serves region "${this.ctx.region}", not "${region}"`);
    }
    try {
      return await this.ctx.store.write((tx) => {
        const app = appFor(tx, principal, appName, 'write');
        const org = tx.orgs.get(app.orgId)!;
        if (input.orgSlug !== undefined && input.orgSlug !== org.slug) {
          throw invalidArgument(
            `org_slug: exposing an app to another organization is not supported yet (app is in "${org.slug}")`,
          );
        }
        const existing = tx.ipAssignments.list({ appId: app.id });
        let network: NetworkRecord | null = null;
        let ip: string;
        if (type === 'private_v6') {
          const networkName = input.network;
          const own = tx.networks.get(String(app.networkId))!;
          // A deploy token acts for one app, and its reach ends at that app's network: placing the app
          // in another network exposes it to that network's machines, an org decision. Refused before
          // the name is looked up, so the answer says nothing about which networks exist.
          if (networkName !== undefined && networkName !== own.name && principal.appId !== null) {
            throw new HangarError(
              'forbidden',
              `a deploy token may place a Flycast address only in its app's own network "${own.name}", not in "${networkName}"; use an org token`,
            );
          }
          network =
            networkName === undefined
              ? own
              : (tx.networks.list({ orgId: org.id, name: networkName })[0] ?? null);
          if (!network) {
            throw new HangarError(
              'not_found',
              `network "${networkName}" was not found in organization ${org.slug}; networks are created by creating an app with that network`,
            );
          }
          const taken = existing.find((i) => i.type === 'private_v6' && i.networkId === network!.id);
          if (taken) {
            throw new HangarError(
              'name_taken',
              `app ${app.name} already has Flycast address ${taken.ip} in network "${network.name}"`,
            );
          }
          ip = flycastAddress(network.id, tx.nextSequence(`flycast:${network.id}`));
        } else if (type === 'shared_v4') {
          if (existing.some((i) => i.type === 'shared_v4')) {
            throw new HangarError('name_taken', `app ${app.name} already has the shared IPv4 address`);
          }
          ip = this.ctx.ips.sharedV4;
        } else {
          ip = addressInPrefix(this.ctx.ips.publicV6Prefix, tx.nextSequence('public_v6'));
        }
        const record: IpAssignmentRecord = {
          // Every app shares the one IPv4; its record key carries the app so each app can hold it.
          ip: type === 'shared_v4' ? `${ip}#${app.id}` : ip,
          appId: app.id,
          type,
          region,
          networkId: network?.id ?? null,
          serviceName: input.serviceName ?? null,
          shared: type === 'shared_v4',
          createdAt: isoNow(this.ctx),
        };
        tx.ipAssignments.insert(record);
        return { ip: record, network: network ? { name: network.name, orgSlug: org.slug } : null };
      });
    } catch (error) {
      if (error instanceof StoreConflictError)
        throw new HangarError('name_taken', `address already assigned; try again`);
      throw error;
    }
  }

  async release(principal: Principal, appName: string, ip: string): Promise<void> {
    await this.ctx.store.write((tx) => {
      const app = appFor(tx, principal, appName, 'write');
      const record = tx.ipAssignments.list({ appId: app.id }).find((i) => displayIp(i) === ip);
      if (!record) throw new HangarError('not_found', `app ${app.name} has no IP address ${ip}`);
      tx.ipAssignments.delete(record.ip);
    });
  }
}

/** The address as clients see it (the shared IPv4's record key carries the app id). */
export function displayIp(record: IpAssignmentRecord): string {
  return record.type === 'shared_v4' ? record.ip.split('#')[0]! : record.ip;
}

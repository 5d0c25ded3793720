// One app per customer: what makes an app a tenant, and how to read one back.
//
// A tenant of customer `acme` is the app `acme` on its own private network `tenant-acme` (the network's
// name marks the app as a tenant, so a half-made tenant is still found), with a Flycast address on the
// router app's network, the customer's secrets, and machines copied from a template app's config.

import type { App, IPAssignment, Machine, MachinesClient } from '@hangar/sdk';
import { isMachinesApiError } from '@hangar/sdk';
import { CliError } from '../../errors.js';
import { METADATA, RELEASE_COMMAND_GROUP } from '../../fly-toml/index.js';

export const TENANT_NETWORK_PREFIX = 'tenant-';
/** Metadata on a tenant's machines: which customer, and which template app they came from. */
export const TENANT_METADATA = { customer: 'hangar_tenant', template: 'hangar_template' } as const;

const CUSTOMER_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

export function tenantNetwork(customer: string): string {
  return `${TENANT_NETWORK_PREFIX}${customer}`;
}

export function checkCustomerName(customer: string): void {
  if (!CUSTOMER_NAME.test(customer) || customer.length > 56) {
    throw new CliError(
      `invalid customer name "${customer}"`,
      'use lowercase letters, digits and dashes (it names the app and its network)',
    );
  }
}

export function ipNetwork(ip: IPAssignment): string | undefined {
  return typeof ip.network === 'string' ? ip.network : (ip.network?.name ?? undefined);
}

export function isTenantApp(app: Pick<App, 'name' | 'network'>): boolean {
  return app.network === tenantNetwork(app.name);
}

/** The tenant's app, or undefined when there is none; refuses an app of that name that is not a tenant. */
export async function getTenantApp(client: MachinesClient, customer: string): Promise<App | undefined> {
  try {
    const app = await client.apps.get(customer);
    if (!isTenantApp(app)) {
      throw new CliError(
        `app ${customer} exists on network "${app.network}", so it is not a tenant (tenants live on ${tenantNetwork(customer)})`,
        'pick another customer name, or manage that app with `hangar apps`',
      );
    }
    return app;
  } catch (err) {
    if (isMachinesApiError(err) && err.status === 404) return undefined;
    throw err;
  }
}

export function liveMachines(machines: Machine[]): Machine[] {
  return machines.filter(
    (m) =>
      m.state !== 'destroyed' &&
      m.state !== 'destroying' &&
      m.config?.metadata?.[METADATA.processGroup] !== RELEASE_COMMAND_GROUP,
  );
}

export interface TenantView {
  customer: string;
  app: string;
  network: string | undefined;
  flycast: Array<{ ip: string; network: string | undefined }>;
  secrets: string[];
  machines: Array<{ id: string; state: string; group: string; image: string | undefined }>;
}

export async function describeTenant(client: MachinesClient, app: App): Promise<TenantView> {
  const [ips, secrets, machines] = await Promise.all([
    client.ipAssignments.list(app.name),
    client.secrets.list(app.name),
    client.machines.list(app.name),
  ]);
  return {
    customer: app.name,
    app: app.name,
    network: app.network,
    flycast: ips.ips
      .filter((ip) => ip.type === 'private_v6' || ip.ip.startsWith('fdaa:'))
      .map((ip) => ({ ip: ip.ip, network: ipNetwork(ip) })),
    secrets: secrets.secrets.map((s) => s.name),
    machines: liveMachines(machines).map((m) => ({
      id: m.id,
      state: m.state,
      group: m.config?.metadata?.[METADATA.processGroup] ?? 'app',
      image: m.config?.image,
    })),
  };
}

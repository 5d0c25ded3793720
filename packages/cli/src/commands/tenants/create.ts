import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MachineConfig, MachinesClient } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { collect, parseKeyValues } from '../../flags.js';
import { METADATA } from '../../fly-toml/index.js';
import type { Output } from '../../output.js';
import { type RegistryTarget, registryAddress, writePushCredentials } from '../../registry.js';
import { runTool } from '../deploy/tool.js';
import {
  checkCustomerName,
  describeTenant,
  getTenantApp,
  ipNetwork,
  liveMachines,
  TENANT_METADATA,
  tenantNetwork,
} from './shared.js';

interface Opts {
  template: string;
  router?: string;
  secret?: string[];
  org: string;
  registry?: string;
  waitTimeout: string;
}

/** What one step did, for the summary: `made` is false when it was already there. */
interface Step {
  what: string;
  made: boolean;
}

/**
 * An image in the template app's space of Hangar's registry is copied into the tenant's space (a
 * machine may use only its own app's images); other images are used as they are.
 */
export function tenantImage(image: string, template: string, tenant: string): string | undefined {
  const m = /^((?:127\.0\.0\.1|localhost|\[::1\]):\d+)\/([^/]+)\/(.+)$/.exec(image);
  if (!m || m[2] !== template) return undefined;
  return `${m[1]}/${tenant}/${m[3]}`;
}

/** The template's config made into a tenant's: its own image copy, autostop and autostart on. */
export function tenantConfig(
  template: MachineConfig,
  image: string,
  customer: string,
  templateApp: string,
): MachineConfig {
  const config: MachineConfig = { ...template, image };
  if (config.services) {
    config.services = config.services.map((s) => ({ ...s, autostop: 'stop', autostart: true }));
  }
  config.metadata = {
    ...template.metadata,
    [TENANT_METADATA.customer]: customer,
    [TENANT_METADATA.template]: templateApp,
  };
  // A template's volume is its own: the tenant gets a volume of its own below.
  if (config.mounts?.length) config.mounts = config.mounts.map(({ volume: _, ...m }) => m);
  return config;
}

async function copyImage(from: string, to: string, registry: RegistryTarget, out: Output): Promise<void> {
  // The references name the registry as machines see it; the CLI may reach it at another address.
  const reach = (ref: string) => ref.replace(/^[^/]+/, registry.address);
  out.note(`Copying image ${from} to ${to}`);
  // The token goes in a 0600 auth file, as a push's does: a command line is readable by every user of the host.
  const work = await mkdtemp(join(tmpdir(), 'hangar-copy-'));
  try {
    const credentials = await writePushCredentials(work, registry);
    await runTool(
      'skopeo',
      [
        'copy',
        '--src-tls-verify=false',
        '--dest-tls-verify=false',
        '--authfile',
        credentials.authFile,
        `docker://${reach(from)}`,
        `docker://${reach(to)}`,
      ],
      { env: credentials.env, onLine: (line) => out.note(`  ${line}`) },
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function ensureMachines(
  client: MachinesClient,
  customer: string,
  templateApp: string,
  registry: () => RegistryTarget,
  waitMs: number,
  out: Output,
): Promise<Step[]> {
  const steps: Step[] = [];
  const templates = liveMachines(await client.machines.list(templateApp)).filter((m) => m.config);
  if (templates.length === 0) {
    throw new CliError(
      `template app ${templateApp} has no machines to copy`,
      `deploy the template first (hangar deploy -a ${templateApp})`,
    );
  }
  const group = (m: { config?: MachineConfig }) => m.config?.metadata?.[METADATA.processGroup] ?? 'app';
  const byGroup = new Map<string, MachineConfig>();
  for (const m of templates) if (!byGroup.has(group(m)) && m.config) byGroup.set(group(m), m.config);
  const have = liveMachines(await client.machines.list(customer));
  const copied = new Set<string>();
  for (const [name, template] of byGroup) {
    const existing = have.find((m) => group(m) === name);
    if (existing) {
      steps.push({ what: `machine ${existing.id} (group ${name}, ${existing.state})`, made: false });
      continue;
    }
    const image = tenantImage(template.image, templateApp, customer) ?? template.image;
    if (image !== template.image && !copied.has(image)) {
      await copyImage(template.image, image, registry(), out);
      copied.add(image);
    }
    const config = tenantConfig(template, image, customer, templateApp);
    const mount = config.mounts?.[0];
    if (mount) {
      const volumes = await client.volumes.list(customer);
      const name = mount.name ?? 'data';
      let volume = volumes.find((v) => v.name === name && v.state === 'created' && !v.attached_machine_id);
      if (!volume) {
        volume = await client.volumes.create(customer, { name, size_gb: 1 });
        steps.push({ what: `volume ${volume.id} (${name})`, made: true });
      }
      config.mounts = [{ ...mount, volume: volume.id }];
    }
    const machine = await client.machines.launch(customer, { config });
    out.note(`Machine ${machine.id} (group ${name}) created, waiting for it to start`);
    await client.waitForState(customer, machine.id, 'started', {
      timeoutMs: waitMs,
      version: machine.instance_id,
    });
    steps.push({ what: `machine ${machine.id} (group ${name}, started)`, made: true });
  }
  return steps;
}

export default defineVerb<Opts>({
  usage: 'create <customer>',
  summary: 'Create (or finish) a customer’s app in one step',
  description:
    'Make the app of one customer: the app <customer> on its own private network tenant-<customer>, a ' +
    'Flycast address reachable from the router app’s network, the customer’s secrets, and machines with the ' +
    'config of the template app’s machines (one per process group, autostop and autostart on). Running it ' +
    'again finishes a half-made tenant and changes nothing that is already there (secrets given are set again).',
  examples: [
    'hangar tenants create acme --template web-template --router router --secret DATABASE_URL=postgres://db/acme',
    'hangar tenants create globex --template web-template --json',
  ],
  json: true,
  options(cmd) {
    cmd
      .requiredOption('--template <app>', 'app whose machines’ config the tenant’s machines copy')
      .option(
        '--router <app>',
        'app whose network reaches the tenant over Flycast (default: the tenant’s own)',
      )
      .option('-s, --secret <NAME=VALUE>', 'a secret of the customer (repeatable)', collect)
      .option('-o, --org <slug>', 'organization', 'personal')
      .option(
        '--registry <host:port>',
        "Hangar's registry (env HANGAR_REGISTRY; default: the API host, port + 1)",
      )
      .option('--wait-timeout <seconds>', 'how long each machine may take to start', '120');
  },
  async run(ctx) {
    const { opts, out, io } = ctx;
    const customer = ctx.arg(0);
    checkCustomerName(customer);
    const client = ctx.client();
    const steps: Step[] = [];
    const secrets = parseKeyValues(opts.secret ?? [], 'secret');
    const waitMs = Number(opts.waitTimeout) * 1000 || 120_000;
    const registry = () => {
      const settings = ctx.config();
      if (!settings.token) throw new CliError('no API token to copy the image with', 'set HANGAR_API_TOKEN');
      return {
        address: registryAddress(opts.registry, io.env, settings.apiUrl),
        token: settings.token,
      };
    };

    // Everything the tenant needs from elsewhere is checked before anything is made.
    await client.apps.get(opts.template);
    const routerNetwork = opts.router ? (await client.apps.get(opts.router)).network : undefined;

    // 1. The app, on its own network.
    let app = await getTenantApp(client, customer);
    const madeApp = !app;
    if (!app) {
      app = await client.apps.create({
        app_name: customer,
        org_slug: opts.org,
        network: tenantNetwork(customer),
      });
      out.note(`Created app ${customer} on network ${tenantNetwork(customer)}`);
    }
    steps.push({ what: `app ${customer} (network ${app.network})`, made: madeApp });

    // 2. A Flycast address on the router's network (or the tenant's own).
    const flycastNetwork = routerNetwork ?? app.network;
    const { ips } = await client.ipAssignments.list(customer);
    const flycast = ips.find((ip) => ip.type === 'private_v6' && ipNetwork(ip) === flycastNetwork);
    if (flycast) {
      steps.push({ what: `Flycast ${flycast.ip} (network ${flycastNetwork})`, made: false });
    } else {
      const ip = await client.ipAssignments.allocate(customer, {
        type: 'private_v6',
        ...(routerNetwork ? { network: routerNetwork } : {}),
      });
      steps.push({ what: `Flycast ${ip.ip} (network ${flycastNetwork})`, made: true });
    }

    // 3. The customer's secrets, before the machines boot so that they start with them.
    if (Object.keys(secrets).length > 0) {
      await client.secrets.set(customer, secrets);
      steps.push({ what: `secrets ${Object.keys(secrets).join(', ')}`, made: true });
    }

    // 4. Machines from the template.
    steps.push(...(await ensureMachines(client, customer, opts.template, registry, waitMs, out)));

    const view = await describeTenant(client, app);
    if (out.json) return out.printJson({ ...view, steps });
    out.line(`Tenant ${customer} is ready`);
    for (const step of steps) out.line(`  ${step.made ? 'made   ' : 'existed'}  ${step.what}`);
    out.line(`Reach it at http://${customer}.flycast/ from the network ${flycastNetwork}`);
  },
});

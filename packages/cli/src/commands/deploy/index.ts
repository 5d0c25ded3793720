// `hangar deploy`: reads fly.toml, gets the image (given, or built with buildah and pushed to the app's
// space of Hangar's registry), runs the release command, then creates or updates the machines of every
// process group per the deploy strategy, under leases, rolling back when the new version fails.

import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isMachinesApiError, type MachinesClient } from '@hangar/sdk';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { collect, intFlag, parseKeyValues } from '../../flags.js';
import {
  DEPLOY_STRATEGIES,
  type DeployStrategy,
  guestFor,
  machineConfigs,
  parseDurationMs,
  parseFlyToml,
  RELEASE_COMMAND_GROUP,
} from '../../fly-toml/index.js';
import type { Output } from '../../output.js';
import { registryAddress } from '../../registry.js';
import { buildAndPush } from './image.js';
import { runReleaseCommand } from './release-command.js';
import { Rollout } from './rollout.js';

interface Opts {
  config: string;
  image?: string;
  strategy?: string;
  waitTimeout?: string;
  ha: boolean;
  publicIps: boolean;
  flycast?: boolean;
  releaseCommand: boolean;
  registry?: string;
  buildArg?: string[];
  region?: string;
}

/** Public addresses (or a Flycast one) for an app with services, once, as `fly deploy` does on a first deploy. */
async function ensureIps(client: MachinesClient, app: string, opts: Opts, out: Output): Promise<string[]> {
  const { ips } = await client.ipAssignments.list(app);
  const made: string[] = [];
  const has = (type: string) => ips.some((ip) => ip.type === type);
  if (opts.flycast) {
    if (!has('private_v6')) {
      const ip = await client.ipAssignments.allocate(app, { type: 'private_v6' });
      made.push(ip.ip);
      out.note(`Allocated Flycast address ${ip.ip}`);
    }
    return made;
  }
  if (!opts.publicIps) return made;
  if (!has('v6')) {
    const ip = await client.ipAssignments.allocate(app, { type: 'v6' });
    made.push(ip.ip);
    out.note(`Allocated public IPv6 ${ip.ip}`);
  }
  if (!has('shared_v4') && !has('v4')) {
    const ip = await client.ipAssignments.allocate(app, { type: 'shared_v4' });
    made.push(ip.ip);
    out.note(`Allocated shared IPv4 ${ip.ip}`);
  }
  return made;
}

export const deploy = defineVerb<Opts>({
  usage: 'deploy',
  summary: 'Deploy an app from its fly.toml',
  description:
    'Read fly.toml, build the image from its Dockerfile with buildah (or take [build] image or --image), ' +
    'push it to the app’s space in Hangar’s registry, run the release command, then create or update the ' +
    'machines of every process group per [deploy] strategy (rolling, immediate, canary, bluegreen), ' +
    'waiting for each to start and pass its health checks. When the new version fails, every machine goes ' +
    'back to its previous config. Stopped and suspended machines are booted once to verify the new ' +
    'version, then left stopped or suspended.',
  examples: [
    'hangar deploy',
    'hangar deploy -c ./billing/fly.toml --flycast --no-public-ips',
    'hangar deploy --image 127.0.0.1:4281/acme/web:v2 --strategy immediate -a acme',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd
      .option('-c, --config <path>', 'the fly.toml to deploy', 'fly.toml')
      .option('-i, --image <ref>', 'deploy this image instead of building one')
      .option(
        '--strategy <name>',
        `deploy strategy: ${DEPLOY_STRATEGIES.join(', ')} (default: [deploy] strategy)`,
      )
      .option(
        '--wait-timeout <duration>',
        'how long each machine may take to start and pass its checks, e.g. 2m',
      )
      .option('--no-ha', 'create one machine per process group on a first deploy, not two')
      .option('--no-public-ips', 'allocate no public addresses on a first deploy')
      .option('--flycast', 'allocate a private Flycast address instead of public ones')
      .option('--no-release-command', 'skip [deploy] release_command this time')
      .option(
        '--registry <host:port>',
        "Hangar's registry (env HANGAR_REGISTRY; default: the API host, port + 1)",
      )
      .option('--build-arg <NAME=VALUE>', 'build argument (repeatable)', collect)
      .option('-r, --region <code>', 'region of new machines (default: primary_region)');
  },
  async run({ opts, io, out, client, config: settingsOf, app: appFlag }) {
    const file = resolve(opts.config);
    const text = io.readFile(file);
    if (text === undefined) {
      throw new CliError(
        `cannot read ${opts.config}`,
        'run hangar deploy in the app’s directory, or pass -c PATH/fly.toml',
      );
    }
    const { config, warnings } = parseFlyToml(text, { file: opts.config });
    for (const warning of warnings) out.note(`Warning: ${warning}`);
    let app: string;
    try {
      app = appFlag();
    } catch {
      if (!config.app) throw new CliError('no app given', 'set app = "NAME" in fly.toml, or pass -a NAME');
      app = config.app;
    }
    const strategy = (opts.strategy ?? config.deploy.strategy) as DeployStrategy;
    if (!DEPLOY_STRATEGIES.includes(strategy)) {
      throw new CliError(
        `unknown --strategy "${opts.strategy}"`,
        `use one of ${DEPLOY_STRATEGIES.join(', ')}`,
      );
    }
    if (config.mounts.length > 0 && (strategy === 'canary' || strategy === 'bluegreen')) {
      throw new CliError(`--strategy ${strategy} cannot be used with [[mounts]]`, 'use rolling or immediate');
    }
    let waitTimeoutMs = config.deploy.waitTimeoutMs;
    if (opts.waitTimeout !== undefined) {
      const ms = /^\d+$/.test(opts.waitTimeout)
        ? (intFlag(opts.waitTimeout, '--wait-timeout') ?? 0) * 1000
        : parseDurationMs(opts.waitTimeout);
      if (!ms)
        throw new CliError(
          `invalid --wait-timeout "${opts.waitTimeout}"`,
          'write a duration such as 90s or 5m',
        );
      waitTimeoutMs = ms;
    }
    const api = client();
    const progress = (line: string) => out.note(line);
    await api.apps.get(app).catch((err: unknown) => {
      if (isMachinesApiError(err) && err.status === 404) {
        throw new CliError(`app ${app} does not exist`, `create it first: hangar apps create ${app}`);
      }
      throw err;
    });

    // 1. The image.
    let image = opts.image ?? config.build.image;
    let built: Awaited<ReturnType<typeof buildAndPush>> | undefined;
    if (!image) {
      const settings = settingsOf();
      if (!settings.token) throw new CliError('no API token to push the image with', 'set HANGAR_API_TOKEN');
      built = await buildAndPush({
        app,
        build: config.build,
        baseDir: dirname(file),
        registry: {
          address: registryAddress(opts.registry, io.env, settings.apiUrl),
          token: settings.token,
        },
        buildArgs: parseKeyValues(opts.buildArg ?? [], 'build argument'),
        progress,
      });
      image = built.reference;
    }
    progress(`Deploying ${image} to ${app} (${strategy})`);

    // 2. The new version's config, per process group.
    const localFiles: Record<string, string> = {};
    for (const f of config.files) {
      if (!f.localPath) continue;
      const path = resolve(dirname(file), f.localPath);
      try {
        localFiles[f.localPath] = readFileSync(path).toString('base64');
      } catch {
        throw new CliError(`[[files]] local_path ${f.localPath}: cannot read ${path}`);
      }
    }
    const configs = machineConfigs(config, image, { localFiles });
    const region = opts.region ?? config.primaryRegion;

    // 3. The release command, before any machine changes.
    let releaseExit: number | undefined;
    const first = [...configs.values()][0];
    if (config.deploy.releaseCommand && opts.releaseCommand && first) {
      releaseExit = await runReleaseCommand(api, {
        app,
        base: first,
        command: config.deploy.releaseCommand,
        guest: config.deploy.releaseCommandVm
          ? guestFor([{ ...config.deploy.releaseCommandVm, processes: [] }], RELEASE_COMMAND_GROUP)
          : undefined,
        timeoutMs: config.deploy.releaseCommandTimeoutMs,
        region,
        progress,
      });
    }

    // 4. The machines.
    const result = await new Rollout(api, {
      app,
      appConfig: config,
      configs,
      strategy,
      maxUnavailable: config.deploy.maxUnavailable,
      waitTimeoutMs,
      ha: opts.ha,
      region,
      progress,
    }).run();

    // 5. Addresses, on the first deploy of an app with services.
    const hasServices = [...configs.values()].some((c) => c.services?.length);
    const ips = result.firstDeploy && hasServices ? await ensureIps(api, app, opts, out) : [];

    const summary = {
      app,
      image,
      ...(built ? { image_digest: built.digest, image_bytes: built.bytes } : {}),
      strategy,
      first_deploy: result.firstDeploy,
      ...(releaseExit !== undefined ? { release_command_exit_code: releaseExit } : {}),
      machines: result.machines,
      allocated_ips: ips,
    };
    if (out.json) return out.printJson(summary);
    out.line(`Deployed ${image} to ${app}`);
    out.table(
      ['Machine', 'Group', 'Action', 'State', 'Version'],
      result.machines.map((m) => [
        m.id,
        m.group,
        m.verified ? `${m.action} (verified)` : m.action,
        m.state,
        m.version,
      ]),
    );
  },
});

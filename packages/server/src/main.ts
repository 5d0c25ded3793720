#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { parseListen, resolveConfig } from './config/config.js';
import { startHangard } from './daemon.js';

const HELP = `hangard: the Hangar daemon (Fly Machines API on your own servers)

Usage: hangard [--data-dir DIR] [--listen HOST:PORT] [--region NAME] [--config FILE]

Options:
  --data-dir DIR      where Hangar keeps its data (default /var/lib/hangar, env HANGAR_DATA_DIR)
  --listen HOST:PORT  address of the Machines API (default 127.0.0.1:4280, env HANGAR_API_LISTEN)
  --region NAME       the region this host serves (default "local", env HANGAR_REGION)
  --config FILE       a JSON file with any setting of docs/configuration.md
  -h, --help          show this help

Example:
  hangard --data-dir /var/lib/hangar --listen 0.0.0.0:4280
`;

async function main(): Promise<void> {
  // hangard writes secrets, tokens and the database: nothing it creates is for other users.
  process.umask(0o077);
  let values: { 'data-dir'?: string; listen?: string; region?: string; config?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        'data-dir': { type: 'string' },
        listen: { type: 'string' },
        region: { type: 'string' },
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    fail(`${(error as Error).message}`, 'run `hangard --help` for the options');
  }
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  let config: ReturnType<typeof resolveConfig>;
  try {
    config = resolveConfig({
      ...(values.config ? { file: values.config } : {}),
      overrides: {
        ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}),
        ...(values.listen ? { listen: parseListen(values.listen) } : {}),
        ...(values.region ? { region: values.region } : {}),
      },
    });
  } catch (error) {
    fail((error as Error).message, 'see docs/configuration.md for every setting');
  }
  const hangard = await startHangard(config).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'EADDRINUSE') {
      fail(
        `${config.listen.host}:${config.listen.port} is already in use`,
        'is another hangard running? pick another --listen',
      );
    }
    return fail(`cannot start: ${error.message}`, 'see docs/operations.md (data directory, upgrades)');
  });
  process.stdout.write(
    `hangard: Machines API on ${hangard.url} (region ${config.region}, data in ${config.dataDir})\n`,
  );
  if (hangard.createdToken) {
    process.stdout.write(`hangard: created org "personal"; its token is in ${hangard.tokenFile}\n`);
  } else {
    process.stdout.write(`hangard: the "personal" org token is in ${hangard.tokenFile}\n`);
  }
  if ('description' in hangard.runtime) {
    process.stdout.write(`hangard: machines run with ${hangard.runtime.description}\n`);
  } else {
    process.stdout.write(
      `hangard: no machine runtime (${hangard.runtime.missing}): machines are recorded but do not run (see docs/runtime.md)\n`,
    );
  }
  if ('description' in hangard.network) {
    process.stdout.write(`hangard: ${hangard.network.description}\n`);
  } else {
    process.stdout.write(
      `hangard: no private networks (${hangard.network.missing}): machines get a loopback-only network (see docs/networking.md)\n`,
    );
  }
  process.stdout.write(
    'description' in hangard.proxy
      ? `hangard: ${hangard.proxy.description}\n`
      : `hangard: no proxy (${hangard.proxy.missing}) (see docs/proxy.md)\n`,
  );
  const shutdown = (signal: string) => {
    process.stdout.write(`hangard: ${signal}, shutting down\n`);
    void hangard.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

function fail(message: string, hint: string): never {
  process.stderr.write(`hangard: ${message}\nhint: ${hint}\n`);
  process.exit(2);
}

await main();

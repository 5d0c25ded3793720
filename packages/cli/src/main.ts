#!/usr/bin/env node
// hangar: flyctl's verbs and flags for a Hangar (or Fly.io) Machines API.

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { exampleText, type Noun, registerNoun, registerVerb, type Verb } from './command.js';
import { apps } from './commands/apps/index.js';
import { auth } from './commands/auth/index.js';
import { certs } from './commands/certs/index.js';
import { deploy } from './commands/deploy/index.js';
import { image } from './commands/image/index.js';
import { ips } from './commands/ips/index.js';
import { machine } from './commands/machine/index.js';
import { orgs } from './commands/orgs/index.js';
import { scale } from './commands/scale/index.js';
import { secrets } from './commands/secrets/index.js';
import { ssh } from './commands/ssh/index.js';
import { tenants } from './commands/tenants/index.js';
import { tokens } from './commands/tokens/index.js';
import doctor from './commands/top/doctor.js';
import logs from './commands/top/logs.js';
import proxy from './commands/top/proxy.js';
import releases from './commands/top/releases.js';
import status from './commands/top/status.js';
import { volumes } from './commands/volumes/index.js';
import { reportError } from './errors.js';
import { type CliIO, processIO } from './io.js';
import { CLI_VERSION } from './version.js';

/** Command groups (`hangar <noun> <verb>`), in the order --help lists them. */
// biome-ignore format: one group per line, so that branches adding groups merge cleanly
export const NOUNS: Noun[] = [
  apps,
  machine,
  secrets,
  ips,
  certs,
  volumes,
  tokens,
  auth,
  orgs,
  scale,
  tenants,
  image,
  ssh,
];

/** Top-level verbs (`hangar status`), listed after the groups. */
// biome-ignore format: one verb per line, so that branches adding verbs merge cleanly
export const VERBS: Verb[] = [
  status,
  logs,
  releases,
  doctor,
  deploy,
  proxy,
];

/** Builds the whole command tree. Exported so tests can walk it. */
export function buildProgram(io: CliIO): Command {
  const program = new Command('hangar')
    .description('Run apps on Hangar machines, the way flyctl does on Fly.io')
    .version(CLI_VERSION, '-V, --version')
    .option('--api-url <url>', 'Machines API URL (env HANGAR_API_URL, FLY_API_HOSTNAME)')
    .option('-t, --access-token <token>', 'API token (env HANGAR_API_TOKEN, FLY_API_TOKEN)')
    // Throw instead of calling process.exit, and write through io: run() must work in-process.
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    })
    .showHelpAfterError('(add --help for usage)')
    .addHelpText('after', exampleText(['hangar apps create acme', 'hangar machine run nginx -a acme']));
  for (const noun of NOUNS) registerNoun(program, noun, io);
  for (const verb of VERBS) registerVerb(program, verb, io);
  return program;
}

/** Runs the CLI with `argv` (without node and script) and returns the exit code. Never exits the process. */
export async function run(argv: string[], io: Partial<CliIO> = {}): Promise<number> {
  const fullIO: CliIO = { ...processIO(), ...io };
  try {
    await buildProgram(fullIO).parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    // Commander has already printed its own message (usage errors) or the help/version text.
    if (err instanceof CommanderError) return err.exitCode;
    return reportError(fullIO, err);
  }
}

function invokedDirectly(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    // npm installs the binary as a symlink; compare real paths.
    return realpathSync(script) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  // `hangar machine list | head -1` closes the pipe early; that is the reader's choice, not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  process.exitCode = await run(process.argv.slice(2));
}

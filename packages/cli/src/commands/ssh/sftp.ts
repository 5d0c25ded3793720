import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, posix } from 'node:path';
import { createInterface } from 'node:readline';
import { defineVerb } from '../../command.js';
import { chooseMachine, openConsole, relay } from '../../console-session.js';
import type { ResolvedConfig } from '../../context.js';
import { CliError } from '../../errors.js';
import type { CliIO } from '../../io.js';
import type { Output } from '../../output.js';

interface Opts {
  machine?: string;
  select?: boolean;
}

/** Runs `script` with sh -c in the machine, without a terminal; `$1` is `path`. */
async function remote(
  config: ResolvedConfig,
  app: string,
  machine: string,
  script: string,
  path: string,
  input: NodeJS.ReadableStream | null,
  output: Parameters<typeof relay>[2],
): Promise<number> {
  const socket = await openConsole(config, app, machine, {
    command: ['/bin/sh', '-c', script, 'sh', path],
    tty: null,
  });
  return relay(socket, input, output);
}

/** The size of a remote regular file, or a one-line error. */
async function remoteSize(
  config: ResolvedConfig,
  app: string,
  machine: string,
  path: string,
): Promise<number> {
  let text = '';
  const code = await remote(config, app, machine, 'test -f "$1" && wc -c < "$1"', path, null, {
    write: (chunk: Buffer) => {
      text += chunk.toString('utf8');
    },
  });
  const size = Number(text.trim());
  if (code !== 0 || !Number.isInteger(size)) {
    throw new CliError(
      `${path}: no such regular file in the machine`,
      'check the path with hangar ssh console -C "ls -l DIR"',
    );
  }
  return size;
}

/** Where a copy goes: the API config, the app and the machine. */
interface Target {
  config: ResolvedConfig;
  app: string;
  machine: string;
}

/** Copies a remote file to `local` (through a partial file, renamed once complete); returns its size. */
async function getFile(target: Target, remotePath: string, local: string): Promise<number> {
  const { config, app, machine } = target;
  const size = await remoteSize(config, app, machine, remotePath);
  const partial = `${local}.hangar-partial`;
  const file = createWriteStream(partial, { mode: 0o644 });
  let received = 0;
  try {
    const code = await remote(config, app, machine, 'exec cat -- "$1"', remotePath, null, file);
    await new Promise<void>((resolve, reject) =>
      file.end((error?: Error | null) => (error ? reject(error) : resolve())),
    );
    received = file.bytesWritten;
    if (code !== 0) throw new CliError(`reading ${remotePath} in the machine failed (exit ${code})`);
    if (received !== size) {
      throw new CliError(
        `${remotePath}: received ${received} bytes of ${size}`,
        'the file changed meanwhile, or the connection broke: try again',
      );
    }
    await rename(partial, local);
  } catch (error) {
    file.destroy();
    await rm(partial, { force: true });
    throw error;
  }
  return received;
}

/** Copies `local` into the machine at `remotePath` and checks the size written; returns it. */
async function putFile(target: Target, local: string, remotePath: string, io: CliIO): Promise<number> {
  const { config, app, machine } = target;
  let size: number;
  try {
    size = statSync(local).size;
  } catch {
    throw new CliError(`cannot read ${local}`, 'check the local path');
  }
  const code = await remote(config, app, machine, 'exec cat > "$1"', remotePath, createReadStream(local), {
    write: (chunk: Buffer) => io.stderr.write(chunk.toString('utf8')),
  });
  if (code !== 0) {
    throw new CliError(
      `writing ${remotePath} in the machine failed (exit ${code})`,
      'check that its directory exists and is writable',
    );
  }
  const written = await remoteSize(config, app, machine, remotePath);
  if (written !== size) throw new CliError(`${remotePath}: ${written} bytes written of ${size}`, 'try again');
  return size;
}

const SHELL_HELP = [
  'ls [DIR]              list a directory of the machine',
  'cd DIR                change the machine directory (pwd shows it)',
  'get REMOTE [LOCAL]    copy a file out',
  'put LOCAL [REMOTE]    copy a file in',
  'exit                  leave (also Ctrl-D)',
].join('\n');

/** A small interactive shell over the same copies: one command a line, from a terminal or a pipe. */
async function shell(target: Target, io: CliIO, out: Output): Promise<number> {
  let cwd = '/';
  const at = (path: string) => posix.resolve(cwd, path);
  const lines = createInterface({ input: process.stdin, terminal: false });
  const prompt = () => {
    if (process.stdin.isTTY) io.stdout.write('sftp> ');
  };
  prompt();
  let failed = false;
  for await (const line of lines) {
    const [command, ...words] = line.trim().split(/\s+/).filter(Boolean);
    try {
      if (!command) {
        // An empty line: nothing to do.
      } else if (command === 'exit' || command === 'quit' || command === 'bye') {
        break;
      } else if (command === 'help' || command === '?') {
        out.line(SHELL_HELP);
      } else if (command === 'pwd') {
        out.line(cwd);
      } else if (command === 'cd' && words.length === 1) {
        const next = at(words[0]!);
        const code = await remote(target.config, target.app, target.machine, 'test -d "$1"', next, null, {
          write: () => undefined,
        });
        if (code !== 0) throw new CliError(`${next}: no such directory in the machine`);
        cwd = next;
      } else if (command === 'ls' && words.length <= 1) {
        const code = await remote(
          target.config,
          target.app,
          target.machine,
          'exec ls -la -- "$1"',
          at(words[0] ?? '.'),
          null,
          {
            write: (chunk: Buffer) => io.stdout.write(chunk.toString('utf8')),
          },
        );
        if (code !== 0) throw new CliError(`ls failed (exit ${code})`);
      } else if (command === 'get' && words.length >= 1 && words.length <= 2) {
        const local = words[1] ?? basename(words[0]!);
        const size = await getFile(target, at(words[0]!), local);
        out.line(`${size} bytes to ${local}`);
      } else if (command === 'put' && words.length >= 1 && words.length <= 2) {
        const remotePath = at(words[1] ?? basename(words[0]!));
        const size = await putFile(target, words[0]!, remotePath, io);
        out.line(`${size} bytes to ${remotePath}`);
      } else {
        throw new CliError(`unknown command "${line.trim()}"`, 'type help for the commands');
      }
    } catch (error) {
      // One failed command does not end the shell; it is reported and remembered for the exit code.
      failed = true;
      const hint = error instanceof CliError && error.hint ? ` (${error.hint})` : '';
      io.stderr.write(`Error: ${(error as Error).message}${hint}\n`);
    }
    prompt();
  }
  lines.close();
  return failed ? 1 : 0;
}

export default defineVerb<Opts>({
  usage: 'sftp <action> [paths...]',
  summary: 'Copy files from and to a machine: get REMOTE [LOCAL], put LOCAL REMOTE, or an interactive shell',
  description:
    'get REMOTE [LOCAL] copies a file out of a machine (LOCAL defaults to its name, here); put LOCAL ' +
    'REMOTE copies one in; shell reads commands (ls, cd, pwd, get, put, exit; help lists them) one a ' +
    'line. Bytes stream through the API’s console endpoint with cat in the machine (which needs sh, ' +
    'cat, wc, test and ls, as busybox has), and the sizes on both sides are compared. A failed get ' +
    'leaves no partial file.',
  examples: [
    'hangar ssh sftp get /data/db.sqlite ./db.sqlite -a acme',
    'hangar ssh sftp put ./seed.sql /data/seed.sql -a acme --machine 148ed193b95e89',
    'hangar ssh sftp shell -a acme',
  ],
  app: true,
  options(cmd) {
    cmd
      .option('--machine <id>', 'the machine (default: the first started one)')
      .option('-s, --select', 'choose the machine from a list');
  },
  async run({ app, arg, args, opts, client, config, io, out }) {
    const action = arg(0);
    const paths = args(1);
    const name = app();
    const known =
      (action === 'get' && paths.length >= 1 && paths.length <= 2) ||
      (action === 'put' && paths.length === 2) ||
      (action === 'shell' && paths.length === 0);
    if (!known) {
      throw new CliError(
        `unknown sftp action "${[action, ...paths].join(' ')}"`,
        'use: get REMOTE [LOCAL], put LOCAL REMOTE, or shell',
      );
    }
    const target: Target = {
      config: config(),
      app: name,
      machine: await chooseMachine(client(), name, opts, io),
    };
    if (action === 'shell') return shell(target, io, out);
    if (action === 'get') {
      const local = paths[1] ?? basename(paths[0]!);
      const size = await getFile(target, paths[0]!, local);
      out.note(`${size} bytes from ${target.machine}:${paths[0]} to ${local}`);
      return 0;
    }
    const size = await putFile(target, paths[0]!, paths[1]!, io);
    out.note(`${size} bytes from ${paths[0]} to ${target.machine}:${paths[1]}`);
    return 0;
  },
});

import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename } from 'node:path';
import { Writable } from 'node:stream';
import { defineVerb } from '../../command.js';
import { chooseMachine, openConsole, relay } from '../../console-session.js';
import type { ResolvedConfig } from '../../context.js';
import { CliError } from '../../errors.js';

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
  output: { write(chunk: Buffer): unknown },
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

export default defineVerb<Opts>({
  usage: 'sftp <action> [paths...]',
  summary: 'Copy files from and to a machine: get REMOTE [LOCAL], put LOCAL REMOTE',
  description:
    'get REMOTE [LOCAL] copies a file out of a machine (LOCAL defaults to its name, here); put LOCAL ' +
    'REMOTE copies one in. Bytes stream through the API’s console endpoint with cat in the machine ' +
    '(which needs sh, cat, wc and test, as busybox has), and the sizes on both sides are compared. A ' +
    'failed get leaves no partial file.',
  examples: [
    'hangar ssh sftp get /data/db.sqlite ./db.sqlite -a acme',
    'hangar ssh sftp put ./seed.sql /data/seed.sql -a acme --machine 148ed193b95e89',
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
    if (action === 'get' && paths.length >= 1 && paths.length <= 2) {
      const remotePath = paths[0]!;
      const local = paths[1] ?? basename(remotePath);
      const machine = await chooseMachine(client(), name, opts, io);
      const size = await remoteSize(config(), name, machine, remotePath);
      const partial = `${local}.hangar-partial`;
      const file = createWriteStream(partial, { mode: 0o644 });
      let received = 0;
      const sink = new Writable({
        write(chunk: Buffer, _encoding, done) {
          received += chunk.length;
          file.write(chunk, done);
        },
      });
      try {
        const code = await remote(config(), name, machine, 'exec cat -- "$1"', remotePath, null, {
          write: (chunk: Buffer) => sink.write(chunk),
        });
        await new Promise<void>((resolve, reject) =>
          sink.end(() => file.end((error?: Error | null) => (error ? reject(error) : resolve()))),
        );
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
      out.note(`${received} bytes from ${machine}:${remotePath} to ${local}`);
      return 0;
    }
    if (action === 'put' && paths.length === 2) {
      const [local, remotePath] = paths as [string, string];
      let size: number;
      try {
        size = statSync(local).size;
      } catch {
        throw new CliError(`cannot read ${local}`, 'check the local path');
      }
      const machine = await chooseMachine(client(), name, opts, io);
      const code = await remote(
        config(),
        name,
        machine,
        'exec cat > "$1"',
        remotePath,
        createReadStream(local),
        {
          write: (chunk: Buffer) => io.stderr.write(chunk.toString('utf8')),
        },
      );
      if (code !== 0)
        throw new CliError(
          `writing ${remotePath} in the machine failed (exit ${code})`,
          'check that its directory exists and is writable',
        );
      const written = await remoteSize(config(), name, machine, remotePath);
      if (written !== size)
        throw new CliError(`${remotePath}: ${written} bytes written of ${size}`, 'try again');
      out.note(`${size} bytes from ${local} to ${machine}:${remotePath}`);
      return 0;
    }
    throw new CliError(
      `unknown sftp action "${[action, ...paths].join(' ')}"`,
      'use: get REMOTE [LOCAL] or put LOCAL REMOTE',
    );
  },
});

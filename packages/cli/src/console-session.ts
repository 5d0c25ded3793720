// A console in a machine over hangard's console endpoint (docs/api.md, Console): the frames it speaks,
// how a machine is chosen, and the relay between local streams and the remote command.

import type { Duplex } from 'node:stream';
import type { MachinesClient } from '@hangar/sdk';
import type { ResolvedConfig } from './context.js';
import { CliError } from './errors.js';
import { appMachines } from './groups.js';
import type { CliIO } from './io.js';
import { openUpgrade } from './upgrade.js';

/** Frame types: a type byte, a 4-byte big-endian length, the payload. */
const DATA = 0;
const EOF = 1;
const EXIT = 2;
const RESIZE = 3;

/** The frame that tells the machine's terminal its new size. */
export function resizeFrame(rows: number, cols: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt16BE(Math.min(Math.max(rows, 1), 1000), 0);
  payload.writeUInt16BE(Math.min(Math.max(cols, 1), 1000), 2);
  return frame(RESIZE, payload);
}

export function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

export interface ConsoleOptions {
  command?: string[];
  tty: { rows: number; cols: number; term: string } | null;
}

export async function openConsole(
  config: ResolvedConfig,
  app: string,
  machineId: string,
  options: ConsoleOptions,
): Promise<Duplex> {
  const query = new URLSearchParams({ tty: String(options.tty !== null) });
  if (options.command) query.set('command', JSON.stringify(options.command));
  if (options.tty) {
    query.set('rows', String(options.tty.rows));
    query.set('cols', String(options.tty.cols));
    query.set('term', options.tty.term);
  }
  const path = `v1/apps/${encodeURIComponent(app)}/machines/${encodeURIComponent(machineId)}/console?${query}`;
  return (await openUpgrade(config, path, 'hangar-console')).socket;
}

/**
 * Sends `input` (then its end) and writes the output to `output`; resolves with the remote exit code.
 * `input` null sends nothing and leaves the command's input open until it ends.
 */
export function relay(
  socket: Duplex,
  input: NodeJS.ReadableStream | null,
  output: { write(chunk: Buffer): unknown; once?(event: 'drain', listener: () => void): unknown },
): Promise<number> {
  return new Promise((resolve, reject) => {
    let pending: Buffer = Buffer.alloc(0);
    let code: number | undefined;
    const onInput = (chunk: Buffer | string) => {
      socket.write(frame(DATA, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)));
    };
    const onEnd = () => socket.write(frame(EOF));
    if (input) {
      input.on('data', onInput);
      input.once('end', onEnd);
    }
    const detach = () => {
      input?.removeListener('data', onInput);
      input?.removeListener('end', onEnd);
    };
    socket.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 5) {
        const length = pending.readUInt32BE(1);
        if (pending.length < 5 + length) break;
        const type = pending.readUInt8(0);
        const payload = pending.subarray(5, 5 + length);
        pending = pending.subarray(5 + length);
        // A slow writer (a file on a slow disk) slows the download instead of piling it up in memory.
        if (type === DATA && output.write(payload) === false && output.once) {
          socket.pause();
          output.once('drain', () => socket.resume());
        } else if (type === EXIT && payload.length === 4) code = payload.readInt32BE(0);
      }
    });
    socket.once('error', () => undefined);
    socket.once('close', () => {
      detach();
      if (code !== undefined) resolve(code);
      else reject(new CliError('the connection to hangard ended before the command did', 'try again'));
    });
  });
}

/** `--machine ID`, else with `select` a prompt among the started machines, else the first started one. */
export async function chooseMachine(
  api: MachinesClient,
  app: string,
  options: { machine?: string; select?: boolean },
  io: CliIO,
): Promise<string> {
  if (options.machine) return options.machine;
  const started = appMachines(await api.machines.list(app)).filter((m) => m.state === 'started');
  if (started.length === 0) {
    throw new CliError(`app ${app} has no started machine`, `start one: hangar machine start ID -a ${app}`);
  }
  if (!options.select || started.length === 1) return started[0]!.id;
  if (!io.interactive) throw new CliError('--select needs a terminal', 'pass --machine ID instead');
  const lines = started.map((m, i) => `  ${i + 1}) ${m.id} ${m.name} ${m.region}`).join('\n');
  const answer = await io.prompt(`${lines}\nWhich machine? [1-${started.length}] `);
  const index = Number(answer.trim()) - 1;
  const chosen = started[index];
  if (!chosen) throw new CliError(`no machine number "${answer.trim()}"`, `answer 1 to ${started.length}`);
  return chosen.id;
}

import type { Duplex } from 'node:stream';
import type { ConsoleRequest, ConsoleSession } from '../../machines/machines.js';
import { HangarError } from '../../shared/errors.js';
import { encodeFrame, FRAME, FrameReader } from '../console-frames.js';

/**
 * The console endpoint's query and its relay (docs/api.md, Console). Query: `command` (a JSON array of
 * strings; default `["/bin/sh"]`), `tty` (`true` by default; `false` for plain pipes, as file copies
 * want), `rows`, `cols` (the terminal's size, default 24×80) and `term` (TERM, default `xterm`).
 */

const bad = (message: string) => new HangarError('invalid_argument', message);

export function parseConsoleQuery(query: URLSearchParams): ConsoleRequest {
  let command: unknown = ['/bin/sh'];
  const raw = query.get('command');
  if (raw !== null) {
    try {
      command = JSON.parse(raw);
    } catch {
      throw bad('command must be a JSON array of strings, e.g. ["/bin/sh","-c","ls"]');
    }
  }
  if (
    !Array.isArray(command) ||
    command.length === 0 ||
    command.length > 256 ||
    !command.every((part) => typeof part === 'string' && !part.includes('\0'))
  ) {
    throw bad('command must be a JSON array of 1 to 256 strings, e.g. ["/bin/sh","-c","ls"]');
  }
  const tty = query.get('tty') ?? 'true';
  if (tty !== 'true' && tty !== 'false') throw bad('tty must be true or false');
  if (tty === 'false') return { command: command as string[], tty: null };
  const size = (name: string, fallback: number) => {
    const value = Number(query.get(name) ?? fallback);
    if (!Number.isInteger(value) || value < 1 || value > 1000)
      throw bad(`${name} must be a number from 1 to 1000`);
    return value;
  };
  const term = query.get('term') ?? 'xterm';
  if (!/^[A-Za-z0-9._+-]{1,64}$/.test(term)) throw bad('term must be a terminal name such as xterm-256color');
  return { command: command as string[], tty: { rows: size('rows', 24), cols: size('cols', 80), term } };
}

/**
 * Client frames to the command's input, its output to data frames, then its exit code as the last
 * frame. A client that goes away ends the command; a client that sends a bad frame is cut off.
 */
export function relayConsole(client: Duplex, head: Buffer, session: ConsoleSession, tty: boolean): void {
  const reader = new FrameReader();
  const onData = (chunk: Buffer) => {
    let frames: ReturnType<FrameReader['push']>;
    try {
      frames = reader.push(chunk);
    } catch {
      client.destroy();
      return;
    }
    for (const frame of frames) {
      if (frame.type === FRAME.data) session.input.write(frame.payload);
      // A terminal has no end of input (its user types Ctrl-D): closing the host side of the pty would
      // reach the command as a stray byte, so with a terminal the end of the client's input is ignored.
      else if (frame.type === FRAME.eof && !tty) session.input.end();
      else if (frame.type === FRAME.resize && tty && frame.payload.length === 4) {
        const rows = frame.payload.readUInt16BE(0);
        const cols = frame.payload.readUInt16BE(2);
        if (rows >= 1 && rows <= 1000 && cols >= 1 && cols <= 1000) void session.resize(rows, cols);
      }
    }
  };
  client.on('data', onData);
  if (head.length > 0) onData(head);
  let ended = false;
  client.once('close', () => {
    if (!ended) session.kill();
  });
  session.output.on('data', (chunk: Buffer) => {
    if (!client.destroyed && !client.write(encodeFrame(FRAME.data, chunk))) {
      // Backpressure: a slow reader slows the command's output instead of filling hangard's memory.
      session.output.pause();
      client.once('drain', () => session.output.resume());
    }
  });
  const outputDone = new Promise<void>((resolve) => {
    session.output.once('end', resolve);
    session.output.once('close', resolve);
  });
  void Promise.all([session.exited, outputDone]).then(([code]) => {
    ended = true;
    const payload = Buffer.alloc(4);
    payload.writeInt32BE(code, 0);
    if (!client.destroyed) client.end(encodeFrame(FRAME.exit, payload));
  });
}

import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Writable } from 'node:stream';

/**
 * Everything a command touches outside itself. `run()` takes a partial one, so tests can capture output,
 * fake the environment and point fetch anywhere without touching the real process.
 */
export interface CliIO {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  env: Record<string, string | undefined>;
  /** Passed to the SDK (default: global fetch). */
  fetch?: typeof fetch;
  /** Whether a person can answer questions (stdin and stderr are terminals). */
  interactive: boolean;
  /** Asks a question and returns the answer; only called when `interactive`. */
  prompt(question: string): Promise<string>;
  /** Like `prompt`, without echoing what is typed (tokens). */
  promptSecret(question: string): Promise<string>;
  /** Returns a file's text, or undefined if it cannot be read. */
  readFile(path: string): string | undefined;
  /** Writes a file readable by its owner only (0600), creating its directory (0700) if needed. */
  writePrivateFile(path: string, text: string): void;
  /** Removes a file; false if there was none. */
  removeFile(path: string): boolean;
  /** Whether stdin is a terminal (then nothing is piped in to read). */
  stdinIsTTY: boolean;
  /** Reads all of stdin as text. */
  readStdin(): Promise<string>;
}

async function promptOnTerminal(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}

async function promptSecretOnTerminal(question: string): Promise<string> {
  process.stderr.write(question);
  // Readline echoes what it reads to its output: give it one that drops everything.
  const muted = new Writable({ write: (_chunk, _encoding, done) => done() });
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  try {
    return await rl.question('');
  } finally {
    rl.close();
    process.stderr.write('\n');
  }
}

function readFileOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function writePrivateFile(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // Written beside and renamed, so a reader never sees half a file; created 0600, never wider.
  const temporary = `${path}.${process.pid}.tmp`;
  // `wx`: never write through a file (or symlink) someone left at that name; a stale one of ours goes.
  rmSync(temporary, { force: true });
  writeFileSync(temporary, text, { mode: 0o600, flag: 'wx' });
  renameSync(temporary, path);
}

function removeFile(path: string): boolean {
  try {
    rmSync(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function processIO(): CliIO {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    interactive: Boolean(process.stdin.isTTY && process.stderr.isTTY),
    prompt: promptOnTerminal,
    promptSecret: promptSecretOnTerminal,
    readFile: readFileOrUndefined,
    writePrivateFile,
    removeFile,
    stdinIsTTY: Boolean(process.stdin.isTTY),
    readStdin,
  };
}

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';

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
  /** Returns a file's text, or undefined if it cannot be read. */
  readFile(path: string): string | undefined;
}

async function promptOnTerminal(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}

function readFileOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

export function processIO(): CliIO {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    interactive: Boolean(process.stdin.isTTY && process.stderr.isTTY),
    prompt: promptOnTerminal,
    readFile: readFileOrUndefined,
  };
}

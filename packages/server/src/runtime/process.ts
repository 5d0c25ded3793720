import { execFile } from 'node:child_process';

/** A command that exited non-zero: its exit code and stderr say why. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${command} failed (exit ${exitCode ?? 'by signal'}): ${stderr || 'no output'}`);
    this.name = 'CommandError';
  }
}

/**
 * Tools run in the C locale, so the messages matched against (EPERM, "not mounted"...) are stable, and
 * with the system directories on PATH even when hangard was started with a user's PATH.
 */
const TOOL_ENV = {
  ...process.env,
  LC_ALL: 'C',
  PATH: `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
};

/** The outcome of a finished command; `code` is null when a signal ended it. */
export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Kill the command after this long; none by default (volume copies of large images take minutes). */
  timeoutMs?: number;
  input?: string;
  /** Output above this is cut (exec answers and tool output stay bounded in memory). */
  maxOutputBytes?: number;
  signal?: AbortSignal;
}

/**
 * Runs a program with an argument array (never a shell string) and resolves with its exit status and
 * output, whatever the status: callers decide what a failure means.
 */
export function runCommand(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        timeout: options.timeoutMs ?? 0,
        maxBuffer: options.maxOutputBytes ?? 16 * 1024 * 1024,
        encoding: 'utf8',
        env: TOOL_ENV,
        ...(options.signal ? { signal: options.signal } : {}),
      },
      (error, stdout, stderr) => {
        const failure = error as
          | (NodeJS.ErrnoException & { code?: number | string; killed?: boolean })
          | null;
        if (failure && typeof failure.code === 'string') {
          // Spawn failures (ENOENT: the tool is not installed) and maxBuffer overflows.
          reject(new Error(`${file} ${args[0] ?? ''}: ${failure.message}`));
          return;
        }
        if (failure?.killed) {
          reject(
            new Error(`${file} ${args.join(' ')} did not finish within ${options.timeoutMs ?? 30_000} ms`),
          );
          return;
        }
        resolve({ code: failure ? ((failure.code as number | undefined) ?? null) : 0, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Runs a program and fails unless it exits 0; the error carries its stderr. */
export async function runChecked(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<string> {
  const result = await runCommand(file, args, options);
  if (result.code !== 0) {
    const detail = (result.stderr || result.stdout).trim().split('\n').slice(-3).join(' | ');
    throw new CommandError([file, ...args.slice(0, 3)].join(' '), result.code, detail);
  }
  return result.stdout;
}

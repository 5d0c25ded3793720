import { execFile } from 'node:child_process';

/** The outcome of a finished command; `code` is null when a signal ended it. */
export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
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
        timeout: options.timeoutMs ?? 30_000,
        maxBuffer: options.maxOutputBytes ?? 16 * 1024 * 1024,
        encoding: 'utf8',
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
    throw new Error(`${file} ${args.slice(0, 3).join(' ')} failed (exit ${result.code}): ${detail}`);
  }
  return result.stdout;
}

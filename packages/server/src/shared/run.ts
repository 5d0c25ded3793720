import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { HangarError } from './errors.js';

/**
 * Hangar's one way to run a host tool (ip, nft, crun, mount, skopeo, umoci...): an argument array, never
 * a shell string; bounded output; a timeout and an abort signal that kill it; and one error type that
 * says why a run failed.
 */

/** Why a run failed: `exit` is a non-zero status, the others mean the tool never finished on its own. */
export type CommandFailure = 'exit' | 'not_installed' | 'spawn' | 'timeout' | 'aborted' | 'output_too_large';

/** A host tool that failed is a fault of the host, not of the request: code `internal` (500). */
export class CommandError extends HangarError {
  constructor(
    /** The program and its first arguments, for messages. */
    readonly command: string,
    readonly failure: CommandFailure,
    message: string,
    /** Null when it did not exit by itself (a signal, or it never started). */
    readonly exitCode: number | null,
    /** What the tool wrote to stderr, which is what explains most failures. */
    readonly stderr: string,
    options: { cause?: unknown } = {},
  ) {
    super('internal', message, options);
    this.name = 'CommandError';
  }
}

/** The outcome of a finished command; `code` is null when a signal ended it. */
export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Kill the command after this long; none by default (volume copies of large images take minutes). */
  timeoutMs?: number;
  /** Written to stdin, which is then closed; without it stdin is empty. */
  input?: string;
  /** An open file descriptor as stdin instead (`stty` sets the size of the terminal on its stdin). */
  stdinFd?: number;
  /** stdout or stderr above this is a failure (exec answers and tool output stay bounded in memory). */
  maxOutputBytes?: number;
  /** Kills the command (SIGKILL) when it aborts, so a hung registry connection never hangs a caller. */
  signal?: AbortSignal;
  /**
   * Run under this umask instead of hangard's own (077). umoci creates the directories a layer only
   * implies with the umask's mode: under 077 they would be closed to the machine's unprivileged root.
   */
  umask?: number;
}

const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;

/**
 * Tools run in the C locale, so the messages matched against (EPERM, "not mounted"...) are stable, and
 * with the system directories on PATH even when hangard was started with a user's PATH.
 */
export const TOOL_ENV = {
  ...process.env,
  LC_ALL: 'C',
  PATH: `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
};

interface Finished {
  code: number | null;
  exitSignal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

function collect(file: string, args: readonly string[], options: RunOptions): Promise<Finished> {
  const { signal, timeoutMs, maxOutputBytes = DEFAULT_MAX_OUTPUT } = options;
  const command = [file, ...args.slice(0, 3)].join(' ');
  return new Promise((resolve, reject) => {
    let stderr = '';
    const fail = (failure: CommandFailure, message: string, exitCode: number | null, cause?: unknown) =>
      reject(new CommandError(command, failure, message, exitCode, stderr, { cause }));
    if (signal?.aborted) {
      fail('aborted', `${file} was not started: the operation was aborted`, null, signal.reason);
      return;
    }
    // The umask is set by a shell that then becomes the tool: `$0` and `"$@"` carry the tool and its
    // arguments, so nothing is spliced into the script text.
    const [program, argv] =
      options.umask === undefined
        ? [file, args]
        : [
            'sh',
            ['-c', `umask ${options.umask.toString(8).padStart(3, '0')} && exec "$0" "$@"`, file, ...args],
          ];
    const child = spawn(program, argv, {
      env: TOOL_ENV,
      stdio: [options.stdinFd ?? (options.input === undefined ? 'ignore' : 'pipe'), 'pipe', 'pipe'],
    });
    // stdout and stderr are pipes (stdio above), so the streams exist.
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stderrBytes = 0;
    let why: { failure: CommandFailure; message: string; cause?: unknown } | undefined;
    const stop = (reason: NonNullable<typeof why>, killSignal: NodeJS.Signals) => {
      why ??= reason;
      child.kill(killSignal);
    };
    const overflow = (stream: string) =>
      stop(
        {
          failure: 'output_too_large',
          // "maxBuffer" is the word Node's own runner used; callers match it.
          message: `${command}: ${stream} maxBuffer length exceeded (more than ${maxOutputBytes} bytes)`,
        },
        'SIGKILL',
      );
    child.stdout!.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > maxOutputBytes) overflow('stdout');
      else stdout.push(chunk);
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      stderrBytes += Buffer.byteLength(chunk);
      if (stderrBytes > maxOutputBytes) overflow('stderr');
      else stderr += chunk;
    });
    // A tool that exits before reading its input closes the pipe; that is the tool's business, not ours.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input);
    const timer =
      timeoutMs === undefined || timeoutMs <= 0
        ? undefined
        : setTimeout(
            () =>
              stop(
                {
                  failure: 'timeout',
                  message: `${file} ${args.join(' ')} did not finish within ${timeoutMs} ms`,
                },
                'SIGTERM',
              ),
            timeoutMs,
          );
    const onAbort = () =>
      stop(
        {
          failure: 'aborted',
          message: `${file} was stopped: the operation was aborted`,
          cause: signal?.reason,
        },
        'SIGKILL',
      );
    signal?.addEventListener('abort', onAbort, { once: true });
    let spawnError: NodeJS.ErrnoException | undefined;
    child.on('error', (error: NodeJS.ErrnoException) => {
      spawnError ??= error;
    });
    // 'close' comes after 'error' and after the pipes are drained, so the output is complete here.
    child.on('close', (code, exitSignal) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (spawnError?.code === 'ENOENT') {
        fail('not_installed', `${file} is not installed (not found on PATH)`, null, spawnError);
      } else if (spawnError) {
        fail('spawn', `${file} could not run: ${spawnError.message}`, null, spawnError);
      } else if (why) {
        fail(why.failure, why.message, code, why.cause);
      } else {
        resolve({ code, exitSignal, stdout: Buffer.concat(stdout), stderr });
      }
    });
  });
}

/**
 * Runs a program and resolves with its exit status and output, whatever the status: callers decide what
 * a failure means. Rejects with a CommandError only when it could not run or finish (not installed,
 * timed out, aborted, too much output).
 */
export async function runCommand(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<CommandResult> {
  const { code, stdout, stderr } = await collect(file, args, options);
  return { code, stdout: stdout.toString('utf8'), stderr };
}

/** Runs a program and resolves with its stdout as bytes unless it fails; a non-zero exit is a CommandError. */
export async function runCheckedBytes(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<Buffer> {
  const result = await collect(file, args, options);
  if (result.code !== 0) {
    const command = [file, ...args.slice(0, 3)].join(' ');
    const how = result.exitSignal ? `killed by ${result.exitSignal}` : `exit ${result.code}`;
    const detail = failureDetail(result.stderr || result.stdout.toString('utf8')) || 'no output';
    throw new CommandError(
      command,
      'exit',
      `${command} failed (${how}): ${detail}`,
      result.code,
      result.stderr,
    );
  }
  return result.stdout;
}

/** Runs a program and resolves with its stdout unless it fails; a non-zero exit is a CommandError. */
export async function runChecked(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<string> {
  return (await runCheckedBytes(file, args, options)).toString('utf8');
}

/**
 * The part of a tool's output that explains its failure. skopeo and umoci log with logrus
 * (`time=... level=fatal msg="..."`), where the quoted msg of the last error line is the useful part;
 * other tools end with their error, so the last three lines.
 */
export function failureDetail(output: string): string {
  const lines = output
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  const logged = lines.findLast((line) => /level=(fatal|error)/.test(line));
  const msg = logged === undefined ? undefined : /msg="((?:[^"\\]|\\.)*)"/.exec(logged)?.[1];
  if (msg === undefined) return lines.slice(-3).join(' | ');
  try {
    return JSON.parse(`"${msg}"`) as string;
  } catch {
    return msg;
  }
}

/**
 * Starts a long-lived program whose stdin and stdout the caller streams (an interactive session): an
 * argument array, the tools' environment plus `env`, stderr joined to nothing (a session's program
 * reports on its stdout). The caller owns the child: it must end it.
 */
export function startSession(
  file: string,
  args: readonly string[],
  env: Record<string, string>,
): ChildProcessByStdio<Writable, Readable, null> {
  return spawn(file, args, { env: { ...TOOL_ENV, ...env }, stdio: ['pipe', 'pipe', 'ignore'] });
}

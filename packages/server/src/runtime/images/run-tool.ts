import { spawn } from 'node:child_process';

/**
 * Runs skopeo or umoci with an argument array (never a shell), collects its output, and kills it with
 * SIGKILL when the signal aborts, so a hung registry connection can never hang a caller. Failures come
 * back as ToolError carrying the stderr text that explains them.
 */
export interface ToolResult {
  stdout: Buffer;
  stderr: string;
}

export interface ToolOptions {
  signal?: AbortSignal;
  /** Stdout beyond this is a failure: only manifests and small JSON are read from tools. */
  maxStdoutBytes?: number;
  /**
   * Run under this umask instead of hangard's own (077). umoci creates the directories a layer only
   * implies with the umask's mode: under 077 they would be closed to the machine's unprivileged root.
   */
  umask?: number;
}

/** Tools print progress and a final error; the end of stderr is what explains a failure. */
const STDERR_KEPT = 64 * 1024;
const DEFAULT_MAX_STDOUT = 16 * 1024 * 1024;

export class ToolError extends Error {
  constructor(
    readonly tool: string,
    message: string,
    readonly details: {
      stderr: string;
      exitCode: number | null;
      /** The binary is not on PATH. */
      notInstalled: boolean;
      /** Killed because the caller's signal aborted. */
      aborted: boolean;
    },
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ToolError';
  }
}

export function runTool(tool: string, args: string[], options: ToolOptions = {}): Promise<ToolResult> {
  const { signal, maxStdoutBytes = DEFAULT_MAX_STDOUT } = options;
  return new Promise((resolve, reject) => {
    const fail = (message: string, details: Partial<ToolError['details']>, cause?: unknown) =>
      reject(
        new ToolError(
          tool,
          message,
          { stderr, exitCode: null, notInstalled: false, aborted: false, ...details },
          { cause },
        ),
      );
    let stderr = '';
    if (signal?.aborted) {
      fail(`${tool} was not started: the operation was aborted`, { aborted: true }, signal.reason);
      return;
    }
    // The umask is set by a shell that then becomes the tool: `$0` and `"$@"` carry the tool and its
    // arguments, so nothing is spliced into the script text.
    const [file, argv] =
      options.umask === undefined
        ? [tool, args]
        : [
            'sh',
            ['-c', `umask ${options.umask.toString(8).padStart(3, '0')} && exec "$0" "$@"`, tool, ...args],
          ];
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], signal, killSignal: 'SIGKILL' });
    const chunks: Buffer[] = [];
    let stdoutBytes = 0;
    let settled = false;
    let spawnError: NodeJS.ErrnoException | undefined;
    child.stdout.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > maxStdoutBytes) child.kill('SIGKILL');
      else chunks.push(chunk);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_KEPT);
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      spawnError ??= error;
    });
    // 'close' comes after 'error' and after the pipes are drained, so stderr is complete here.
    child.on('close', (exitCode, exitSignal) => {
      if (settled) return;
      settled = true;
      if (spawnError?.code === 'ENOENT') {
        fail(`${tool} is not installed (not found on PATH)`, { notInstalled: true }, spawnError);
      } else if (signal?.aborted) {
        fail(`${tool} was stopped: the operation was aborted`, { aborted: true, exitCode }, signal.reason);
      } else if (spawnError) {
        fail(`${tool} could not run: ${spawnError.message}`, { exitCode }, spawnError);
      } else if (stdoutBytes > maxStdoutBytes) {
        fail(`${tool} wrote more than ${maxStdoutBytes} bytes to stdout`, { exitCode });
      } else if (exitCode !== 0) {
        const how = exitSignal ? `was killed by ${exitSignal}` : `exited with status ${exitCode}`;
        fail(`${tool} ${args[0] ?? ''} ${how}: ${lastLine(stderr) || '(no error output)'}`, { exitCode });
      } else {
        resolve({ stdout: Buffer.concat(chunks), stderr });
      }
    });
  });
}

/**
 * The line of a tool's stderr that explains a failure. skopeo and umoci log with logrus
 * (`time=... level=fatal msg="..."`); the quoted msg is the useful part.
 */
export function lastLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  const line = lines.findLast((l) => /level=(fatal|error)/.test(l)) ?? lines.at(-1) ?? '';
  const msg = /msg="((?:[^"\\]|\\.)*)"/.exec(line);
  if (!msg?.[1]) return line;
  try {
    return JSON.parse(`"${msg[1]}"`) as string;
  } catch {
    return msg[1];
  }
}

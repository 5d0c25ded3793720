// Runs the host tools a deploy needs (buildah, skopeo) as child processes with argument arrays, never
// through a shell, passing each line they print to a progress callback as it comes.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CliError } from '../../errors.js';

export interface ToolOptions {
  /** Called with every line of stdout and stderr, as they come. */
  onLine?(line: string): void;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Why the tool is needed, for the hint when it is missing. */
  installHint?: string;
}

export interface ToolResult {
  stdout: string;
  /** The last lines printed, for error messages. */
  tail: string[];
}

const TAIL_LINES = 8;

export function runTool(command: string, args: string[], options: ToolOptions = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    const tail: string[] = [];
    const take = (line: string) => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      options.onLine?.(line);
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk;
    });
    createInterface({ input: child.stdout }).on('line', take);
    createInterface({ input: child.stderr }).on('line', take);
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') {
        reject(
          new CliError(
            `${command} is not installed`,
            options.installHint ?? `install it: apt-get install ${command}`,
          ),
        );
      } else {
        reject(err);
      }
    });
    child.on('close', (code, signal) => {
      if (code === 0) {
        resolve({ stdout, tail });
        return;
      }
      const last = tail.at(-1) ?? '';
      reject(
        new CliError(
          `${command} ${args[0] ?? ''} failed (${signal ?? `exit ${code}`})${last ? `: ${last}` : ''}`,
          `its output above says why; run it again with HANGAR_DEBUG=1 for every line`,
        ),
      );
    });
  });
}

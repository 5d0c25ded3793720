// Test helpers: run the CLI in-process against a fake API server and capture what it prints.
//
// The CLI imports `@hangar/sdk`, whose package entry is the *built* SDK (dist/). So that these tests run
// the SDK's current source without a build step, a module hook maps that one specifier to the SDK's
// src/index.ts (tsx, already loaded, compiles it). Import this file before loading any CLI module, and
// load CLI modules with `await import()`, since static imports are resolved before this hook exists.

import assert from 'node:assert/strict';
import { register } from 'node:module';
import type { CliIO } from '../src/io.js';

const sdkSource = new URL('../../sdk/src/index.ts', import.meta.url).href;
const hook = `
export async function resolve(specifier, context, next) {
  if (specifier === '@hangar/sdk') return next(${JSON.stringify(sdkSource)}, context);
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);

export { closedPort, type RecordedRequest, sequence, startFakeServer } from '../../sdk/test/fake-server.js';

const { run } = await import('../src/main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** Base URL of the fake server (sets HANGAR_API_URL). */
  apiUrl?: string;
  env?: Record<string, string | undefined>;
  interactive?: boolean;
  answers?: string[];
  /** The file system the CLI sees; files it writes land here too (with their mode in `modes`). */
  files?: Record<string, string>;
  modes?: Record<string, number>;
  /** Text piped into stdin; without it stdin is a terminal. */
  stdin?: string;
}

/** Runs `hangar <argv>` in-process with a clean environment and a test token. */
export async function cli(argv: string[], options: CliOptions = {}): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const answers = [...(options.answers ?? [])];
  const io: Partial<CliIO> = {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: {
      HANGAR_API_TOKEN: 'test-token',
      ...(options.apiUrl ? { HANGAR_API_URL: options.apiUrl } : {}),
      ...options.env,
    },
    interactive: options.interactive ?? false,
    prompt: async () => answers.shift() ?? '',
    promptSecret: async () => answers.shift() ?? '',
    // Never read the machine's real token file, nor write the user's config.
    readFile: (path: string) => options.files?.[path],
    writePrivateFile: (path: string, text: string) => {
      if (!options.files) throw new Error(`the test gave no files map to write ${path} into`);
      options.files[path] = text;
      if (options.modes) options.modes[path] = 0o600;
    },
    removeFile: (path: string) => {
      const had = options.files?.[path] !== undefined;
      if (options.files) delete options.files[path];
      return had;
    },
    stdinIsTTY: options.stdin === undefined,
    readStdin: async () => options.stdin ?? '',
  };
  const code = await run(argv, io);
  return { code, stdout, stderr };
}

/** Fails the test with the CLI's output when the exit code is not the expected one. */
export function expectCode(result: CliResult, code: number): void {
  assert.equal(
    result.code,
    code,
    `exit code ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
}

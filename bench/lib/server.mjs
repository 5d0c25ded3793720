// What the benches share: which hangard code to run (the build when it is fresh, else the source
// through tsx), a free loopback port, flag parsing, cleanup at exit, and their tables' columns.
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

export const SERVER = new URL('../../packages/server/', import.meta.url).pathname;

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** `mode`: auto | dist | tsx. auto takes dist when it is built and newer than every source file. */
export function serverCode(mode) {
  const built = join(SERVER, 'dist/main.js');
  const fresh = existsSync(built) && statSync(built).mtimeMs >= newestMtime(join(SERVER, 'src'));
  if (mode === 'dist' || (mode === 'auto' && fresh)) {
    if (!existsSync(built))
      throw new Error(`${built} is missing: run \`npm run build\` first, or use --daemon tsx`);
    return { kind: 'dist', nodeArgs: [], dir: join(SERVER, 'dist'), ext: 'js' };
  }
  return { kind: 'tsx', nodeArgs: ['--import', 'tsx'], dir: join(SERVER, 'src'), ext: 'ts' };
}

/** @returns {Promise<number>} */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/**
 * A positive number from a flag's text (at most `max`; a whole number when `integer`), or exit with a
 * one-line error naming the flag.
 */
export function positive(name, text, { max = Number.POSITIVE_INFINITY, integer = false } = {}) {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0 || value > max || (integer && !Number.isInteger(value))) {
    const what = integer ? 'a positive whole number' : 'a positive number';
    const bound = max === Number.POSITIVE_INFINITY ? '' : ` up to ${max}`;
    process.stderr.write(`bench: --${name} must be ${what}${bound}, got "${text}"\n`);
    process.exit(2);
  }
  return value;
}

/** The --daemon flag's value as serverCode takes it (auto | dist | tsx), or exit with a one-line error. */
export function daemonKind(text) {
  if (!['auto', 'dist', 'tsx'].includes(text)) {
    process.stderr.write(`bench: --daemon must be auto, dist or tsx, got "${text}"\n`);
    process.exit(2);
  }
  return text;
}

/**
 * The flags (node:util parseArgs options, plus -h/--help); a bad flag or --help prints `help` and exits.
 * @template {NonNullable<import('node:util').ParseArgsConfig['options']>} T
 * @param {T} options
 * @param {string} help
 * @returns {ReturnType<typeof parseArgs<{ options: T }>>['values']}
 */
export function parseFlags(options, help) {
  /** @type {Record<string, unknown>} */
  let values = {};
  try {
    ({ values } = parseArgs({
      options: { ...options, help: { type: 'boolean', short: 'h', default: false } },
    }));
  } catch (error) {
    process.stderr.write(`bench: ${error.message}\n${help}`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(help);
    process.exit(0);
  }
  return /** @type {any} */ (values);
}

/**
 * A table's lines: the header, a rule of dashes and the rows, each column as wide as its widest cell,
 * the columns in `left` aligned left and the others right, two spaces between columns.
 * @param {string[]} header
 * @param {string[][]} rows
 * @param {Set<number>} left
 */
export function tableLines(header, rows, left) {
  const widths = header.map((head, i) => Math.max(head.length, ...rows.map((row) => row[i].length)));
  const format = (cells) =>
    cells
      .map((cell, i) => (left.has(i) ? cell.padEnd(widths[i]) : cell.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [format(header), format(widths.map((w) => '-'.repeat(w))), ...rows.map(format)];
}

/**
 * Kills the bench's child processes (add them to `children`) and removes `tempDir` when the bench exits,
 * errors or is interrupted; `cleanup` does it at once.
 */
export function removeOnExit(tempDir) {
  const children = new Set();
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    rmSync(tempDir, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      process.stderr.write(`\nbench: ${signal}, cleaning up\n`);
      cleanup();
      process.exit(130);
    });
  }
  return { children, cleanup };
}

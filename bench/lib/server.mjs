// What the benches share: which hangard code to run (the build when it is fresh, else the source
// through tsx), a free loopback port, and flag parsing.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

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

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A positive number from a flag's text, or exit with a one-line error naming the flag. */
export function positive(name, text) {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) {
    process.stderr.write(`bench: --${name} must be a positive number, got "${text}"\n`);
    process.exit(2);
  }
  return value;
}

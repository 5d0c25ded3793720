#!/usr/bin/env node
// Runs every *.test.ts under packages/*/test with Node's test runner (TypeScript through tsx).
// Node 20's --test takes no globs, so the files are found here. Pass a path fragment to narrow the run:
//   node scripts/run-tests.mjs packages/server/test/api
//
// Skipped tests are listed at the end with their reasons. Run as root (where every test can run), a skip
// that scripts/expected-skips.json does not list fails the run.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const root = new URL('..', import.meta.url).pathname;
const filters = process.argv.slice(2);

function findTests(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory())
      return entry.name === 'node_modules' || entry.name === 'dist' ? [] : findTests(path);
    return entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

const files = readdirSync(join(root, 'packages'))
  .flatMap((name) => {
    try {
      return findTests(join(root, 'packages', name, 'test'));
    } catch {
      return [];
    }
  })
  .map((path) => path.slice(root.length))
  .filter((path) => filters.length === 0 || filters.some((f) => path.includes(f)))
  .sort();

if (files.length === 0) {
  console.error(`no test files matched ${filters.join(' ') || '(all)'}`);
  process.exit(1);
}
// The TAP output is passed through as it comes and read for skips (`ok N - name # SKIP reason`). A
// second, custom reporter was tried for this and kept some test files from ever finishing.
const child = spawn(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    '--test-concurrency=2',
    // Generous: a test that starts a networked hangard may first wait for another file to let go of the host.
    '--test-timeout=400000',
    '--test-reporter=tap',
    ...files,
  ],
  { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
);
const closed = new Promise((resolve) => child.on('close', (code) => resolve(code ?? 1)));
const skipped = [];
for await (const line of createInterface({ input: child.stdout })) {
  process.stdout.write(`${line}\n`);
  const skip = /^\s*ok \d+ - (.*?) # SKIP\s*(.*)$/.exec(line);
  if (skip) skipped.push({ name: skip[1], reason: skip[2] });
}
let status = await closed;

const expected = JSON.parse(readFileSync(join(root, 'scripts/expected-skips.json'), 'utf8')).skips;
const isExpected = (skip) => expected.some((e) => e.name === skip.name);
const unexpected = skipped.filter((skip) => !isExpected(skip));
const asRoot = process.getuid?.() === 0;
if (skipped.length > 0) {
  console.log(`\nskipped: ${skipped.length}`);
  for (const skip of skipped) {
    const mark = isExpected(skip) ? 'expected' : asRoot ? 'NOT EXPECTED' : 'not run as root';
    console.log(`  - ${skip.name}: ${skip.reason || '(no reason given)'} [${mark}]`);
  }
}
if (asRoot && unexpected.length > 0) {
  console.log(
    `\n${unexpected.length} skipped test(s) are not in scripts/expected-skips.json: as root every other test must run`,
  );
  if (status === 0) status = 1;
}
process.exit(status);

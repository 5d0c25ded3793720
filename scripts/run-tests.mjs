#!/usr/bin/env node
// Runs every *.test.ts under packages/*/test with Node's test runner (TypeScript through tsx).
// Node 20's --test takes no globs, so the files are found here. Pass a path fragment to narrow the run:
//   node scripts/run-tests.mjs packages/server/test/api
//
// Skipped tests are listed at the end with their reasons. Run as root (where every test can run), a skip
// that scripts/expected-skips.json does not list fails the run.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
const scratch = mkdtempSync(join(tmpdir(), 'hangar-test-run-'));
const skipsFile = join(scratch, 'skips.jsonl');
let status;
let skipped;
try {
  const result = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--test',
      '--test-concurrency=2',
      '--test-timeout=120000',
      // The reporter node would pick anyway (spec on a terminal, TAP otherwise), plus the skip list.
      `--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`,
      '--test-reporter-destination=stdout',
      `--test-reporter=${join(root, 'scripts/skip-reporter.mjs')}`,
      `--test-reporter-destination=${skipsFile}`,
      ...files,
    ],
    { cwd: root, stdio: 'inherit' },
  );
  status = result.status ?? 1;
  skipped = readSkips(skipsFile);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

const expected = JSON.parse(readFileSync(join(root, 'scripts/expected-skips.json'), 'utf8')).skips;
const isExpected = (skip) =>
  expected.some((e) => e.name === skip.name && (!e.file || skip.file.endsWith(e.file)));
const unexpected = skipped.filter((skip) => !isExpected(skip));
const asRoot = process.getuid?.() === 0;
if (skipped.length > 0) {
  console.log(`\nskipped: ${skipped.length}`);
  for (const skip of skipped) {
    const mark = isExpected(skip) ? 'expected' : asRoot ? 'NOT EXPECTED' : 'not run as root';
    console.log(
      `  - ${skip.file.slice(root.length)}: ${skip.name}: ${skip.reason || '(no reason given)'} [${mark}]`,
    );
  }
}
if (asRoot && unexpected.length > 0) {
  console.log(
    `\n${unexpected.length} skipped test(s) are not in scripts/expected-skips.json: as root every other test must run`,
  );
  if (status === 0) status = 1;
}
process.exit(status);

/** The skips the reporter wrote, one JSON object a line (none when the file is missing). */
function readSkips(path) {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
}

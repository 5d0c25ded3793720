#!/usr/bin/env node
// Runs every *.test.ts under packages/*/test with Node's test runner (TypeScript through tsx).
// Node 20's --test takes no globs, so the files are found here. Pass a path fragment to narrow the run:
//   node scripts/run-tests.mjs packages/server/test/api
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
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
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=120000', ...files],
  { cwd: root, stdio: 'inherit' },
);
process.exit(result.status ?? 1);

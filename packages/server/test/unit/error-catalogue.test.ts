import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { ERROR_HTTP_STATUS } from '../../src/shared/errors.js';

/**
 * docs/errors.md is the public catalogue of error codes: it must list exactly the codes of the table
 * in shared/errors.ts with the same HTTP statuses, and every code the server throws must be in it.
 */
const root = new URL('../../../../', import.meta.url).pathname;
const src = join(root, 'packages/server/src');

function catalogue(): Map<string, number> {
  const rows = readFileSync(join(root, 'docs/errors.md'), 'utf8').matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm);
  return new Map([...rows].map(([, code, status]) => [code!, Number(status)]));
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** The shorthands in shared/errors.ts and the code each one throws. */
const SHORTHANDS: Record<string, string> = {
  invalidArgument: 'invalid_argument',
  notFound: 'not_found',
  failedPrecondition: 'failed_precondition',
};

function thrownCodes(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const add = (code: string, where: string) => found.set(code, [...(found.get(code) ?? []), where]);
  for (const file of sourceFiles(src)) {
    const text = readFileSync(file, 'utf8');
    const where = file.slice(root.length);
    for (const [, code] of text.matchAll(/new HangarError\(\s*'([a-z_]+)'/g)) add(code!, where);
    for (const [, code] of text.matchAll(/\bcode: '([a-z_]+)'/g)) add(code!, where);
    for (const [name, code] of Object.entries(SHORTHANDS)) {
      if (new RegExp(`\\b${name}\\(`).test(text.replace(/export const \w+ = /g, ''))) add(code, where);
    }
  }
  return found;
}

test('error catalogue: docs/errors.md lists exactly the code table, with the same HTTP statuses', () => {
  const documented = catalogue();
  assert.ok(
    documented.size > 10,
    `the catalogue table was not found or is nearly empty (${documented.size} rows)`,
  );
  assert.deepEqual(
    [...documented.entries()].sort(),
    Object.entries(ERROR_HTTP_STATUS).sort(),
    'docs/errors.md and ERROR_HTTP_STATUS disagree',
  );
});

test('error catalogue: every code the server throws is documented', () => {
  const documented = catalogue();
  const thrown = thrownCodes();
  assert.ok(
    thrown.has('not_found') && thrown.has('lease_conflict'),
    'the scan finds codes (positive control)',
  );
  const missing = [...thrown.entries()].filter(([code]) => !documented.has(code));
  assert.deepEqual(
    missing.map(([code, files]) => `${code} (${[...new Set(files)].join(', ')})`),
    [],
    'codes thrown but not in docs/errors.md',
  );
});

test('error catalogue: no server code throws an uncoded Error', () => {
  const bare = sourceFiles(src).flatMap((file) =>
    readFileSync(file, 'utf8')
      .split('\n')
      .flatMap((line, index) =>
        /\bnew Error\(/.test(line) ? [`${file.slice(root.length)}:${index + 1}`] : [],
      ),
  );
  assert.deepEqual(bare, [], 'throw HangarError(code, message) instead, with a code from docs/errors.md');
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Command } from 'commander';
import { cli } from './helpers.js';

const { buildProgram } = await import('../src/main.js');
const { processIO } = await import('../src/io.js');

/** Every command path in the tree: [], ['apps'], ['apps', 'list'], ... */
function commandPaths(cmd: Command, prefix: string[] = []): Array<{ path: string[]; cmd: Command }> {
  return [
    { path: prefix, cmd },
    ...cmd.commands.flatMap((child) => commandPaths(child, [...prefix, child.name()])),
  ];
}

test('--help of every command has a one-line description and an Example: line', async () => {
  const paths = commandPaths(buildProgram(processIO()));
  assert.ok(paths.length > 30, `only ${paths.length} commands registered`);
  for (const { path, cmd } of paths) {
    const result = await cli([...path, '--help']);
    const label = `hangar ${path.join(' ')} --help`;
    assert.equal(result.code, 0, label);
    assert.ok(cmd.summary() || cmd.description(), `${label}: no description`);
    assert.ok(!cmd.summary().includes('\n'), `${label}: summary spans lines`);
    assert.match(result.stdout, /\nExample:\n {2}\$ hangar /, `${label}: no example`);
    // The example must run the command it documents.
    if (path.length > 0) {
      assert.match(
        result.stdout,
        new RegExp(`\\$ hangar ${path.join(' ')}\\b`),
        `${label}: example of another command`,
      );
    }
  }
});

test('the verbs named in the brief are all registered', () => {
  const names = new Set(commandPaths(buildProgram(processIO())).map(({ path }) => path.join(' ')));
  const expected = [
    'apps create',
    'apps list',
    'apps show',
    'apps destroy',
    'machine list',
    'machine status',
    'machine run',
    'machine start',
    'machine stop',
    'machine suspend',
    'machine restart',
    'machine destroy',
    'machine cordon',
    'machine uncordon',
    'secrets set',
    'secrets list',
    'secrets unset',
    'ips allocate-v6',
    'ips allocate-v4',
    'ips list',
    'ips release',
    'volumes create',
    'volumes list',
    'volumes extend',
    'volumes destroy',
    'tokens create',
    'tokens list',
    'tokens revoke',
    'auth login',
    'auth whoami',
    'auth token',
    'orgs list',
    'machine update',
    'machine clone',
    'machine leases',
    'secrets deploy',
    'secrets import',
    'ips private',
    'volumes snapshots',
    'volumes fork',
    'scale count',
    'scale vm',
    'scale memory',
    'scale show',
    'status',
    'logs',
    'releases',
    'doctor',
  ];
  for (const name of expected) assert.ok(names.has(name), `missing: hangar ${name}`);
});

test('--version prints the version', async () => {
  const result = await cli(['--version']);
  assert.equal(result.code, 0);
  assert.match(result.stdout, /^\d+\.\d+\.\d+\n$/);
});

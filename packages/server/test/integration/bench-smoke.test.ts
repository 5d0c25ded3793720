import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NEEDS_ROOT } from '../helpers/integration.js';

/**
 * Each bench in bench/ run once at its smallest size, so that a change in the server's code or layout
 * that breaks a bench shows up here. Only that it runs is checked: it exits 0 and prints its table. No
 * figure is judged (the host is shared and the sizes are far too small to mean anything). Each bench
 * removes what it made (temp dirs, child processes, namespaces) on exit, on an error and on SIGTERM,
 * which is what the timeout below sends.
 */

const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

interface Bench {
  name: string;
  args: string[];
  /** The header line of the table the bench prints on stdout. */
  table: RegExp;
  root?: boolean;
  /** hangard reads HANGAR_* variables after its config file: no host networking, no default-port registry. */
  env?: Record<string, string>;
}

const BENCHES: Bench[] = [
  {
    name: 'api',
    args: ['--duration', '0.5', '--max-requests', '100', '--connections', '2'],
    table: /^hangard scenario\s+req\/s\s+p50 ms/m,
    // Creates use skip_launch: no runtime, so no registry on the default port.
    env: { HANGAR_RUNTIME: 'off', HANGAR_NETWORK: 'off' },
  },
  {
    name: 'dns',
    args: [
      '--duration',
      '0.5',
      '--max-queries',
      '200',
      '--concurrency',
      '4',
      '--apps',
      '2',
      '--machines',
      '1',
    ],
    table: /^server\s+queries\/s\s+p50 ms/m,
  },
  {
    name: 'lifecycle',
    args: ['--runs', '1'],
    table: /^operation\s+median\s+p90/m,
    root: true,
    env: { HANGAR_NETWORK: 'off' },
  },
  {
    name: 'net',
    args: ['--sizes', '1', '--machines', '1', '--runs', '1'],
    table: /^networks\s+create bridges/m,
    root: true,
  },
  // The three below run hangard with its private networks and proxy inside network and mount
  // namespaces of their own (bench/lib/machine-host.mjs): nothing of the host's networking is touched.
  {
    name: 'wake',
    args: ['--runs', '1'],
    table: /^through hangard's proxy\s+median/m,
    root: true,
  },
  {
    name: 'proxy',
    args: ['--duration', '1', '--rounds', '1'],
    table: /^connections\s+path\s+req\/s/m,
    root: true,
  },
  {
    name: 'soak',
    args: ['--minutes', '0.25', '--apps', '2'],
    table: /^requests sent\s+\d+/m,
    root: true,
  },
];

function runBench(bench: Bench): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const script = fileURLToPath(new URL(`../../../../bench/${bench.name}/run.mjs`, import.meta.url));
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [script, ...bench.args],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, ...bench.env },
        timeout: 120_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        const code = error ? (error.code ?? error.signal ?? 'failed') : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

for (const bench of BENCHES) {
  test(`bench/${bench.name} runs once at its smallest size`, {
    skip: bench.root ? NEEDS_ROOT : false,
  }, async () => {
    const result = await runBench(bench);
    const output = `\nstdout:\n${result.stdout}\nstderr:\n${result.stderr.slice(-4000)}`;
    assert.equal(result.code, 0, `bench/${bench.name} exited ${result.code}${output}`);
    assert.match(result.stdout, bench.table, `bench/${bench.name} printed no table${output}`);
  });
}

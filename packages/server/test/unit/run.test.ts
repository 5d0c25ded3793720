import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  CommandError,
  failureDetail,
  runChecked,
  runCheckedBytes,
  runCommand,
} from '../../src/shared/run.js';

const failure = (kind: CommandError['failure']) => (error: unknown) =>
  error instanceof CommandError && error.failure === kind;

test('run: any exit status resolves runCommand; runChecked makes a non-zero one a CommandError', async () => {
  const result = await runCommand('sh', ['-c', 'echo out; echo err >&2; exit 3']);
  assert.deepEqual(result, { code: 3, stdout: 'out\n', stderr: 'err\n' });
  assert.equal(await runChecked('sh', ['-c', 'echo ok']), 'ok\n');
  await assert.rejects(runChecked('sh', ['-c', 'echo one >&2; echo two >&2; exit 2']), (error) => {
    assert.ok(failure('exit')(error));
    const commandError = error as CommandError;
    assert.equal(commandError.exitCode, 2);
    assert.equal(commandError.stderr, 'one\ntwo\n');
    assert.match(commandError.message, /^sh -c .* failed \(exit 2\): one \| two$/);
    return true;
  });
});

test('run: C locale, input on stdin, bytes as they were written', async () => {
  assert.equal(await runChecked('sh', ['-c', 'echo "$LC_ALL"']), 'C\n');
  assert.equal(await runChecked('cat', [], { input: 'from stdin' }), 'from stdin');
  assert.equal(await runChecked('cat', []), '', 'without input, stdin is empty');
  const bytes = await runCheckedBytes('printf', ['\\377\\000']);
  assert.deepEqual([...bytes], [0xff, 0]);
});

test('run: timeouts, output caps, aborts and missing tools are CommandErrors that say so', async () => {
  await assert.rejects(runCommand('sleep', ['5'], { timeoutMs: 100 }), (error) => {
    assert.ok(failure('timeout')(error));
    assert.match((error as Error).message, /sleep 5 did not finish within 100 ms/);
    return true;
  });
  await assert.rejects(
    runCommand('head', ['-c', '5000', '/dev/zero'], { maxOutputBytes: 1000 }),
    (error) => failure('output_too_large')(error) && /maxBuffer/.test((error as Error).message),
  );
  const controller = new AbortController();
  const running = runCommand('sleep', ['5'], { signal: controller.signal });
  setTimeout(() => controller.abort(), 50);
  await assert.rejects(running, failure('aborted'));
  await assert.rejects(runCommand('true', [], { signal: AbortSignal.abort() }), /was not started/);
  await assert.rejects(runCommand('hangar-no-such-tool', []), (error) => {
    assert.ok(failure('not_installed')(error));
    assert.match((error as Error).message, /hangar-no-such-tool is not installed/);
    return true;
  });
});

test('run: a umask of its own for the tool', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-run-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await runChecked('mkdir', [join(dir, 'group')], { umask: 0o027 });
  assert.equal(statSync(join(dir, 'group')).mode & 0o777, 0o750);
});

test('run: the explaining line of a tool failure', () => {
  const logrus = [
    'time="2024-01-01T00:00:00Z" level=info msg="copying"',
    'time="2024-01-01T00:00:01Z" level=fatal msg="reading manifest 1: manifest unknown: \\"x\\""',
  ].join('\n');
  assert.equal(failureDetail(logrus), 'reading manifest 1: manifest unknown: "x"');
  assert.equal(failureDetail('a\nb\n\nc\nd\n'), 'b | c | d');
  assert.equal(failureDetail(''), '');
});

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * The systemd unit that docs/operations.md gives: its text is taken from the page, its options are the
 * ones the page explains, its ExecStart names the built hangard, and (where systemd is installed)
 * `systemd-analyze verify` accepts it with the install paths pointed at this checkout.
 */

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const INSTALL_DIR = '/opt/hangar/';

async function documentedUnit(): Promise<string> {
  const page = await readFile(join(ROOT, 'docs/operations.md'), 'utf8');
  const section = page.slice(page.indexOf('## Running under systemd'));
  const match = /```ini\n([\s\S]*?)```/.exec(section);
  assert.ok(match?.[1], 'the section has an ini block');
  return match[1];
}

/** `Key=value` lines of one section; a key given twice keeps every value. */
function options(unit: string, section: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  let current = '';
  for (const line of unit.split('\n')) {
    const header = /^\[(\w+)\]$/.exec(line.trim());
    if (header?.[1]) current = header[1];
    else if (current === section && /^\w+=/.test(line)) {
      const at = line.indexOf('=');
      found.set(line.slice(0, at), [...(found.get(line.slice(0, at)) ?? []), line.slice(at + 1)]);
    }
  }
  return found;
}

test('the documented unit runs the built hangard with the documented options', async () => {
  const unit = await documentedUnit();
  const service = options(unit, 'Service');
  const one = (key: string) => {
    const values = service.get(key) ?? [];
    assert.equal(values.length, 1, `${key} is set once`);
    return values[0];
  };
  assert.equal(one('Restart'), 'on-failure');
  // Machines outlive hangard (docs/runtime.md): only hangard is signalled when the unit stops.
  assert.equal(one('KillMode'), 'process');
  assert.ok(Number(one('LimitNOFILE')) >= 65536);
  assert.equal(one('StateDirectory'), 'hangar');
  const unitSection = options(unit, 'Unit');
  assert.deepEqual(unitSection.get('After'), ['network-online.target']);
  assert.deepEqual(unitSection.get('Wants'), ['network-online.target']);

  const execStart = one('ExecStart')?.split(' ') ?? [];
  const script = execStart[1] ?? '';
  assert.ok(script.startsWith(INSTALL_DIR), `ExecStart runs hangard from ${INSTALL_DIR}: ${script}`);
  const built = join(ROOT, script.slice(INSTALL_DIR.length));
  assert.ok(existsSync(built), `${built} is the built hangard`);
  assert.match(await readFile(built, 'utf8'), /^#!\/usr\/bin\/env node/);
  assert.equal(
    execStart[execStart.indexOf('--data-dir') + 1],
    '/var/lib/hangar',
    'the data dir is the state dir',
  );
  assert.ok(execStart.includes('--config'));

  // Every option the unit sets is explained on the page.
  const page = await readFile(join(ROOT, 'docs/operations.md'), 'utf8');
  for (const key of ['KillMode', 'Restart', 'LimitNOFILE', 'StateDirectory', 'TimeoutStopSec']) {
    assert.ok(page.includes(`**\`${key}=`), `the page explains ${key}`);
  }
});

const SYSTEMD = existsSync('/usr/bin/systemd-analyze') ? false : 'systemd-analyze is not installed';

test('systemd-analyze verify accepts the documented unit', { skip: SYSTEMD }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-unit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const config = join(dir, 'hangard.json');
  await writeFile(config, '{}\n');
  // The paths of an install, pointed at this checkout and this Node, so that verify can check them.
  const unit = (await documentedUnit())
    .replace('/usr/bin/node ', `${process.execPath} `)
    .replace(`${INSTALL_DIR}packages/`, join(ROOT, 'packages/'))
    .replace('/etc/hangar/hangard.json', config);
  const file = join(dir, 'hangard.service');
  await writeFile(file, unit);
  const result = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile('systemd-analyze', ['verify', file], { timeout: 60_000 }, (error, _stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, stderr }),
    );
  });
  assert.equal(result.code, 0, result.stderr);
  // verify reports unknown keys and bad values as warnings: there must be none about this unit.
  assert.equal(
    result.stderr
      .split('\n')
      .filter((line) => line.includes('hangard.service'))
      .join('\n'),
    '',
  );

  // Positive control: the same check does see a mistake.
  await writeFile(file, unit.replace('KillMode=process', 'KillMode=processes'));
  const broken = await new Promise<string>((resolve) => {
    execFile('systemd-analyze', ['verify', file], { timeout: 60_000 }, (_error, _stdout, stderr) =>
      resolve(stderr),
    );
  });
  assert.match(broken, /kill mode/i);
});

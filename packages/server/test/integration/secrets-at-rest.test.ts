import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { type DaemonProcess, daemonHarness } from '../helpers/daemon-process.js';

/**
 * No secret reaches the disk in a form that can be read back without the key: every file under the data
 * directory (the database, its WAL and shared memory, the key and token files, anything else) is scanned
 * for each plaintext as bytes and in base64 and hex, while the daemon runs (WAL not yet checkpointed),
 * after a SIGKILL, and after a restart and a clean stop. The API never hands a value back either.
 */

const random = (bytes: number) => randomBytes(bytes).toString('base64url');

/** Distinctive plaintexts: short and long, ASCII and multi-byte UTF-8. */
const SECRETS: Record<string, string> = {
  SHORT_ASCII: `hx${random(9)}`,
  DATABASE_URL: `postgres://app:${random(18)}@db.internal:5432/app?sslmode=require`,
  UTF8_PASSWORD: `пароль-${random(8)}-🔐-密码-${random(6)}-ünïcødé`,
  LONG_PEM: `-----BEGIN PRIVATE KEY-----\n${random(3000).replace(/(.{64})/g, '$1\n')}\n-----END PRIVATE KEY-----\n`,
  LONG_UTF8: Array.from({ length: 200 }, (_, i) => `${i}:${random(6)}ж€𝄞`).join(' '),
};

/** The forms a leaked plaintext could take on disk. */
function encodings(plaintext: string): { form: string; bytes: Buffer }[] {
  const raw = Buffer.from(plaintext, 'utf8');
  const jsonEscaped = JSON.stringify(plaintext)
    .slice(1, -1)
    .replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const forms = [
    { form: 'utf-8', bytes: raw },
    { form: 'base64', bytes: Buffer.from(raw.toString('base64')) },
    { form: 'base64url', bytes: Buffer.from(raw.toString('base64url')) },
    { form: 'hex', bytes: Buffer.from(raw.toString('hex')) },
    { form: 'HEX', bytes: Buffer.from(raw.toString('hex').toUpperCase()) },
    { form: 'json-escaped', bytes: Buffer.from(jsonEscaped) },
  ];
  // Drop duplicates (e.g. JSON escaping of plain ASCII is the text itself).
  return forms.filter((f, i) => forms.findIndex((g) => g.bytes.equals(f.bytes)) === i);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? filesUnder(path) : entry.isFile() ? [path] : [];
  });
}

/** Every (file, secret, form) where a plaintext shows up. */
function scan(dataDir: string): { files: string[]; leaks: string[] } {
  const files = filesUnder(dataDir);
  const leaks: string[] = [];
  for (const file of files) {
    const content = readFileSync(file);
    for (const [name, plaintext] of Object.entries(SECRETS)) {
      for (const { form, bytes } of encodings(plaintext)) {
        if (content.includes(bytes)) leaks.push(`${name} (${form}) in ${file}`);
      }
    }
  }
  return { files, leaks };
}

function assertNoLeak(dataDir: string, phase: string): string[] {
  const { files, leaks } = scan(dataDir);
  assert.ok(
    files.some((f) => f.endsWith('hangar.db')),
    `${phase}: the database was scanned`,
  );
  assert.deepEqual(leaks, [], `${phase}: secret plaintexts found on disk`);
  return files;
}

function assertNoValueInApi(body: string, what: string): void {
  for (const [name, plaintext] of Object.entries(SECRETS)) {
    assert.ok(!body.includes(plaintext), `${what} returns the value of ${name}`);
    assert.ok(
      !body.includes(JSON.stringify(plaintext).slice(1, -1)),
      `${what} returns the (escaped) value of ${name}`,
    );
  }
}

async function assertListWithoutValues(
  daemon: DaemonProcess,
  app: string,
  digests: Map<string, string>,
): Promise<void> {
  const list = await daemon.call('GET', `/v1/apps/${app}/secrets`);
  assert.equal(list.status, 200);
  assertNoValueInApi(JSON.stringify(list.body), 'GET secrets');
  assert.equal(list.body.secrets.length, Object.keys(SECRETS).length);
  for (const secret of list.body.secrets as Record<string, unknown>[]) {
    assert.ok(!('value' in secret), `GET secrets includes a value for ${secret.name}`);
    assert.equal(secret.digest, digests.get(secret.name as string), `digest of ${secret.name}`);
  }
  for (const name of Object.keys(SECRETS)) {
    const one = await daemon.call('GET', `/v1/apps/${app}/secrets/${name}`);
    assert.equal(one.status, 200);
    assert.ok(!('value' in one.body), `GET secrets/${name} includes a value`);
    assertNoValueInApi(JSON.stringify(one.body), `GET secrets/${name}`);
  }
  for (const path of [
    `/v1/apps/${app}/secrets?show_secrets=true`,
    `/v1/apps/${app}/secrets/SHORT_ASCII?show_secrets=true`,
  ]) {
    const refused = await daemon.call('GET', path);
    assert.equal(refused.status, 403, `${path}: ${refused.status} ${JSON.stringify(refused.body)}`);
    assert.equal(refused.body.status, 'forbidden');
    assertNoValueInApi(JSON.stringify(refused.body), path);
  }
}

test('secret plaintexts never reach the disk or the API', async (t) => {
  const harness = daemonHarness(t);

  // The scanner finds what it looks for: a planted base64 copy in a stand-in data directory is reported.
  const planted = harness.makeDataDir();
  writeFileSync(
    join(planted, 'hangar.db'),
    Buffer.concat([randomBytes(64), Buffer.from(Buffer.from(SECRETS.UTF8_PASSWORD!).toString('base64'))]),
  );
  assert.deepEqual(scan(planted).leaks, [`UTF8_PASSWORD (base64) in ${join(planted, 'hangar.db')}`]);

  const dataDir = harness.makeDataDir();
  const app = 'vault-check';
  const first = await harness.start(dataDir);

  const created = await first.call('POST', '/v1/apps', { app_name: app, org_slug: 'personal' });
  assert.equal(created.status, 201, JSON.stringify(created.body));

  // Half in one batch, half one by one (both write paths).
  const names = Object.keys(SECRETS);
  const batch = Object.fromEntries(names.slice(0, 3).map((name) => [name, SECRETS[name]!]));
  const setMany = await first.call('POST', `/v1/apps/${app}/secrets`, { values: batch });
  assert.equal(setMany.status, 200, JSON.stringify(setMany.body));
  assertNoValueInApi(JSON.stringify(setMany.body), 'POST secrets');
  for (const name of names.slice(3)) {
    const setOne = await first.call('POST', `/v1/apps/${app}/secrets/${name}`, { value: SECRETS[name] });
    assert.equal(setOne.status, 201, JSON.stringify(setOne.body));
    assert.ok(!('value' in setOne.body));
    assertNoValueInApi(JSON.stringify(setOne.body), `POST secrets/${name}`);
  }
  const listed = await first.call('GET', `/v1/apps/${app}/secrets`);
  const digests = new Map<string, string>(
    listed.body.secrets.map((s: { name: string; digest: string }) => [s.name, s.digest]),
  );
  await assertListWithoutValues(first, app, digests);

  // 1. While the daemon runs: the writes sit in the WAL, not yet checkpointed into hangar.db.
  const running = assertNoLeak(dataDir, 'daemon running');
  const wal = join(dataDir, 'hangar.db-wal');
  assert.ok(
    running.includes(wal) && statSync(wal).size > 0,
    'the WAL holds the writes while the daemon runs',
  );
  t.diagnostic(`scanned while running: ${running.map((f) => f.slice(dataDir.length + 1)).join(', ')}`);

  // Private files: the key and the token are 0600; nothing in the data directory is readable by others.
  assert.equal(statSync(join(dataDir, 'secrets.key')).mode & 0o777, 0o600, 'secrets.key mode');
  assert.equal(statSync(join(dataDir, 'personal.token')).mode & 0o777, 0o600, 'personal.token mode');
  for (const file of running) {
    assert.equal(statSync(file).mode & 0o077, 0, `${file} is readable or writable by group/others`);
  }

  // 2. After SIGKILL: whatever the process left behind.
  await first.kill();
  assertNoLeak(dataDir, 'after SIGKILL');

  // 3. After a restart (WAL recovery) and a clean stop (checkpoint into hangar.db).
  const second = await harness.start(dataDir);
  await assertListWithoutValues(second, app, digests);
  assertNoLeak(dataDir, 'restarted');
  await second.stop();
  const stopped = assertNoLeak(dataDir, 'after a clean stop');
  // The values are stored (sealed), so the scans above looked at real secret rows.
  const db = new Database(join(dataDir, 'hangar.db'), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare('SELECT doc FROM secrets').all() as { doc: string }[];
    assert.equal(rows.length, names.length, 'one stored row per secret');
    for (const row of rows)
      assert.ok((JSON.parse(row.doc) as { sealed?: string }).sealed, 'each row holds a sealed value');
  } finally {
    db.close();
  }
  t.diagnostic(`scanned after a clean stop: ${stopped.map((f) => f.slice(dataDir.length + 1)).join(', ')}`);

  // The daemon's own output never carried a value either.
  assertNoValueInApi(first.output() + second.output(), 'hangard output');
});

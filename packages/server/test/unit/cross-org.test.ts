import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import type { Principal } from '../../src/auth/tokens.js';
import { appFor, orgFor } from '../../src/machines/context.js';
import { HangarError } from '../../src/shared/errors.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';

/**
 * Token holder against other orgs: the API has one org per hangard today, so the access rules every
 * service goes through (appFor, orgFor) are attacked here with a second org written to a real store.
 */
const AT = '2026-01-01T00:00:00.000Z';

test('access: a token of one org reaches nothing of another org, whatever its kind', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-orgs-'));
  const store = new SqliteStore({ path: join(dir, 'store.db') });
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await store.write((tx) => {
    for (const [n, slug] of [
      [1, 'alpha'],
      [2, 'beta'],
    ] as const) {
      tx.orgs.insert({ id: `org${n}`, slug, name: slug, internalNumericId: n, createdAt: AT });
      tx.networks.insert({ id: n, orgId: `org${n}`, name: `${slug}-net`, createdAt: AT });
      tx.apps.insert({
        id: `app${n}`,
        name: `${slug}-app`,
        orgId: `org${n}`,
        networkId: n,
        status: 'deployed',
        internalNumericId: n,
        secretsVersion: 0,
        createdAt: AT,
        updatedAt: AT,
      });
    }
  });
  const principal = (type: Principal['type'], appId: string | null): Principal => ({
    tokenId: `t-${type}`,
    type,
    orgId: 'org2',
    appId,
    name: type,
  });
  const refusal = (fn: () => unknown) => {
    try {
      fn();
    } catch (error) {
      assert.ok(HangarError.is(error));
      return `${error.code}: ${error.message}`;
    }
    return 'allowed';
  };
  await store.read((tx) => {
    for (const p of [principal('org', null), principal('readonly', null), principal('deploy', 'app2')]) {
      // Positive control: the same token reaches its own org's app for reading.
      assert.equal(appFor(tx, p, 'beta-app', 'read').id, 'app2', `${p.type} reads its own app`);
      assert.match(
        refusal(() => appFor(tx, p, 'alpha-app', 'read')),
        /^forbidden: /,
        `${p.type} reads alpha`,
      );
      assert.match(
        refusal(() => appFor(tx, p, 'alpha-app', 'write')),
        /^forbidden: /,
        `${p.type} writes alpha`,
      );
    }
    assert.match(
      refusal(() => appFor(tx, principal('org', null), 'alpha-app', 'read')),
      /belongs to an organization this token cannot access/,
    );
    assert.equal(orgFor(tx, principal('org', null), 'beta', 'read').id, 'org2');
    assert.match(
      refusal(() => orgFor(tx, principal('org', null), 'alpha', 'read')),
      /cannot access organization "alpha"/,
    );
  });
});

import type { Principal } from '../auth/tokens.js';
import { failedPrecondition, HangarError, invalidArgument } from '../shared/errors.js';
import type { SecretRecord } from '../store/records.js';
import { appFor, isoNow, type PlatformContext } from './context.js';

const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Environment values are bounded by the kernel's argument space; 64 KiB keeps a machine bootable. */
const MAX_VALUE_BYTES = 64 * 1024;

/**
 * App secrets: sealed by the vault before they reach the store, versioned per app (every change bumps
 * the app's secrets version once), and never returned in plaintext over the API.
 */
export class SecretsService {
  constructor(private readonly ctx: PlatformContext) {}

  async list(principal: Principal, appName: string, minVersion?: number): Promise<SecretRecord[]> {
    return this.ctx.store.read((tx) => {
      const app = appFor(tx, principal, appName, 'read');
      if (minVersion !== undefined && app.secretsVersion < minVersion) {
        throw failedPrecondition(
          `secrets version ${minVersion} is not yet available: app ${app.name} is at ${app.secretsVersion}`,
        );
      }
      return tx.secrets.list({ appId: app.id });
    });
  }

  async get(principal: Principal, appName: string, name: string): Promise<SecretRecord> {
    return this.ctx.store.read((tx) => {
      const app = appFor(tx, principal, appName, 'read');
      const secret = tx.secrets.get(`${app.id}/${name}`);
      if (!secret) throw new HangarError('not_found', `secret ${name} was not found in app ${app.name}`);
      return secret;
    });
  }

  /** Sets and unsets (null) many secrets as one change with one new version. */
  async apply(
    principal: Principal,
    appName: string,
    values: Record<string, string | null>,
  ): Promise<{ secrets: SecretRecord[]; version: number }> {
    const names = Object.keys(values);
    if (names.length === 0) throw invalidArgument('values: name at least one secret to set or unset');
    for (const [name, value] of Object.entries(values)) checkSecret(name, value);
    return this.ctx.store.write((tx) => {
      const app = appFor(tx, principal, appName, 'write');
      const version = app.secretsVersion + 1;
      const now = isoNow(this.ctx);
      for (const [name, value] of Object.entries(values)) {
        const key = `${app.id}/${name}`;
        const existing = tx.secrets.get(key);
        if (value === null) {
          tx.secrets.delete(key);
          continue;
        }
        const record: SecretRecord = {
          appId: app.id,
          name,
          sealed: this.ctx.vault.seal(value, key),
          digest: this.ctx.vault.digest(value),
          version,
          createdAt: existing?.createdAt ?? now,
          updatedAt: now,
        };
        if (existing) tx.secrets.update(record);
        else tx.secrets.insert(record);
      }
      tx.apps.update({ ...app, secretsVersion: version, updatedAt: now });
      return { secrets: tx.secrets.list({ appId: app.id }), version };
    });
  }

  async unset(principal: Principal, appName: string, name: string): Promise<number> {
    await this.get(principal, appName, name);
    return (await this.apply(principal, appName, { [name]: null })).version;
  }
}

function checkSecret(name: string, value: unknown): void {
  if (!SECRET_NAME.test(name)) {
    throw invalidArgument(
      `secret name "${name}" is invalid; use letters, digits and '_', not starting with a digit`,
    );
  }
  if (name.startsWith('FLY_'))
    throw invalidArgument(`secret name "${name}": FLY_ variables are set by the platform`);
  if (value !== null && typeof value !== 'string') {
    throw invalidArgument(`values.${name}: expected a string, or null to unset`);
  }
  if (typeof value === 'string' && Buffer.byteLength(value) > MAX_VALUE_BYTES) {
    throw invalidArgument(`values.${name}: a secret value is at most ${MAX_VALUE_BYTES} bytes`);
  }
}

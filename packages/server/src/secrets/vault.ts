import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from 'node:fs';
import { HangarError } from '../shared/errors.js';

const KEY_BYTES = 32; // AES-256
const IV_BYTES = 12; // GCM's recommended nonce size
const TAG_BYTES = 16;

/**
 * Seals app secrets with AES-256-GCM under a key that lives in a file only root can read. The store only
 * ever sees sealed values and keyed digests, so a copy of the database alone reveals no secret.
 */
export class Vault {
  readonly #key: Buffer;
  readonly #digestKey: Buffer;

  private constructor(key: Buffer) {
    this.#key = key;
    // A separate key for digests, so a digest can never be used as a keystream or vice versa.
    this.#digestKey = Buffer.from(
      hkdfSync('sha256', key, Buffer.alloc(0), 'hangar secret digest', KEY_BYTES),
    );
  }

  /** Opens the key file, creating it (mode 0600, written whole then renamed into place) on first use. */
  static open(keyFile: string): Vault {
    let key: Buffer;
    try {
      key = readFileSync(keyFile);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      key = randomBytes(KEY_BYTES);
      const temporary = `${keyFile}.${process.pid}.tmp`;
      const fd = openSync(temporary, 'wx', 0o600);
      try {
        writeSync(fd, key);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temporary, keyFile);
    }
    if (key.length !== KEY_BYTES) {
      throw new HangarError(
        'internal',
        `the secrets key file ${keyFile} is damaged (${key.length} bytes, expected ${KEY_BYTES})`,
      );
    }
    if ((statSync(keyFile).mode & 0o077) !== 0) chmodSync(keyFile, 0o600);
    return new Vault(key);
  }

  /** `context` (app id and name) is bound into the tag: a sealed value moved to another secret won't open. */
  seal(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  }

  unseal(sealed: string, context: string): string {
    const raw = Buffer.from(sealed, 'base64');
    const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString(
      'utf8',
    );
  }

  /** Keyed, so that a low-entropy secret cannot be found by hashing guesses. */
  digest(plaintext: string): string {
    return createHmac('sha256', this.#digestKey).update(plaintext).digest('hex').slice(0, 16);
  }
}

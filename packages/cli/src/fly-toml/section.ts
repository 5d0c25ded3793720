// Typed reads from one table of a fly.toml document. Each read checks the value's type and range and,
// when it is wrong, throws a FlyTomlError naming the line and the full key, with what was expected.

import { FlyTomlError, type KeyPath, pathText, type TomlDocument } from './document.js';
import { parseDurationMs, parseSizeMb } from './units.js';

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function shown(value: unknown): string {
  if (value instanceof Date) return 'a date';
  if (Array.isArray(value)) return 'an array';
  if (isTable(value)) return 'a table';
  return JSON.stringify(value);
}

export class Section {
  readonly doc: TomlDocument;
  readonly path: KeyPath;
  readonly values: Record<string, unknown>;
  /** Keys read so far: what is left at the end is unknown (see `unknownKeys`). */
  readonly #read = new Set<string>();

  constructor(doc: TomlDocument, path: KeyPath, values: Record<string, unknown>) {
    this.doc = doc;
    this.path = path;
    this.values = values;
  }

  static root(doc: TomlDocument): Section {
    return new Section(doc, [], doc.root);
  }

  /** The line of `key` in this table (or of the table itself). */
  line(key?: string | number): number | undefined {
    if (key === undefined) return this.doc.line(this.path);
    return this.doc.line([...this.path, key]) ?? this.doc.line(this.path);
  }

  keyText(key?: string | number): string {
    return pathText(key === undefined ? this.path : [...this.path, key]);
  }

  error(key: string | number | undefined, message: string, hint?: string): FlyTomlError {
    return new FlyTomlError(this.doc.file, this.line(key), this.keyText(key) || undefined, message, hint);
  }

  has(key: string): boolean {
    return this.values[key] !== undefined;
  }

  #get(key: string): unknown {
    this.#read.add(key);
    return this.values[key];
  }

  /** Marks keys as known without reading them (passed through or deliberately ignored). */
  accept(...keys: string[]): void {
    for (const key of keys) this.#read.add(key);
  }

  /** Keys of this table that no read asked for: `[key, line]`. */
  unknownKeys(): Array<[string, number | undefined]> {
    return Object.keys(this.values)
      .filter((k) => !this.#read.has(k))
      .map((k) => [this.keyText(k), this.line(k)]);
  }

  string(key: string, options: { oneOf?: readonly string[]; pattern?: RegExp; hint?: string } = {}) {
    const value = this.#get(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'string')
      throw this.error(key, `must be a string, got ${shown(value)}`, options.hint);
    if (options.oneOf && !options.oneOf.includes(value)) {
      throw this.error(key, `must be one of ${options.oneOf.join(', ')}, got ${shown(value)}`, options.hint);
    }
    if (options.pattern && !options.pattern.test(value)) {
      throw this.error(key, `is not valid: ${shown(value)}`, options.hint);
    }
    return value;
  }

  /** A string, or a number or boolean written without quotes (as [env] values often are). */
  scalarText(key: string): string | undefined {
    const value = this.#get(key);
    if (value === undefined) return undefined;
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean')
      return String(value);
    throw this.error(key, `must be a string, number or boolean, got ${shown(value)}`);
  }

  int(key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const value = this.#get(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `between ${min} and ${max}`;
      throw this.error(key, `must be a whole number ${range}, got ${shown(value)}`);
    }
    return value;
  }

  number(key: string): number | undefined {
    const value = this.#get(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw this.error(key, `must be a number, got ${shown(value)}`);
    }
    return value;
  }

  bool(key: string): boolean | undefined {
    const value = this.#get(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'boolean') throw this.error(key, `must be true or false, got ${shown(value)}`);
    return value;
  }

  stringList(key: string): string[] | undefined {
    const value = this.#get(key);
    if (value === undefined) return undefined;
    if (typeof value === 'string') return [value];
    if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
      throw this.error(key, `must be a list of strings, got ${shown(value)}`);
    }
    return value as string[];
  }

  /** A duration: `"15s"`, `"500ms"`, `"1m30s"`, or a number in `bareUnitMs`. Returns milliseconds. */
  durationMs(key: string, options: { maxMs?: number; bareUnitMs?: number } = {}): number | undefined {
    const { maxMs, bareUnitMs = 1 } = options;
    const value = this.#get(key);
    if (value === undefined) return undefined;
    const ms = parseDurationMs(value, bareUnitMs);
    if (ms === undefined) {
      throw this.error(key, `must be a duration such as "15s" or "500ms", got ${shown(value)}`);
    }
    if (maxMs !== undefined && ms > maxMs) {
      throw this.error(key, `must be at most ${maxMs / 1000}s, got ${shown(value)}`);
    }
    return ms;
  }

  /** A size: `"512mb"`, `"1gb"`, or a number in `bareUnit`. Returns megabytes. */
  sizeMb(key: string, bareUnit: 'mb' | 'gb'): number | undefined {
    const value = this.#get(key);
    if (value === undefined) return undefined;
    const mb = parseSizeMb(value, bareUnit);
    if (mb === undefined || mb <= 0) {
      throw this.error(key, `must be a size such as "512mb" or "1gb", got ${shown(value)}`);
    }
    return mb;
  }

  table(key: string): Section | undefined {
    const value = this.#get(key);
    if (value === undefined) return undefined;
    if (!isTable(value))
      throw this.error(key, `must be a table ([${this.keyText(key)}]), got ${shown(value)}`);
    return new Section(this.doc, [...this.path, key], value);
  }

  /** An array of tables (`[[key]]`); a single table is taken as an array of one, as flyctl does. */
  tables(key: string): Section[] {
    const value = this.#get(key);
    if (value === undefined) return [];
    if (isTable(value)) return [new Section(this.doc, [...this.path, key], value)];
    if (!Array.isArray(value)) {
      throw this.error(key, `must be an array of tables ([[${this.keyText(key)}]]), got ${shown(value)}`);
    }
    return value.map((item, i) => {
      if (!isTable(item)) {
        throw new FlyTomlError(
          this.doc.file,
          this.doc.line([...this.path, key, i]) ?? this.line(key),
          pathText([...this.path, key, i]),
          `must be a table, got ${shown(item)}`,
        );
      }
      return new Section(this.doc, [...this.path, key, i], item);
    });
  }

  /** The table's own keys, each a child table (`[checks.<name>]`). */
  childTables(): Array<[string, Section]> {
    return Object.keys(this.values).map((name) => {
      const child = this.table(name);
      if (!child) throw this.error(name, 'must be a table');
      return [name, child];
    });
  }
}

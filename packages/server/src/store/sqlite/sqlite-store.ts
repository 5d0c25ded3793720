import Database from 'better-sqlite3';
import { HangarError } from '../../shared/errors.js';
import {
  type Change,
  type ChangeBatch,
  COLLECTIONS,
  type CollectionName,
  type Collections,
  type Filter,
  type ListOptions,
  type ReadTx,
  type Store,
  StoreConflictError,
  type WriteCollection,
  type WriteTx,
} from '../store.js';
import { MIGRATIONS } from './migrations.js';

export interface SqliteStoreOptions {
  /** Database file; ':memory:' for unit tests. */
  path: string;
  /**
   * FULL fsyncs the WAL on every commit, so an acknowledged write survives power loss, not only a crash
   * of the process. NORMAL is faster and still survives `kill -9`.
   */
  synchronous?: 'FULL' | 'NORMAL';
}

type Row = { doc: string };
type Statement = Database.Statement;

const snake = (field: string) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const TABLES: Record<CollectionName, string> = Object.fromEntries(
  Object.keys(COLLECTIONS).map((name) => [name, snake(name)]),
) as Record<CollectionName, string>;

/** The fields named by a UNIQUE/PRIMARY KEY failure ("UNIQUE constraint failed: apps.name"), else undefined. */
function constraintFields(error: unknown): string[] | undefined {
  const code = (error as { code?: string }).code;
  if (code !== 'SQLITE_CONSTRAINT_UNIQUE' && code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') return undefined;
  const match = /constraint failed: (.+)$/.exec((error as Error).message);
  return (match?.[1] ?? 'key').split(', ').map((column) =>
    column
      .split('.')
      .pop()!
      .replace(/_([a-z])/g, (_, c) => c.toUpperCase()),
  );
}

/** SQLite stores booleans and undefined differently from JSON; index values are only strings/numbers/null. */
const indexValue = (value: unknown) => (value === undefined ? null : (value as string | number | null));

export class SqliteStore implements Store {
  readonly #db: Database.Database;
  readonly #statements = new Map<string, Statement>();
  readonly #listeners = new Set<(batch: ChangeBatch) => void>();
  #pending: Change[] = [];
  #closed = false;

  constructor(options: SqliteStoreOptions) {
    this.#db = new Database(options.path);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
    this.#db.pragma('foreign_keys = ON');
    this.#db.pragma('busy_timeout = 5000');
    this.#migrate();
  }

  #migrate(): void {
    const applied = this.#db.pragma('user_version', { simple: true }) as number;
    if (applied > MIGRATIONS.length) {
      throw new HangarError(
        'internal',
        `the database schema (version ${applied}) is newer than this hangard understands (${MIGRATIONS.length}); upgrade hangard`,
      );
    }
    for (let version = applied; version < MIGRATIONS.length; version++) {
      this.#db.transaction(() => {
        this.#db.exec(MIGRATIONS[version]!);
        this.#db.pragma(`user_version = ${version + 1}`);
      })();
    }
  }

  /** Prepared statements are cached by their SQL text: the set of shapes is small and fixed. */
  #prepare(sql: string): Statement {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #collection<K extends CollectionName>(name: K, writable: boolean): WriteCollection<Collections[K]> {
    type T = Collections[K];
    const spec = COLLECTIONS[name] as unknown as import('../store.js').CollectionSpec<T>;
    const table = TABLES[name];
    const columns = spec.indexes.map(snake);
    const where = (filter: Filter<T> = {}) => {
      const fields = Object.keys(filter).filter((f) => (filter as Record<string, unknown>)[f] !== undefined);
      for (const field of fields) {
        if (!spec.indexes.includes(field as keyof T & string)) {
          throw new HangarError('internal', `${name}: cannot filter on unindexed field ${field}`);
        }
      }
      const clauses = fields.map((f) =>
        (filter as Record<string, unknown>)[f] === null ? `${snake(f)} IS NULL` : `${snake(f)} = ?`,
      );
      const params = fields
        .map((f) => (filter as Record<string, unknown>)[f])
        .filter((v) => v !== null)
        .map((v) => (typeof v === 'boolean' ? Number(v) : v));
      return { sql: clauses.length > 0 ? ` WHERE ${clauses.join(' AND ')}` : '', params };
    };
    const record = (key: string, doc: T | undefined) => {
      this.#pending.push({ collection: name, key, doc });
    };
    const assertWritable = () => {
      if (!writable) throw new HangarError('internal', 'write attempted inside a read transaction');
    };
    const write = (doc: T, verb: 'INSERT' | 'UPDATE') => {
      assertWritable();
      const key = spec.key(doc);
      const values = [JSON.stringify(doc), ...spec.indexes.map((f) => indexValue(doc[f]))];
      try {
        if (verb === 'INSERT') {
          const placeholders = ['?', '?', ...columns.map(() => '?')].join(', ');
          this.#prepare(
            `INSERT INTO ${table} (key, doc${columns.map((c) => `, ${c}`).join('')}) VALUES (${placeholders})`,
          ).run(key, ...values);
        } else {
          const sets = ['doc = ?', ...columns.map((c) => `${c} = ?`)].join(', ');
          const result = this.#prepare(`UPDATE ${table} SET ${sets} WHERE key = ?`).run(...values, key);
          if (result.changes === 0)
            throw new HangarError('internal', `${name}: no document with key ${key} to update`);
        }
      } catch (error) {
        const conflict = constraintFields(error);
        if (conflict) throw new StoreConflictError(name, conflict);
        throw error;
      }
      record(key, doc);
    };

    return {
      get: (key) => {
        const row = this.#prepare(`SELECT doc FROM ${table} WHERE key = ?`).get(key) as Row | undefined;
        return row ? (JSON.parse(row.doc) as T) : undefined;
      },
      list: (filter, options: ListOptions = {}) => {
        const { sql, params } = where(filter);
        const order = ` ORDER BY key ${options.newestFirst ? 'DESC' : 'ASC'}`;
        const limit = options.limit !== undefined ? ` LIMIT ${Math.max(0, Math.floor(options.limit))}` : '';
        const rows = this.#prepare(`SELECT doc FROM ${table}${sql}${order}${limit}`).all(...params) as Row[];
        return rows.map((row) => JSON.parse(row.doc) as T);
      },
      count: (filter) => {
        const { sql, params } = where(filter);
        return (this.#prepare(`SELECT count(*) AS n FROM ${table}${sql}`).get(...params) as { n: number }).n;
      },
      insert: (doc) => write(doc, 'INSERT'),
      update: (doc) => write(doc, 'UPDATE'),
      delete: (key) => {
        assertWritable();
        const deleted = this.#prepare(`DELETE FROM ${table} WHERE key = ?`).run(key).changes > 0;
        if (deleted) record(key, undefined);
        return deleted;
      },
      deleteWhere: (filter) => {
        assertWritable();
        const { sql, params } = where(filter);
        const keys = this.#prepare(`DELETE FROM ${table}${sql} RETURNING key`).all(...params) as {
          key: string;
        }[];
        for (const { key } of keys) record(key, undefined);
        return keys.length;
      },
    };
  }

  #tx(writable: boolean): WriteTx {
    const tx = {} as Record<string, unknown>;
    for (const name of Object.keys(COLLECTIONS) as CollectionName[]) {
      Object.defineProperty(tx, name, { get: () => this.#collection(name, writable), enumerable: true });
    }
    tx.nextSequence = (sequence: string) => {
      if (!writable) throw new HangarError('internal', 'write attempted inside a read transaction');
      const row = this.#prepare(
        'INSERT INTO sequences (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value',
      ).get(sequence) as { value: number };
      return row.value;
    };
    return tx as unknown as WriteTx;
  }

  async read<T>(fn: (tx: ReadTx) => T): Promise<T> {
    this.#assertOpen();
    return this.#db.transaction(() => fn(this.#tx(false))).deferred();
  }

  async write<T>(fn: (tx: WriteTx) => T): Promise<T> {
    this.#assertOpen();
    this.#pending = [];
    let revision = 0;
    let result: T;
    try {
      result = this.#db
        .transaction(() => {
          const value = fn(this.#tx(true));
          if (this.#pending.length > 0) {
            revision = (
              this.#prepare(
                "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
              ).get() as {
                value: number;
              }
            ).value;
          }
          return value;
        })
        .immediate();
    } catch (error) {
      this.#pending = [];
      throw error;
    }
    const changes = this.#pending;
    this.#pending = [];
    if (changes.length > 0) {
      const batch: ChangeBatch = { revision, changes };
      for (const listener of this.#listeners) {
        // The write has committed: a failing watcher must not make it look failed to the caller.
        try {
          listener(batch);
        } catch (error) {
          process.emitWarning(`store watcher failed: ${(error as Error).message}`);
        }
      }
    }
    return result;
  }

  watch(listener: (batch: ChangeBatch) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #assertOpen(): void {
    if (this.#closed) throw new HangarError('internal', 'the store is closed');
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#listeners.clear();
    this.#db.close();
  }
}

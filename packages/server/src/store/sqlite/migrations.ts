/**
 * Schema migrations, applied in order at open; `PRAGMA user_version` records how many ran. A migration is
 * frozen once released: change the schema by appending a new one, never by editing an old one.
 *
 * Every collection is a table of JSON documents (`doc`) under a primary `key`, plus one column per indexed
 * field named after it in snake_case (see COLLECTIONS in ../store.ts).
 */
const collectionTable = (table: string, columns: string[], extra: string[] = []) =>
  [
    `CREATE TABLE ${table} (key TEXT PRIMARY KEY, doc TEXT NOT NULL${columns.map((c) => `, ${c}`).join('')}) STRICT`,
    ...extra,
  ].join(';\n');

export const MIGRATIONS: readonly string[] = [
  [
    'CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT',
    "INSERT INTO meta (name, value) VALUES ('revision', 0)",
    'CREATE TABLE sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT',
    collectionTable('orgs', ['slug TEXT NOT NULL UNIQUE']),
    collectionTable(
      'networks',
      ['org_id TEXT NOT NULL', 'name TEXT NOT NULL'],
      ['CREATE UNIQUE INDEX networks_org_name ON networks (org_id, name)'],
    ),
    collectionTable(
      'apps',
      ['name TEXT NOT NULL UNIQUE', 'org_id TEXT NOT NULL', 'network_id INTEGER NOT NULL'],
      ['CREATE INDEX apps_org ON apps (org_id)', 'CREATE INDEX apps_network ON apps (network_id)'],
    ),
    collectionTable(
      'machines',
      ['app_id TEXT NOT NULL', 'state TEXT NOT NULL', 'region TEXT NOT NULL'],
      ['CREATE INDEX machines_app_state ON machines (app_id, state)'],
    ),
    collectionTable(
      'machine_versions',
      ['machine_id TEXT NOT NULL'],
      ['CREATE INDEX machine_versions_machine ON machine_versions (machine_id, key)'],
    ),
    collectionTable(
      'machine_events',
      ['machine_id TEXT NOT NULL'],
      ['CREATE INDEX machine_events_machine ON machine_events (machine_id, key)'],
    ),
    collectionTable('leases', []),
    collectionTable(
      'volumes',
      ['app_id TEXT NOT NULL', 'attached_machine_id TEXT'],
      [
        'CREATE INDEX volumes_app ON volumes (app_id)',
        'CREATE INDEX volumes_machine ON volumes (attached_machine_id)',
      ],
    ),
    collectionTable(
      'volume_snapshots',
      ['volume_id TEXT NOT NULL', 'app_id TEXT NOT NULL'],
      ['CREATE INDEX volume_snapshots_volume ON volume_snapshots (volume_id)'],
    ),
    collectionTable('secrets', ['app_id TEXT NOT NULL'], ['CREATE INDEX secrets_app ON secrets (app_id)']),
    collectionTable(
      'ip_assignments',
      ['app_id TEXT NOT NULL', 'network_id INTEGER'],
      ['CREATE INDEX ip_assignments_app ON ip_assignments (app_id)'],
    ),
    collectionTable(
      'tokens',
      ['org_id TEXT NOT NULL', 'app_id TEXT'],
      ['CREATE INDEX tokens_org ON tokens (org_id)'],
    ),
  ].join(';\n'),
  // 2: machine names are looked up per app (uniqueness on create) without reading every machine.
  [
    'ALTER TABLE machines ADD COLUMN name TEXT',
    "UPDATE machines SET name = json_extract(doc, '$.name')",
    'CREATE INDEX machines_app_name ON machines (app_id, name)',
  ].join(';\n'),
  // 3: custom hostnames and their certificates (the hostname is the key: one app holds it).
  collectionTable(
    'certificates',
    ['app_id TEXT NOT NULL'],
    ['CREATE INDEX certificates_app ON certificates (app_id)'],
  ),
];

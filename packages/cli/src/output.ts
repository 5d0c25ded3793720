// Output for people (aligned tables, key/value blocks) and for programs (`--json`: the API's own objects,
// pretty-printed, nothing else on stdout).

import type { CliIO } from './io.js';

export type Cell = string | number | boolean | null | undefined;

export interface Column<T> {
  header: string;
  value(item: T): Cell;
}

function cellText(cell: Cell): string {
  return cell === null || cell === undefined ? '' : String(cell);
}

/** Renders rows under upper-case headers, columns two spaces apart, no trailing blanks. */
export function renderTable(headers: string[], rows: Cell[][]): string {
  const text = [headers.map((h) => h.toUpperCase()), ...rows.map((row) => row.map(cellText))];
  const widths = headers.map((_, i) => Math.max(...text.map((row) => (row[i] ?? '').length)));
  return text
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Timestamps arrive as RFC 3339 strings or Unix milliseconds; show both the same way, to the second. */
export function formatTime(value: string | number | null | undefined): string {
  if (value === null || value === undefined || value === '') return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export class Output {
  readonly json: boolean;
  readonly #io: CliIO;

  constructor(io: CliIO, json: boolean) {
    this.#io = io;
    this.json = json;
  }

  line(text = ''): void {
    this.#io.stdout.write(`${text}\n`);
  }

  /** Progress and notes go to stderr, so stdout stays clean for pipes and `--json`. */
  note(text: string): void {
    this.#io.stderr.write(`${text}\n`);
  }

  printJson(value: unknown): void {
    this.line(JSON.stringify(value, null, 2));
  }

  table(headers: string[], rows: Cell[][]): void {
    this.line(renderTable(headers, rows));
  }

  /** A list: JSON array with `--json`, else a table (or `empty` when there is nothing). */
  list<T>(items: T[], columns: Column<T>[], empty: string): void {
    if (this.json) {
      this.printJson(items);
    } else if (items.length === 0) {
      this.line(empty);
    } else {
      this.table(
        columns.map((c) => c.header),
        items.map((item) => columns.map((c) => c.value(item))),
      );
    }
  }

  /** One object: JSON with `--json`, else aligned `Key  value` lines. */
  show(value: unknown, fields: Array<[string, Cell]>): void {
    if (this.json) {
      this.printJson(value);
      return;
    }
    const width = Math.max(...fields.map(([k]) => k.length));
    for (const [key, cell] of fields) this.line(`${key.padEnd(width)}  ${cellText(cell)}`.trimEnd());
  }
}

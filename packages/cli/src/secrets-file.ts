// `secrets import` reads NAME=VALUE lines. Errors name the line, never a value.

import { CliError } from './errors.js';

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Parses `NAME=VALUE` lines: blank lines and lines starting with `#` are skipped, one pair of matching
 * quotes around a value is removed, and `NAME="""` starts a value that runs over several lines until a
 * line that is just `"""` (flyctl's form for certificates and keys).
 */
export function parseSecretLines(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    const name = eq > 0 ? line.slice(0, eq).trim() : '';
    if (!NAME.test(name)) {
      throw new CliError(
        `line ${i + 1} is not NAME=VALUE`,
        'one secret per line, e.g. DATABASE_URL=postgres://...',
      );
    }
    let value = line.slice(eq + 1);
    if (value === '"""') {
      const end = lines.findIndex((l, j) => j > i && l.trim() === '"""');
      if (end < 0) throw new CliError(`the value of ${name} (line ${i + 1}) has no closing """`);
      value = lines.slice(i + 1, end).join('\n');
      i = end;
    } else if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.at(-1) === value[0]) {
      value = value.slice(1, -1);
    }
    values[name] = value;
  }
  return values;
}

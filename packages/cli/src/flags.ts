// Parsers for flag values, shared by verbs. Each throws a CliError that says which flag was wrong.

import { CliError } from './errors.js';

/** Commander option processor for repeatable flags (`-e A=1 -e B=2`). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `KEY=VALUE` pairs into a map; the value may itself contain `=`. */
export function parseKeyValues(pairs: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CliError(`invalid ${what} "${pair}"`, `write it as NAME=VALUE`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/** A whole number ≥ `min`, or undefined when the flag was not given. */
export function intFlag(value: string | undefined, flag: string, min = 1): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim()) || Number(value) < min) {
    throw new CliError(`${flag} must be a whole number of at least ${min}, got "${value}"`);
  }
  return Number(value);
}

/** `30` means seconds; `30s`/`1m` pass through as Go durations. */
export function durationFlag(value: string | undefined): string | number | undefined {
  if (value === undefined) return undefined;
  return /^\d+$/.test(value) ? Number(value) : value;
}

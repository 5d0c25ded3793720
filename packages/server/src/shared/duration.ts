import { invalidArgument } from './errors.js';

/**
 * Fly accepts durations as a Go duration string ("15s", "1m30s", "500ms") or as a JSON integer of
 * nanoseconds (what Go's time.Duration marshals to). Both become milliseconds here.
 */
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const GO_DURATION = /^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/;

export function parseGoDuration(text: string): number | undefined {
  let rest = text.trim();
  if (rest === '0') return 0;
  if (rest === '') return undefined;
  let totalMs = 0;
  while (rest.length > 0) {
    const match = GO_DURATION.exec(rest);
    if (!match) return undefined;
    totalMs += Number(match[1]) * UNIT_MS[match[2]!]!;
    rest = rest.slice(match[0].length);
  }
  return totalMs;
}

/** A duration from a config body: Go string or integer nanoseconds. `field` names it in errors. */
export function durationToMs(value: unknown, field: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value / 1e6;
  if (typeof value === 'string') {
    const ms = parseGoDuration(value);
    if (ms !== undefined) return ms;
  }
  throw invalidArgument(
    `${field}: expected a duration such as "10s" or "500ms", got ${JSON.stringify(value)}`,
  );
}

/** A duration from a query string: plain seconds ("30") or a Go duration ("30s"). */
export function queryDurationToMs(value: string, field: string): number {
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value) * 1000;
  const ms = parseGoDuration(value);
  if (ms === undefined) {
    throw invalidArgument(`${field}: expected seconds (e.g. 30) or a duration (e.g. 30s), got "${value}"`);
  }
  return ms;
}

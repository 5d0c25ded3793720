// Durations and sizes as fly.toml writes them.

const DURATION_UNITS_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * A Go duration (`"1m30s"`, `"500ms"`) in milliseconds; undefined if invalid. A bare number counts in
 * `bareUnitMs` (flyctl reads bare numbers as milliseconds, except kill_timeout, which is in seconds).
 */
export function parseDurationMs(value: unknown, bareUnitMs = 1): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value * bareUnitMs : undefined;
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * bareUnitMs;
  const parts = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/.test(text)
    ? text.match(/\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)/g)
    : null;
  if (!parts) return undefined;
  let total = 0;
  for (const part of parts) {
    const [, amount = '0', unit = 's'] = /^(\d+(?:\.\d+)?)(.*)$/.exec(part) ?? [];
    total += Number(amount) * (DURATION_UNITS_MS[unit] ?? 0);
  }
  return Math.round(total);
}

/** Milliseconds as a Go duration string, the form the Machines API takes. */
export function formatDuration(ms: number): string {
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

const SIZE_UNITS_MB: Record<string, number> = {
  b: 1 / (1024 * 1024),
  k: 1 / 1024,
  kb: 1 / 1024,
  kib: 1 / 1024,
  m: 1,
  mb: 1,
  mib: 1,
  g: 1024,
  gb: 1024,
  gib: 1024,
  t: 1024 * 1024,
  tb: 1024 * 1024,
  tib: 1024 * 1024,
};

/** `"512mb"`, `"1gb"`, `"2GB"`, or a bare number in `bareUnit`, in megabytes. */
export function parseSizeMb(value: unknown, bareUnit: 'mb' | 'gb'): number | undefined {
  if (typeof value === 'number')
    return Number.isFinite(value) ? value * (bareUnit === 'gb' ? 1024 : 1) : undefined;
  if (typeof value !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  if (!m) return undefined;
  const unit = (m[2] ?? '').toLowerCase() || bareUnit;
  const factor = SIZE_UNITS_MB[unit];
  return factor === undefined ? undefined : Number(m[1]) * factor;
}

/**
 * Splits a command line into words the way a POSIX shell would for plain words and quotes (no
 * expansion): `/app/bin/jobs --queue "default queue"` is three words. Undefined when a quote is open.
 */
export function splitCommand(command: string): string[] | undefined {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < command.length; i++) {
    const c = command[i] as string;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\' && i + 1 < command.length && '"\\$`'.includes(command[i + 1] as string))
        word += command[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < command.length) {
      word += command[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) return undefined;
  if (inWord) words.push(word);
  return words;
}

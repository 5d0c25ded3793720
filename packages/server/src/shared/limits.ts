/**
 * Bounds on what the API accepts: every duration, size and count a request can carry has one here, and
 * the 400 that refuses a value names the field and the bound. docs/operations.md ("Limits") lists them.
 */
export const LIMITS = {
  /** stop_config.timeout, the stop endpoint's timeout and the restart endpoint's: Fly's stop waits at most 5 min. */
  stopTimeoutMs: 300_000,
  /** A health check's interval, timeout and grace period. */
  checkDurationMs: 3_600_000,
  /** restart.max_retries */
  restartMaxRetries: 1000,
  /** Token lifetimes: flyctl's default of 20 years is also the longest. */
  tokenExpiryMs: 175_200 * 3_600_000,
  /** Entries of env, of metadata, of a secrets batch. */
  mapEntries: 256,
  /** An env or metadata value, a secret's value (the body limit bounds the total). */
  valueChars: 65_536,
  /** Metadata keys, names of machines, volumes, secrets, tokens and checks. */
  nameChars: 256,
  /** Other free-form strings of a config (paths, image references, commands' arguments). */
  stringChars: 4096,
  /** Items of every list in a machine config (services, ports, checks, files, headers, command lines). */
  listItems: 64,
  /** Largest page of a list endpoint, and its default (events default to 100): api/pagination.ts. */
  pageMax: 1000,
} as const;

const HUMAN_UNITS: [number, string][] = [
  [3_600_000, 'h'],
  [60_000, 'm'],
  [1000, 's'],
];

/** "5m", "1h", "175200h": how a bound reads in a 400. */
export function formatDurationMs(ms: number): string {
  for (const [unit, suffix] of HUMAN_UNITS) if (ms % unit === 0) return `${ms / unit}${suffix}`;
  return `${ms}ms`;
}

const BYTE_UNITS: [number, string][] = [
  [1024 ** 4, 'TiB'],
  [1024 ** 3, 'GiB'],
  [1024 ** 2, 'MiB'],
  [1024, 'KiB'],
];

/** "20 GiB", "1.5 MiB", "300 bytes": how a size reads in a refusal. */
export function formatBytes(bytes: number): string {
  for (const [unit, suffix] of BYTE_UNITS) {
    if (bytes >= unit) return `${Number((bytes / unit).toFixed(1))} ${suffix}`;
  }
  return `${bytes} bytes`;
}

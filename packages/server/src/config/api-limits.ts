/**
 * Bounds on the API's connections and bodies (`api` in the configuration). A slow client (slowloris)
 * is cut off by the header and request deadlines; answers themselves may take longer (a `wait`
 * long-poll, followed logs, exec), see api/server.ts.
 */
export interface ApiLimitConfig {
  /** Request bodies above this are refused with 413. */
  bodyLimitBytes: number;
  /** The header block must arrive within this. */
  headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A connection silent both ways for this long is closed (longer than a 60 s long-poll). */
  idleTimeoutMs: number;
}

export const DEFAULT_API_LIMITS: ApiLimitConfig = {
  bodyLimitBytes: 1024 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 120_000,
};

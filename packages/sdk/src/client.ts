// The transport every resource uses: builds URLs and headers, applies the client-side rate limit, sends
// with fetch, turns failures into MachinesApiError, and retries what is safe to retry.

import { errorFromResponse, MachinesApiError, SDK_ERROR_CODES } from './errors.js';
import { type RateLimitOptions, TokenBucket } from './rate-limit.js';
import { sleep } from './sleep.js';
import { SDK_VERSION } from './version.js';

/** Hangar's default listen address (hangard's API port matches Fly's private API port, 4280). */
export const DEFAULT_BASE_URL = 'http://127.0.0.1:4280';

/** Header that carries a machine lease nonce on mutating calls. */
export const LEASE_NONCE_HEADER = 'fly-machine-lease-nonce';

/** Response header with the server's request id (quoted in errors and bug reports). */
export const REQUEST_ID_HEADER = 'fly-request-id';

export interface RetryOptions {
  /** Attempts per call including the first (default 4; 1 disables retries). */
  maxAttempts?: number;
  /** First backoff delay; doubles on each retry (default 200 ms). */
  minDelayMs?: number;
  /** Cap on one backoff delay (default 5 000 ms). */
  maxDelayMs?: number;
  /**
   * Longest `Retry-After` the client will sit out (default 60 000 ms). A longer one fails the call at
   * once with the 429 error, whose `retryAfterMs` says how long to wait.
   */
  maxRetryAfterMs?: number;
}

export const DEFAULT_RETRY: Required<RetryOptions> = {
  maxAttempts: 4,
  minDelayMs: 200,
  maxDelayMs: 5_000,
  maxRetryAfterMs: 60_000,
};

export interface MachinesClientOptions {
  /** API root without `/v1`. Default: env `FLY_API_HOSTNAME` (https:// added if it has no scheme), else Hangar's local API. */
  baseUrl?: string;
  /** API token. Default: env `FLY_API_TOKEN`. Macaroons (`fm1r_`, `fm1a_`, `fm2_`) are sent as `FlyV1`, others as `Bearer`. */
  token?: string;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
  /** Client-side token bucket (default 5 req/s, burst 10); `false` disables it. */
  rateLimit?: RateLimitOptions | false;
  /** Retry policy; `false` disables retries. */
  retries?: RetryOptions | false;
  userAgent?: string;
}

/** Per-call options accepted by every method. */
export interface RequestOptions {
  signal?: AbortSignal;
}

/** Per-call options of calls that mutate a machine. */
export interface MutationOptions extends RequestOptions {
  /** Lease nonce, sent as `fly-machine-lease-nonce`; needed when the machine is leased. */
  nonce?: string;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

type QueryValue = string | number | boolean | undefined | null | ReadonlyArray<string | number>;
export type Query = Record<string, QueryValue>;

export interface RequestSpec {
  method: HttpMethod;
  /** Already-encoded path starting with `/v1` (build it with `path`). */
  path: string;
  query?: Query;
  body?: unknown;
  nonce?: string;
  signal?: AbortSignal;
}

/**
 * Tagged template for API paths: interpolated values are percent-encoded (IPv6 addresses and odd metadata
 * keys stay one segment) and must not be empty, so `/v1/apps//machines` can never be sent.
 */
export function path(strings: TemplateStringsArray, ...params: string[]): string {
  let out = strings[0] ?? '';
  params.forEach((param, i) => {
    if (typeof param !== 'string' || param === '') {
      throw new TypeError(`empty path parameter in ${strings.join('…')}`);
    }
    out += encodeURIComponent(param) + (strings[i + 1] ?? '');
  });
  return out;
}

/** `Authorization` value for a token: `FlyV1` for Fly macaroons, `Bearer` otherwise. */
export function authorizationHeader(token: string): string {
  const t = token.trim();
  // `fly tokens create` prints tokens with their scheme ("FlyV1 fm2_…"); keep one that is already there.
  if (/^(FlyV1|Bearer)\s/i.test(t)) return t;
  if (/^(fm1r_|fm1a_|fm2_)/.test(t)) return `FlyV1 ${t}`;
  return `Bearer ${t}`;
}

function envVar(name: string): string | undefined {
  const value = globalThis.process?.env?.[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

/** Resolves the base URL from the option, then `FLY_API_HOSTNAME`, then Hangar's default. */
export function resolveBaseUrl(option?: string): string {
  const raw = option?.trim() || envVar('FLY_API_HOSTNAME') || DEFAULT_BASE_URL;
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`;
  return withScheme.replace(/\/+$/, '');
}

/** Parses `Retry-After` (delta seconds or an HTTP date) into milliseconds from now. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * Which failures are retried:
 * - 429 for every method: the server refused before acting, so a repeat cannot double an action.
 * - GET: any 5xx except 501, and network errors (reads are safe to repeat).
 * - Other methods: only 502, 503, 504 (a gateway or an overloaded server that did not run the request).
 *   Never after a network error, because the request may have been applied before the connection broke.
 */
export function isRetryable(method: HttpMethod, status: number): boolean {
  if (status === 429) return true;
  if (method === 'GET') return status === 0 || (status >= 500 && status !== 501);
  return status === 502 || status === 503 || status === 504;
}

function parseBody(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function describeNetworkError(err: unknown): string {
  const cause = (err as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return err instanceof Error ? err.message : String(err);
}

/** Where Hangar names the next page of an array-shaped list (docs/api.md, Pagination). */
export const NEXT_CURSOR_HEADER = 'hangar-next-cursor';

export class Transport {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;
  readonly #limiter: TokenBucket | undefined;
  readonly #retry: Required<RetryOptions>;
  readonly #userAgent: string;

  constructor(options: MachinesClientOptions = {}) {
    this.baseUrl = resolveBaseUrl(options.baseUrl);
    this.#token = options.token?.trim() || envVar('FLY_API_TOKEN');
    // Bind: some fetch implementations throw "Illegal invocation" when called as a method of another object.
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#limiter = options.rateLimit === false ? undefined : new TokenBucket(options.rateLimit ?? {});
    this.#retry =
      options.retries === false
        ? { ...DEFAULT_RETRY, maxAttempts: 1 }
        : { ...DEFAULT_RETRY, ...(options.retries ?? {}) };
    this.#userAgent = options.userAgent ?? `hangar-sdk/${SDK_VERSION}`;
  }

  /** Whether a token was configured (by option or environment). */
  get hasToken(): boolean {
    return this.#token !== undefined;
  }

  url(path: string, query?: Query): URL {
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value === undefined || value === null) continue;
      if (Array.isArray(value)) for (const v of value) url.searchParams.append(key, String(v));
      else url.searchParams.append(key, String(value));
    }
    return url;
  }

  #headers(spec: RequestSpec): Headers {
    const headers = new Headers({ accept: 'application/json', 'user-agent': this.#userAgent });
    if (this.#token) headers.set('authorization', authorizationHeader(this.#token));
    if (spec.body !== undefined) headers.set('content-type', 'application/json');
    if (spec.nonce) headers.set(LEASE_NONCE_HEADER, spec.nonce);
    return headers;
  }

  #backoffMs(attempt: number): number {
    const ceiling = Math.min(this.#retry.maxDelayMs, this.#retry.minDelayMs * 2 ** (attempt - 1));
    // Half fixed, half random: retries from many clients spread out, yet each waits at least half the step.
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** The API could not be reached at all (no HTTP answer): status 0, code `network_error`. */
  #networkError(method: HttpMethod, path: string, err: unknown): MachinesApiError {
    return new MachinesApiError({
      method,
      path,
      status: 0,
      code: SDK_ERROR_CODES.networkError,
      detail: `could not reach ${this.baseUrl} (${describeNetworkError(err)})`,
      cause: err,
    });
  }

  /**
   * Opens a streaming call (newline-delimited JSON) and yields each parsed line as it arrives. One
   * attempt only: a stream cannot be replayed; errors come back as MachinesApiError like any call.
   */
  async *stream<T>(spec: RequestSpec): AsyncGenerator<T> {
    const { method, signal } = spec;
    await this.#limiter?.take(signal);
    let response: Response;
    try {
      response = await this.#fetch(this.url(spec.path, spec.query), {
        method,
        headers: this.#headers(spec),
        signal,
      });
    } catch (err) {
      if (signal?.aborted) return;
      throw this.#networkError(method, spec.path, err);
    }
    if (!response.ok || !response.body) {
      throw errorFromResponse({
        method,
        path: spec.path,
        status: response.status,
        body: parseBody(await response.text()),
        requestId: response.headers.get(REQUEST_ID_HEADER) ?? undefined,
        retryAfterMs: parseRetryAfter(response.headers.get('retry-after')),
      });
    }
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for await (const chunk of response.body) {
        buffered += decoder.decode(chunk as Uint8Array, { stream: true });
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        for (const line of lines) if (line.trim() !== '') yield JSON.parse(line) as T;
      }
    } catch (err) {
      if (!signal?.aborted) throw err;
    }
  }

  /** Sends one API call (with rate limiting and retries) and returns the parsed JSON body, if any. */
  async request<T>(spec: RequestSpec): Promise<T> {
    return (await this.#send<T>(spec)).body;
  }

  /**
   * Every page of an array-shaped list: asks again with `cursor` while the answer names a next page
   * (Hangar's `hangar-next-cursor` header; Fly answers in one page and sends none).
   */
  async requestAllPages<T>(spec: RequestSpec): Promise<T[]> {
    const items: T[] = [];
    let cursor: string | undefined;
    for (;;) {
      const query = { ...spec.query, ...(cursor !== undefined ? { cursor } : {}) };
      const { body, response } = await this.#send<T[]>({ ...spec, query });
      items.push(...(Array.isArray(body) ? body : []));
      cursor = response.headers.get(NEXT_CURSOR_HEADER) ?? undefined;
      if (cursor === undefined) return items;
    }
  }

  async #send<T>(spec: RequestSpec): Promise<{ body: T; response: Response }> {
    const { method, signal } = spec;
    const url = this.url(spec.path, spec.query);
    const body = spec.body === undefined ? undefined : JSON.stringify(spec.body);
    const headers = this.#headers(spec);

    for (let attempt = 1; ; attempt++) {
      await this.#limiter?.take(signal);
      let response: Response;
      let text: string;
      try {
        response = await this.#fetch(url, { method, headers, body, signal });
        text = await response.text();
      } catch (err) {
        // The caller's own abort is not a failure of the API: hand back the caller's reason untouched.
        if (signal?.aborted) throw signal.reason ?? err;
        const error = this.#networkError(method, spec.path, err);
        if (attempt >= this.#retry.maxAttempts || !isRetryable(method, 0)) throw error;
        await sleep(this.#backoffMs(attempt), signal);
        continue;
      }

      const parsed = parseBody(text);
      if (response.ok) return { body: parsed as T, response };

      const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
      const error = errorFromResponse({
        method,
        path: spec.path,
        status: response.status,
        body: parsed,
        requestId: response.headers.get(REQUEST_ID_HEADER) ?? undefined,
        retryAfterMs,
      });
      if (attempt >= this.#retry.maxAttempts || !isRetryable(method, response.status)) throw error;
      if (retryAfterMs !== undefined && retryAfterMs > this.#retry.maxRetryAfterMs) throw error;
      await sleep(retryAfterMs ?? this.#backoffMs(attempt), signal);
    }
  }
}

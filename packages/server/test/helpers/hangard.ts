import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { DEFAULT_CONFIG, type ResolvedConfig, resolveConfig } from '../../src/config/config.js';
import { type Hangard, startHangard } from '../../src/daemon.js';
import type { MachineRuntime } from '../../src/runtime/runtime.js';

export interface TestHangard extends Hangard {
  token: string;
  dataDir: string;
  config: ResolvedConfig;
  /** A Machines API call with the org token (or `token`), returning status, headers and parsed body. */
  call: (method: string, path: string, body?: unknown, options?: CallOptions) => Promise<ApiResponse>;
}

export interface CallOptions {
  token?: string | null;
  headers?: Record<string, string>;
  /** Send this text as the body verbatim (for malformed JSON). */
  rawBody?: string;
}

export interface ApiResponse {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are inspected field by field.
  body: any;
}

export interface TestHangardOptions {
  runtime?: MachineRuntime;
  config?: Record<string, unknown>;
  now?: () => number;
}

/** A test hangard's configuration in `dataDir`: silent, on a free port, `overrides` on top. */
export function testConfig(dataDir: string, overrides: Record<string, unknown> = {}): ResolvedConfig {
  return resolveConfig({
    env: {},
    overrides: {
      dataDir,
      listen: { host: '127.0.0.1', port: 0 },
      logLevel: 'silent',
      databaseSync: 'NORMAL',
      // In-process API tests use no runtime or a test fake; integration tests ask for the real one.
      runtime: 'off',
      // The host's networking has one owner at a time: only the tests of private networks ask for it.
      network: { mode: 'off', egress: false },
      rateLimits: { ...DEFAULT_CONFIG.rateLimits, enabled: false },
      // Port 80 is one per host: the proxy's own tests turn it on with a free loopback port.
      proxy: { ...DEFAULT_CONFIG.proxy, mode: 'off' },
      ...overrides,
    },
  });
}

/**
 * Starts a real hangard (SQLite store, HTTP on a free loopback port) in a fresh data directory, and
 * registers its shutdown and the directory's removal with the test, so both happen even on failure.
 */
export async function startTestHangard(
  t: TestContext,
  options: TestHangardOptions = {},
): Promise<TestHangard> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hangar-test-'));
  const config = testConfig(dataDir, options.config);
  const hangard = await startHangard(config, {
    removeMachinesOnClose: true,
    hostLock: { waitMs: 300_000 },
    ...(options.runtime ? { runtime: options.runtime } : {}),
    ...(options.now ? { now: options.now } : {}),
  }).catch((error: unknown) => {
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  });
  // One hook, in order: node:test runs after-hooks first-in, first-out, and the data dir must outlive hangard.
  t.after(async () => {
    await hangard.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const token = hangard.createdToken!;
  const call = (method: string, path: string, body?: unknown, callOptions: CallOptions = {}) =>
    callApi(hangard.url, token, method, path, body, callOptions);
  return { ...hangard, token, dataDir, config, call };
}

/** One Machines API call with `token` (unless the options override it), the body parsed when it is JSON. */
export async function callApi(
  url: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  options: CallOptions = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = { ...options.headers };
  const bearer = options.token === undefined ? token : options.token;
  if (bearer !== null) headers.authorization = `Bearer ${bearer}`;
  let payload: string | undefined = options.rawBody;
  if (payload === undefined && body !== undefined) payload = JSON.stringify(body);
  if (payload !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${url}${path}`, {
    method,
    headers,
    ...(payload !== undefined ? { body: payload } : {}),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    // Not JSON: keep the text so the assertion shows it.
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

/** Creates an app in the personal org and returns its name. */
export async function createApp(h: TestHangard, name: string, network?: string): Promise<string> {
  const response = await h.call('POST', '/v1/apps', {
    app_name: name,
    org_slug: 'personal',
    ...(network ? { network } : {}),
  });
  if (response.status !== 201)
    throw new Error(`creating app ${name}: ${response.status} ${JSON.stringify(response.body)}`);
  return name;
}

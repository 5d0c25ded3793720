// Waiting for a machine's new version: started, then every health check it declares passing. Health
// checks run in hangard (its proxy) and show in the machine's `checks`; results older than the new
// version's boot are not counted.

import type { Machine, MachineConfig, MachinesClient } from '@hangar/sdk';
import { parseDurationMs } from '../../fly-toml/index.js';

/**
 * How long a check may stay critical before the version is declared failing (past its grace period the
 * app may still be finishing its start): two of its intervals, and at least this.
 */
const MIN_CRITICAL_PATIENCE_MS = 5_000;
/** hangard's default check interval, for checks that set none. */
const DEFAULT_CHECK_INTERVAL_MS = 15_000;
/** How long to wait for a first check result before deciding that no checks are running. */
const NO_CHECKS_PATIENCE_MS = 20_000;
const POLL_MS = 500;

export class VerifyError extends Error {
  constructor(
    readonly machineId: string,
    message: string,
  ) {
    super(message);
    this.name = 'VerifyError';
  }
}

function intervalMs(value: unknown): number {
  if (typeof value === 'number') return value / 1e6; // nanoseconds on the wire
  return typeof value === 'string'
    ? (parseDurationMs(value) ?? DEFAULT_CHECK_INTERVAL_MS)
    : DEFAULT_CHECK_INTERVAL_MS;
}

/** Two intervals of the slowest check the config declares, at least MIN_CRITICAL_PATIENCE_MS. */
export function criticalPatienceMs(config: MachineConfig): number {
  const checks = [
    ...(config.services ?? []).flatMap((s) => s.checks ?? []),
    ...Object.values(config.checks ?? {}),
  ];
  return Math.max(MIN_CRITICAL_PATIENCE_MS, ...checks.map((c) => 2 * intervalMs(c.interval)));
}

/** How many health checks a config declares (service checks and top-level checks with a port). */
export function expectedChecks(config: MachineConfig): number {
  const service = (config.services ?? []).reduce((n, s) => n + (s.checks?.length ?? 0), 0);
  const top = Object.values(config.checks ?? {}).filter((c) => c.port !== undefined).length;
  return service + top;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface VerifyOptions {
  /** Deadline (epoch ms) for the whole verification. */
  deadline: number;
  /** Epoch ms when the new version was asked for: check results from before do not count. */
  since: number;
  progress(line: string): void;
  label: string;
}

/** Resolves once the machine runs `version` and its checks pass; rejects with a VerifyError otherwise. */
export async function waitHealthy(
  client: MachinesClient,
  app: string,
  machine: Pick<Machine, 'id'>,
  version: string,
  config: MachineConfig,
  options: VerifyOptions,
): Promise<void> {
  const { deadline, label, progress } = options;
  try {
    await client.waitForState(app, machine.id, 'started', {
      timeoutMs: Math.max(1000, deadline - Date.now()),
      version,
      instanceId: version,
    });
  } catch (err) {
    const current = await client.machines.get(app, machine.id).catch(() => undefined);
    const why = err instanceof Error ? err.message : String(err);
    throw new VerifyError(
      machine.id,
      `${label} did not start (state ${current?.state ?? 'unknown'}): ${why}`,
    );
  }
  const expected = expectedChecks(config);
  if (expected === 0) {
    progress(`${label} started (no health checks declared)`);
    return;
  }
  progress(`${label} started, waiting for ${expected} health check${expected === 1 ? '' : 's'}`);
  const startedAt = Date.now();
  const skew = 2000;
  let criticalSince: number | undefined;
  for (;;) {
    const m = await client.machines.get(app, machine.id);
    if (m.state !== 'started' || m.instance_id !== version) {
      throw new VerifyError(
        machine.id,
        `${label} stopped running while its checks were awaited (state ${m.state})`,
      );
    }
    const fresh = (m.checks ?? []).filter(
      (c) => !c.updated_at || Date.parse(c.updated_at) >= options.since - skew,
    );
    const critical = fresh.filter((c) => c.status === 'critical');
    const passing = fresh.filter((c) => c.status === 'passing');
    if (passing.length >= expected && critical.length === 0) {
      progress(`${label} healthy: ${passing.length}/${expected} checks passing`);
      return;
    }
    const now = Date.now();
    if (critical.length > 0) {
      criticalSince ??= now;
      if (now - criticalSince >= criticalPatienceMs(config) || now >= deadline) {
        const detail = critical.map((c) => `${c.name}: ${c.output ?? 'critical'}`).join('; ');
        throw new VerifyError(machine.id, `${label} failed its health checks (${detail})`);
      }
    } else {
      criticalSince = undefined;
    }
    if (fresh.length === 0 && now - startedAt >= NO_CHECKS_PATIENCE_MS) {
      progress(
        `${label}: hangard reports no health check results (checks run in hangard's proxy: is it on?); going on without them`,
      );
      return;
    }
    if (now >= deadline) {
      throw new VerifyError(
        machine.id,
        `${label} did not pass its health checks in time (${passing.length}/${expected} passing)`,
      );
    }
    await pause(POLL_MS);
  }
}

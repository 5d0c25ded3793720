import { durationToMs } from '../shared/duration.js';
import type { MachineCheck } from '../shared/machine-config.js';
import type { CheckStatusRecord } from '../store/records.js';
import type { RouteMachine, RouteTable } from './route-table.js';
import { canConnect, httpCheckPasses, machineDial } from './upstream.js';

/**
 * Health checks of started machines: each service's `checks` and the machine's top-level `checks`, on
 * their own intervals, straight to the machine's private address (never through the proxy, so they never
 * count as traffic and never wake anything). A failing service check, or a failing top-level check of
 * kind `readiness`, takes the machine out of rotation until it passes again. Results go to the machine
 * record only when a status changes, and the API shows them in the machine's `checks`.
 */

export interface CheckRecorder {
  recordChecks(machineId: string, checks: CheckStatusRecord[]): Promise<void>;
}

/** Defaults when a check leaves a value out. */
export const CHECK_DEFAULTS = { intervalMs: 15_000, timeoutMs: 2_000, gracePeriodMs: 0 };
const TICK_MS = 100;

interface CheckSpec {
  name: string;
  check: MachineCheck;
  port: number;
  /** Failing takes the machine out of rotation. */
  gates: boolean;
}

interface CheckState {
  spec: CheckSpec;
  status: CheckStatusRecord['status'];
  output: string;
  updatedAt: string;
  nextDue: number;
  running: boolean;
}

/** The checks a machine has, named as Fly names them (`servicecheck-<n>-<type>-<port>` for services). */
export function checksOf(machine: RouteMachine): CheckSpec[] {
  const specs: CheckSpec[] = [];
  machine.services.forEach((service, s) => {
    (service.checks ?? []).forEach((check, c) => {
      const port = check.port ?? service.internal_port;
      const type = check.type ?? 'tcp';
      specs.push({
        name: `servicecheck-${String(s).padStart(2, '0')}${c > 0 ? `-${c}` : ''}-${type}-${port}`,
        check,
        port,
        gates: true,
      });
    });
  });
  for (const [name, check] of Object.entries(machine.checks)) {
    if (check.port === undefined) continue;
    specs.push({ name, check, port: check.port, gates: check.kind === 'readiness' });
  }
  return specs;
}

const ms = (value: unknown, fallback: number, field: string) =>
  value === undefined ? fallback : durationToMs(value, field);

export class HealthChecks {
  readonly #states = new Map<string, CheckState[]>();
  /** When each machine was first seen started: the grace period counts from there. */
  readonly #startedAt = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly routes: RouteTable,
    private readonly recorder: CheckRecorder,
    private readonly onChange: () => void,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
  }

  /** Whether the machine is out of rotation (a gating check is critical). */
  failing(machineId: string): boolean {
    return (this.#states.get(machineId) ?? []).some((s) => s.spec.gates && s.status === 'critical');
  }

  #tick(): void {
    const now = this.now();
    const seen = new Set<string>();
    for (const app of this.routes.apps()) {
      for (const machine of app.machines.values()) {
        if (machine.state !== 'started' || machine.privateIp === null) continue;
        seen.add(machine.id);
        let states = this.#states.get(machine.id);
        if (!states) {
          const specs = checksOf(machine);
          if (specs.length === 0) continue;
          this.#startedAt.set(machine.id, now);
          states = specs.map((spec) => ({
            spec,
            status: 'warning',
            output: 'waiting for the first check',
            updatedAt: new Date(now).toISOString(),
            nextDue: now,
            running: false,
          }));
          this.#states.set(machine.id, states);
        }
        for (const state of states) {
          if (!state.running && now >= state.nextDue) void this.#run(machine, state);
        }
      }
    }
    // A machine that stopped or left: forget its results (the next start checks afresh).
    for (const id of [...this.#states.keys()]) {
      if (seen.has(id)) continue;
      this.#states.delete(id);
      this.#startedAt.delete(id);
      if (this.routes.machine(id)) void this.recorder.recordChecks(id, []).catch(() => undefined);
    }
  }

  async #run(machine: RouteMachine, state: CheckState): Promise<void> {
    const { check, port, name } = state.spec;
    state.running = true;
    const timeoutMs = ms(check.timeout, CHECK_DEFAULTS.timeoutMs, `checks.${name}.timeout`);
    const host = machineDial(machine);
    const passed =
      check.type === 'http'
        ? await httpCheckPasses(host, port, check, timeoutMs)
        : await canConnect(host, port, timeoutMs);
    const now = this.now();
    state.running = false;
    state.nextDue = now + ms(check.interval, CHECK_DEFAULTS.intervalMs, `checks.${name}.interval`);
    if (this.#states.get(machine.id)?.includes(state) !== true) return;
    const grace = ms(check.grace_period, CHECK_DEFAULTS.gracePeriodMs, `checks.${name}.grace_period`);
    const inGrace = now - (this.#startedAt.get(machine.id) ?? now) < grace;
    const status: CheckStatusRecord['status'] = passed ? 'passing' : inGrace ? 'warning' : 'critical';
    if (status === state.status) return;
    state.status = status;
    state.output = passed
      ? 'success'
      : `${check.type === 'http' ? `${check.method ?? 'GET'} ${check.path ?? '/'}` : 'connect'} to port ${port} failed`;
    state.updatedAt = new Date(now).toISOString();
    this.onChange();
    const states = this.#states.get(machine.id) ?? [];
    await this.recorder
      .recordChecks(
        machine.id,
        states.map((s) => ({
          name: s.spec.name,
          status: s.status,
          output: s.output,
          updatedAt: s.updatedAt,
        })),
      )
      .catch(() => undefined);
  }
}

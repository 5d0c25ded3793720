// `hangar doctor`'s findings about an app, from what the API shows: machines that failed or keep
// crashing, failing checks, leases left behind, services nobody can reach, machines running with
// secrets older than the latest change. Pure, so each finding is testable without a server.

import type { AppSecret, IPAssignment, Lease, Machine, MachineEvent } from '@hangar/sdk';
import { ipType } from './commands/ips/shared.js';
import { formatTime } from './output.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface Finding {
  name: string;
  status: CheckStatus;
  detail: string;
  /** What to do about it (warn and fail only). */
  fix?: string;
}

export interface AppFacts {
  app: string;
  machines: Machine[];
  ips: IPAssignment[];
  secrets: AppSecret[];
  /** Live leases by machine id. */
  leases: Map<string, Lease>;
  /** Seconds since the epoch, for lease expiry. */
  now: number;
}

/** Why a machine failed: the newest event that carries an error, else its newest event. */
export function failureReason(events: MachineEvent[] | undefined): string {
  for (const e of events ?? []) {
    const error = e.request?.error;
    if (typeof error === 'string' && error) return error;
  }
  const newest = events?.[0];
  return newest ? `${newest.type} ${newest.status}` : 'no events recorded';
}

/** The newest exit nobody asked for among a machine's recent events (a crash), if any. */
function lastCrash(events: MachineEvent[] | undefined): MachineEvent | undefined {
  return events?.find((e) => {
    const exit = e.request?.exit_event;
    return e.type === 'exit' && exit && !exit.requested_stop && (exit.exit_code !== 0 || exit.oom_killed);
  });
}

/** When the machine last booted (its newest `started` event), in milliseconds. */
function lastBoot(events: MachineEvent[] | undefined): number | undefined {
  return events?.find((e) => e.status === 'started')?.timestamp;
}

function hasPublicPort(m: Machine): boolean {
  return (m.config?.services ?? []).some((s) => (s.ports ?? []).length > 0);
}

function autostartOn(m: Machine): boolean {
  return (m.config?.services ?? []).some((s) => s.autostart !== false);
}

export function diagnoseApp(facts: AppFacts): Finding[] {
  const { app, machines, ips, secrets, leases, now } = facts;
  const findings: Finding[] = [];
  const live = machines.filter((m) => m.state !== 'destroyed' && m.state !== 'destroying');
  if (live.length === 0) {
    findings.push({
      name: 'machines',
      status: 'warn',
      detail: `app ${app} has no machines`,
      fix: `create one: hangar machine run IMAGE -a ${app}`,
    });
  }

  for (const m of live) {
    const name = `machine ${m.id}`;
    const problems = findings.length;
    if (m.state === 'failed' || m.state === 'launch_failed') {
      findings.push({
        name,
        status: 'fail',
        detail: `${m.state}: ${failureReason(m.events)}`,
        fix: `fix the cause, then: hangar machine start ${m.id} -a ${app} (details: hangar machine status ${m.id} -a ${app})`,
      });
    }
    for (const check of m.checks ?? []) {
      if (check.status === 'critical' || check.status === 'warning') {
        findings.push({
          name,
          status: check.status === 'critical' ? 'fail' : 'warn',
          detail: `check ${check.name} is ${check.status}${check.output ? `: ${check.output.trim().slice(0, 200)}` : ''}`,
          fix: `see what the check probes and the machine's output: hangar machine logs ${m.id} -a ${app}`,
        });
      }
    }
    const crash = lastCrash(m.events);
    if (crash && m.state !== 'failed') {
      const exit = crash.request?.exit_event;
      const how = exit?.oom_killed
        ? 'was killed for lack of memory'
        : `exited with code ${exit?.exit_code ?? '?'}`;
      const restarts = crash.request?.restart_count ? ` (restart ${crash.request.restart_count})` : '';
      findings.push({
        name,
        status: 'warn',
        detail: `${how} at ${formatTime(crash.timestamp)}${restarts}, state now ${m.state}`,
        fix: exit?.oom_killed
          ? `give it more memory: hangar machine update ${m.id} -a ${app} --vm-memory MB`
          : `read its output: hangar machine logs ${m.id} -a ${app}`,
      });
    }
    const lease = leases.get(m.id);
    if (lease && lease.expires_at > now) {
      findings.push({
        name,
        status: 'warn',
        detail: `leased by ${lease.owner ?? 'someone'}${lease.description ? ` (${lease.description})` : ''} until ${formatTime(lease.expires_at * 1000)}: changes without its nonce are refused`,
        fix: `if nothing is using it: hangar machine leases clear ${m.id} -a ${app}`,
      });
    }
    const booted = lastBoot(m.events);
    const newer = secrets.filter((s) => {
      const changed = Date.parse(s.updated_at ?? s.created_at ?? '');
      return m.state === 'started' && booted !== undefined && changed > booted;
    });
    if (newer.length) {
      findings.push({
        name,
        status: 'warn',
        detail: `runs with secrets older than the change of ${newer.map((s) => s.name).join(', ')}`,
        fix: `apply them: hangar secrets deploy -a ${app}`,
      });
    }
    if (findings.length === problems) {
      findings.push({
        name,
        status: 'ok',
        detail: `${m.state}${m.checks?.length ? ', checks passing' : ''}`,
      });
    }
  }

  const serving = live.filter(hasPublicPort);
  if (serving.length) {
    const types = new Set(ips.map(ipType));
    if (!types.has('v6') && !types.has('shared_v4') && !types.has('private_v6')) {
      findings.push({
        name: 'addresses',
        status: 'warn',
        detail: `machines have services, but the app has no address: public requests get PH02, and no Flycast address exists`,
        fix: `public: hangar ips allocate-v6 -a ${app} (or allocate-v4 --shared); private: hangar ips allocate-v6 --private -a ${app}`,
      });
    } else {
      findings.push({ name: 'addresses', status: 'ok', detail: [...types].sort().join(', ') });
    }
    const running = serving.filter((m) => m.state === 'started' || m.state === 'starting');
    if (running.length === 0 && !serving.some(autostartOn)) {
      findings.push({
        name: 'services',
        status: 'fail',
        detail: 'no machine with services runs, and autostart is off on all of them: requests get PR01',
        fix: `start one (hangar machine start ID -a ${app}) or turn autostart on (hangar machine update ID -a ${app} --autostart)`,
      });
    }
  }
  return findings;
}

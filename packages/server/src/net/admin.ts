/**
 * The host-side way into a machine's network, for the operator's tools (`hangar ssh console`, `hangar
 * proxy` in a later issue): run a program inside the machine's network namespace, where it sees the
 * machine's eth0, its 6PN address, its routes and fdaa::3 exactly as the machine does.
 *
 * A tool that only needs to reach a machine's port does not need this: the host itself reaches every
 * machine address through the bridges (host → machine traffic is not filtered, and replies are accepted
 * as established connections).
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { type CommandResult, type RunOptions, runCommand } from '../shared/run.js';
import { netnsName, netnsPath } from '../sixpn/netns.js';

/** Machine ids are 14 lowercase hex digits; checked so an id can never name another path or namespace. */
const MACHINE_ID = /^[0-9a-f]{14}$/;

function checkMachineId(machineId: string): string {
  if (!MACHINE_ID.test(machineId)) throw new RangeError(`"${machineId}" is not a machine id`);
  return machineId;
}

/** The bind-mounted namespace file (`/var/run/netns/hangar-<id>`), for setns(2) or `nsenter --net=`. */
export function netnsPathOf(machineId: string): string {
  return netnsPath(checkMachineId(machineId));
}

/** The `ip netns exec` argument list that runs `argv` in the machine's network namespace. */
export function machineNetnsArgs(machineId: string, argv: readonly string[]): string[] {
  if (argv.length === 0) throw new RangeError('no command to run');
  return ['netns', 'exec', netnsName(checkMachineId(machineId)), ...argv];
}

/** Runs a command in the machine's network namespace and collects its output (e.g. `ping`, `ss`). */
export function runInMachineNetns(
  machineId: string,
  argv: readonly string[],
  options: RunOptions = {},
): Promise<CommandResult> {
  return runCommand('ip', machineNetnsArgs(machineId, argv), options);
}

/** Starts a long-lived command there with its stdio as asked (an interactive shell, a port forwarder). */
export function spawnInMachineNetns(
  machineId: string,
  argv: readonly string[],
  options: SpawnOptions = {},
): ChildProcess {
  return spawn('ip', machineNetnsArgs(machineId, argv), options);
}

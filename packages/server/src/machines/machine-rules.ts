/**
 * The rules a machine mutation checks, as functions of records: lookups, names, leases, volume
 * attachment, and what a wait should answer. No I/O but through the transaction they are given.
 */

import { failedPrecondition, HangarError, invalidArgument } from '../shared/errors.js';
import { newMachineName } from '../shared/ids.js';
import { MAX_ID, machineAddress } from '../sixpn/address-plan.js';
import { DEFAULT_PRIVATE_V4_RANGE, isMachineIpv4, nextFreeIpv4, parseIpv4Range } from '../sixpn/ipv4.js';
import type { AppRecord, LeaseRecord, MachineRecord } from '../store/records.js';
import type { ReadTx, WriteTx } from '../store/store.js';
import type { PlatformContext } from './context.js';
import type { MachineAction, WaitableState } from './states.js';

export const NO_RUNTIME_MESSAGE =
  'no machine runtime is configured on this host: machines are recorded but cannot run yet (see docs/runtime.md)';

export const LEASE_TTL_MAX_SEC = 86_400;

export interface WaitInput {
  states: WaitableState[];
  timeoutMs: number;
  version?: string;
}

export function findMachine(tx: ReadTx, app: AppRecord, machineId: string): MachineRecord {
  const machine = tx.machines.get(machineId);
  if (!machine || machine.appId !== app.id) {
    throw new HangarError('not_found', `machine ${machineId} was not found in app ${app.name}`);
  }
  return machine;
}

/** The reference a boot uses: the digest this version already resolved to, else the config's image. */
export function pinnedImage(machine: MachineRecord): string {
  const ref = machine.imageRef;
  if (!ref?.digest) return machine.config.image;
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}@${ref.digest}`;
}

export function findLiveMachine(tx: ReadTx, app: AppRecord, machineId: string): MachineRecord {
  const machine = findMachine(tx, app, machineId);
  if (machine.state === 'destroyed') throw failedPrecondition(`machine ${machine.id} is destroyed`);
  return machine;
}

export function liveMachines(tx: ReadTx, app: AppRecord): MachineRecord[] {
  return tx.machines.list({ appId: app.id }).filter((m) => m.state !== 'destroyed');
}

/** Names are unique among an app's machines that are not destroyed (a destroyed one frees its name). */
export function nameTaken(tx: ReadTx, app: AppRecord, name: string): boolean {
  return tx.machines.list({ appId: app.id, name }).some((m) => m.state !== 'destroyed');
}

export function uniqueName(tx: ReadTx, app: AppRecord): string {
  for (;;) {
    const name = newMachineName();
    if (!nameTaken(tx, app, name)) return name;
  }
}

export function checkSecretsVersion(app: AppRecord, minSecretsVersion: number | undefined): void {
  if (minSecretsVersion !== undefined && app.secretsVersion < minSecretsVersion) {
    throw failedPrecondition(
      `min_secrets_version ${minSecretsVersion} is not yet available: app ${app.name} is at secrets version ${app.secretsVersion}`,
    );
  }
}

export function checkLeaseTtl(ttl: number | undefined, field: string): number | undefined {
  if (ttl === undefined) return undefined;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > LEASE_TTL_MAX_SEC) {
    throw invalidArgument(`${field}: expected whole seconds from 1 to ${LEASE_TTL_MAX_SEC}, got ${ttl}`);
  }
  return ttl;
}

export const nowSec = (ctx: PlatformContext) => Math.floor(ctx.now() / 1000);

export function activeLease(tx: ReadTx, machineId: string, nowMs: number): LeaseRecord | undefined {
  const lease = tx.leases.get(machineId);
  return lease && lease.expiresAt * 1000 > nowMs ? lease : undefined;
}

export function leaseHeld(lease: LeaseRecord): HangarError {
  return new HangarError(
    'lease_conflict',
    `machine ${lease.machineId} is leased by "${lease.owner}" until ${new Date(lease.expiresAt * 1000).toISOString()}; send its nonce in the fly-machine-lease-nonce header or wait for it to expire`,
  );
}

export function checkLease(
  tx: ReadTx,
  machine: MachineRecord,
  nonce: string | undefined,
  nowMs: number,
): void {
  const lease = activeLease(tx, machine.id, nowMs);
  if (lease && lease.nonce !== nonce) throw leaseHeld(lease);
}

export function stateRefusal(action: MachineAction, machine: MachineRecord): string {
  if (action === 'destroy') {
    return `machine ${machine.id} is ${machine.state}; stop it first, or destroy with force=true`;
  }
  return `unable to ${action} machine from current state: ${machine.id} is ${machine.state}`;
}

/**
 * Binds the volume named in `mounts` to the machine. A volume serves one machine at a time, and an
 * update cannot swap a machine's volume for another.
 */
export function attachVolume(
  tx: WriteTx,
  app: AppRecord,
  machine: MachineRecord,
  previous: MachineRecord | undefined,
): void {
  const wanted = machine.config.mounts?.[0]?.volume;
  const had = previous?.config.mounts?.[0]?.volume;
  if (previous && had !== undefined && wanted !== had) {
    throw invalidArgument(`mounts: a machine's volume cannot be swapped by an update (it has ${had})`);
  }
  if (wanted === undefined || wanted === had) return;
  const volume = tx.volumes.get(wanted);
  if (!volume || volume.appId !== app.id) {
    throw invalidArgument(`mounts[0].volume: volume ${wanted} was not found in app ${app.name}`);
  }
  if (volume.attachedMachineId !== null && volume.attachedMachineId !== machine.id) {
    throw failedPrecondition(`volume ${wanted} is attached to machine ${volume.attachedMachineId}`);
  }
  tx.volumes.update({ ...volume, attachedMachineId: machine.id });
}

/**
 * A new machine's place in its app's private network on this host: the next machine number (never
 * reused, so no two machines of a host ever share a veth name or an address), the address it gives, and
 * the machine's private IPv4 address.
 */
export function allocateSixPn(
  tx: WriteTx,
  app: AppRecord,
  place: Pick<PlatformContext, 'hostId' | 'privateV4Range'>,
): Pick<MachineRecord, 'machineNumber' | 'privateIp' | 'privateIpv4'> {
  const { hostId } = place;
  const machineNumber = tx.nextSequence(`machine-number:${hostId}`);
  if (machineNumber > MAX_ID) {
    throw new HangarError('internal', 'this host has used up its 2^32 machine numbers');
  }
  return {
    machineNumber,
    privateIp: machineAddress(app.networkId, hostId, machineNumber),
    privateIpv4: allocatePrivateIpv4(tx, place),
  };
}

/**
 * A free address of the host's private IPv4 range: the allocator goes round the range (a sequence
 * cursor), so an address a destroyed machine released is handed out again only after all others.
 */
export function allocatePrivateIpv4(
  tx: WriteTx,
  { hostId, privateV4Range }: Pick<PlatformContext, 'hostId' | 'privateV4Range'>,
): string {
  const range = parseIpv4Range(privateV4Range ?? DEFAULT_PRIVATE_V4_RANGE);
  const inUse = new Set(
    tx.machines
      .list()
      .flatMap((m) =>
        m.hostId === hostId && m.state !== 'destroyed' && m.privateIpv4 !== undefined ? [m.privateIpv4] : [],
      ),
  );
  const cursor = tx.nextSequence(`machine-ipv4:${hostId}`) - 1;
  const address = nextFreeIpv4(range, cursor, inUse);
  if (address === undefined) {
    throw new HangarError(
      'insufficient_capacity',
      `every address of this host's private IPv4 range ${range.cidr} is in use (network.privateV4Range)`,
    );
  }
  return address;
}

/** Whether a machine of this host lacks a usable private IPv4 address (none yet, or outside the range). */
export function needsPrivateIpv4(
  machine: MachineRecord,
  { hostId, privateV4Range }: Pick<PlatformContext, 'hostId' | 'privateV4Range'>,
): boolean {
  if (machine.state === 'destroyed' || machine.hostId !== hostId) return false;
  const range = parseIpv4Range(privateV4Range ?? DEFAULT_PRIVATE_V4_RANGE);
  return machine.privateIpv4 === undefined || !isMachineIpv4(range, machine.privateIpv4);
}

/** 'done', a terminal error, or 'pending'. */
export function waitOutcome(
  machine: MachineRecord,
  input: WaitInput,
  hasRuntime: boolean,
): 'done' | 'pending' | 'failed' | HangarError {
  const versionMatches = input.version === undefined || input.version === machine.instanceId;
  if (versionMatches && (input.states as string[]).includes(machine.state)) return 'done';
  // An older version that was replaced is no longer running: it counts as stopped.
  if (!versionMatches && input.states.some((s) => s === 'stopped' || s === 'destroyed')) return 'done';
  if (!versionMatches) {
    return failedPrecondition(
      `version ${input.version} was replaced by ${machine.instanceId}; it will not become ${input.states.join('/')}`,
    );
  }
  if (machine.state === 'destroyed') {
    return failedPrecondition(
      `machine ${machine.id} was destroyed; it will never be ${input.states.join('/')}`,
    );
  }
  // A boot that failed (an image pull, a bad command) will not come back by itself: say so at once.
  if (machine.state === 'failed') return 'failed';
  if (!hasRuntime && input.states.every((s) => s === 'started' || s === 'suspended')) {
    return new HangarError('runtime_unavailable', NO_RUNTIME_MESSAGE);
  }
  return 'pending';
}

/** Machine leases (fly-semantics: leases and nonces): store-only, no runtime and no queue needed. */
import type { Principal } from '../auth/tokens.js';
import { HangarError, invalidArgument } from '../shared/errors.js';
import { newLeaseNonce } from '../shared/ids.js';
import type { LeaseRecord, MachineRecord } from '../store/records.js';
import type { WriteTx } from '../store/store.js';
import { appFor, type PlatformContext } from './context.js';
import {
  activeLease,
  checkLeaseTtl,
  findLiveMachine,
  findMachine,
  leaseHeld,
  nowSec,
} from './machine-rules.js';

/** Fly's default lease TTL when the client names none. */
const DEFAULT_LEASE_TTL_SEC = 30;

export class Leases {
  constructor(private readonly ctx: PlatformContext) {}

  /** A new lease, or the same nonce refreshed to a new expiry. */
  async acquire(
    principal: Principal,
    appName: string,
    machineId: string,
    input: { ttlSec?: number; description?: string; nonce?: string },
  ): Promise<LeaseRecord> {
    const ttlSec = checkLeaseTtl(input.ttlSec ?? DEFAULT_LEASE_TTL_SEC, 'ttl')!;
    return this.ctx.store.write((tx) => {
      const machine = findLiveMachine(tx, appFor(tx, principal, appName, 'write'), machineId);
      const current = activeLease(tx, machine.id, this.ctx.now());
      if (current && current.nonce !== input.nonce) throw leaseHeld(current);
      if (current) {
        const refreshed = { ...current, expiresAt: nowSec(this.ctx) + ttlSec, version: machine.instanceId };
        tx.leases.update(refreshed);
        return refreshed;
      }
      return this.grant(tx, machine, principal, ttlSec, input.description ?? '');
    });
  }

  async get(principal: Principal, appName: string, machineId: string): Promise<LeaseRecord> {
    return this.ctx.store.read((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'read'), machineId);
      const lease = activeLease(tx, machine.id, this.ctx.now());
      if (!lease) throw new HangarError('not_found', `machine ${machine.id} has no active lease`);
      return lease;
    });
  }

  /** Idempotent: releasing a lease that already expired or was released succeeds (pain point §9.12). */
  async release(
    principal: Principal,
    appName: string,
    machineId: string,
    nonce: string | undefined,
  ): Promise<void> {
    if (!nonce) throw invalidArgument('the fly-machine-lease-nonce header is required to release a lease');
    await this.ctx.store.write((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'write'), machineId);
      const current = activeLease(tx, machine.id, this.ctx.now());
      if (current && current.nonce !== nonce) throw leaseHeld(current);
      tx.leases.delete(machine.id);
    });
  }

  /** Writes a fresh lease inside the caller's transaction (also used by create with `lease_ttl`). */
  grant(
    tx: WriteTx,
    machine: MachineRecord,
    principal: Principal,
    ttlSec: number,
    description: string,
  ): LeaseRecord {
    const lease: LeaseRecord = {
      machineId: machine.id,
      nonce: newLeaseNonce(),
      expiresAt: nowSec(this.ctx) + ttlSec,
      owner: principal.name,
      description,
      version: machine.instanceId,
    };
    tx.leases.delete(machine.id);
    tx.leases.insert(lease);
    return lease;
  }
}

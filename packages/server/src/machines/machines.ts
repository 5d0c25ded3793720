import type { Principal } from '../auth/tokens.js';
import type {
  ConsoleRequest,
  ConsoleSession,
  ExecRequest,
  ExecResult,
  ProcessStat,
} from '../runtime/runtime.js';

/** What the api hands to and gets from `console` (it may not import the runtime itself). */
export type { ConsoleRequest, ConsoleSession };

import { uidRangeForApp } from '../runtime/uid-range.js';
import { durationToMs } from '../shared/duration.js';
import { failedPrecondition, HangarError, invalidArgument } from '../shared/errors.js';
import { newMachineId, newUlid } from '../shared/ids.js';
import { KeyedQueue } from '../shared/keyed-queue.js';
import { LIMITS } from '../shared/limits.js';
import {
  type MachineConfig,
  type MachineConfigInput,
  normalizeMachineConfig,
} from '../shared/machine-config.js';
import type {
  AppRecord,
  CheckStatusRecord,
  JsonObject,
  LeaseRecord,
  MachineEventRecord,
  MachineRecord,
  MachineState,
  MachineVersionRecord,
} from '../store/records.js';
import type { ReadTx, WriteTx } from '../store/store.js';
import { appFor, isoNow, limitsIn, type PlatformContext } from './context.js';
import { ExitHandler } from './exits.js';
import { checkMachineImage } from './image-rules.js';
import { Leases } from './leases.js';
import { HOST_CAPACITY, MachineLifecycle } from './lifecycle.js';
import { recordEvent, setMachineState } from './machine-events.js';
import {
  allocateSixPn,
  attachVolume,
  checkLease,
  checkLeaseTtl,
  checkSecretsVersion,
  findLiveMachine,
  findMachine,
  liveMachines,
  NO_RUNTIME_MESSAGE,
  nameTaken,
  stateRefusal,
  uniqueName,
  type WaitInput,
} from './machine-rules.js';
import { admitOnHost, checkMachineQuota, type GuestClaim, guestClaim } from './quotas.js';
import { addressUnaddressedMachines, settleRecovered } from './reconcile.js';
import { Reservations } from './reservations.js';
import { canBegin, type MachineAction } from './states.js';
import { MachineWaits } from './wait.js';

export interface CreateMachineInput {
  config: MachineConfigInput;
  name?: string;
  region?: string;
  skipLaunch?: boolean;
  skipServiceRegistration?: boolean;
  leaseTtlSec?: number;
  minSecretsVersion?: number;
  skipSecrets?: boolean;
}

export interface UpdateMachineInput extends CreateMachineInput {
  currentVersion?: string;
}

export interface ListMachinesFilter {
  includeDeleted?: boolean;
  region?: string;
  states?: string[];
  metadata?: Record<string, string>;
}

/** Machine metadata keys: letters, digits, `_ . -` (they also become DNS labels under `_metadata`). */
const METADATA_KEY = /^[a-zA-Z0-9_.-]{1,64}$/;
const MACHINE_NAME = /^[a-zA-Z0-9](?:[a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?$/;
const EVENTS_IN_MACHINE = 10;
const MAX_STOP_TIMEOUT_MS = LIMITS.stopTimeoutMs;

type Mutation = { app: AppRecord; machine: MachineRecord };

/**
 * The one orchestrator of machines and the front of this folder: validates transitions against the
 * state table and serializes every mutation of a machine through its queue, which it alone owns. The
 * steps it runs live beside it: lifecycle.ts (boot, stop, destroy: the only calls into the runtime),
 * exits.ts (restart policy), reconcile.ts (at start), leases.ts, wait.ts, machine-spec.ts (what a boot needs).
 */
export class MachinesService {
  readonly #queue = new KeyedQueue();
  /** Machines admitted on the host (a create, an update) until their boot makes their record hold. */
  readonly #admitted = new Reservations<GuestClaim>();
  readonly #lifecycle: MachineLifecycle;
  readonly #exits: ExitHandler;
  readonly #leases: Leases;
  readonly #waits: MachineWaits;
  /** Aborted by close(): ends followed log streams. */
  readonly #closing = new AbortController();

  constructor(private readonly ctx: PlatformContext) {
    this.#lifecycle = new MachineLifecycle(ctx, this.#admitted);
    this.#exits = new ExitHandler(ctx, this.#lifecycle);
    this.#leases = new Leases(ctx);
    this.#waits = new MachineWaits(ctx);
    ctx.runtime?.onExit((machineId, exit) => {
      void this.#queue.run(machineId, () => this.#exits.handle(machineId, exit)).catch(() => undefined);
    });
  }

  /** At start: settles what became of the machines while hangard was away (see reconcile.ts). */
  async reconcile(): Promise<void> {
    await addressUnaddressedMachines(this.ctx);
    // A destroy that a crash interrupted is finished first, so recover() below never re-adopts the
    // container of a machine that is on its way out (and its volume and lease are let go).
    for (const machine of await this.ctx.store.read((tx) =>
      tx.machines.list().filter((m) => m.state === 'destroying'),
    )) {
      await this.#queue
        .run(machine.id, () => this.#lifecycle.destroy(machine, 'hangar', { afterRestart: true }))
        // A failure leaves the machine `failed` with the reason (orFail): never `destroying` again.
        .catch(() => undefined);
    }
    const runtime = this.ctx.runtime;
    if (!runtime) return;
    const known = await this.ctx.store.read((tx) =>
      tx.machines.list().map((m) => ({ machineId: m.id, state: m.state })),
    );
    for (const found of await runtime.recover(known)) {
      await this.#queue.run(found.machineId, () => settleRecovered(this.ctx, this.#exits, found));
    }
  }

  async logs(
    principal: Principal,
    appName: string,
    machineId: string,
    options: { tailLines: number; follow: boolean; signal: AbortSignal },
  ): Promise<AsyncIterable<string>> {
    const machine = await this.ctx.store.read((tx) =>
      findMachine(tx, appFor(tx, principal, appName, 'read'), machineId),
    );
    // Shutdown ends followed streams too, so no open log request holds hangard up.
    return this.#lifecycle.requireRuntime().logs(machine.id, {
      ...options,
      signal: AbortSignal.any([options.signal, this.#closing.signal]),
    });
  }

  // ---- reads -------------------------------------------------------------------------------------

  async list(principal: Principal, appName: string, filter: ListMachinesFilter = {}): Promise<MachineView[]> {
    return this.ctx.store.read((tx) => {
      const app = appFor(tx, principal, appName, 'read');
      return tx.machines
        .list({ appId: app.id })
        .filter((m) => filter.includeDeleted || m.state !== 'destroyed')
        .filter((m) => !filter.region || m.region === filter.region)
        .filter((m) => !filter.states || filter.states.includes(m.state))
        .filter((m) => Object.entries(filter.metadata ?? {}).every(([k, v]) => m.config.metadata?.[k] === v))
        .map((m) => this.#view(tx, m));
    });
  }

  async get(principal: Principal, appName: string, machineId: string): Promise<MachineView> {
    return this.ctx.store.read((tx) =>
      this.#view(tx, findMachine(tx, appFor(tx, principal, appName, 'read'), machineId)),
    );
  }

  async events(principal: Principal, appName: string, machineId: string): Promise<MachineEventRecord[]> {
    // Bounded by pruning (pruning.eventsPerMachine); the api pages them.
    return this.ctx.store.read((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'read'), machineId);
      return tx.machineEvents.list({ machineId: machine.id }, { newestFirst: true });
    });
  }

  /** A machine's versions, newest first (bounded by pruning.versionsPerMachine; the api pages them). */
  async versions(principal: Principal, appName: string, machineId: string): Promise<MachineVersionRecord[]> {
    return this.ctx.store.read((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'read'), machineId);
      return tx.machineVersions.list({ machineId: machine.id }, { newestFirst: true });
    });
  }

  async metadata(principal: Principal, appName: string, machineId: string): Promise<Record<string, string>> {
    const view = await this.get(principal, appName, machineId);
    return view.machine.config.metadata ?? {};
  }

  // ---- create and update -------------------------------------------------------------------------

  async create(principal: Principal, appName: string, input: CreateMachineInput): Promise<MachineView> {
    const config = normalizeMachineConfig(input.config);
    const region = input.region ?? this.ctx.region;
    this.#checkRegion(region);
    if (input.name !== undefined && !MACHINE_NAME.test(input.name)) {
      throw invalidArgument(
        `name: "${input.name}" is not a valid machine name; use letters, digits, - and _`,
      );
    }
    const leaseTtlSec = checkLeaseTtl(input.leaseTtlSec, 'lease_ttl');
    const launch = !input.skipLaunch;
    // Access first, so that only a caller who may use the app learns what the image rules say.
    const owner = await this.ctx.store.read((tx) => appFor(tx, principal, appName, 'write'));
    await checkMachineImage(config.image, owner.name, this.ctx.registryPolicy);
    if (launch) await this.#admitImage(owner, config.image);
    const admit = launch && this.ctx.runtime !== undefined;
    const id = newMachineId();
    // One write checks the quota and inserts the machine, so concurrent creates cannot both take the
    // app's last slot. A launching create also claims its guest on the host under the capacity lock,
    // until its boot makes the record hold it (lifecycle.ts).
    const insert = () =>
      this.ctx.store.write((tx) =>
        this.#insertMachine(tx, principal, appName, input, { id, config, region, leaseTtlSec, admit }),
      );
    const view = admit
      ? await this.#admitted.reserve(HOST_CAPACITY, id, insert, () => guestClaim(config))
      : await insert();
    if (launch && this.ctx.runtime) {
      void this.#queue
        .run(view.machine.id, () => this.#lifecycle.boot(view.machine.id))
        .catch(() => undefined);
    }
    return view;
  }

  #insertMachine(
    tx: WriteTx,
    principal: Principal,
    appName: string,
    input: CreateMachineInput,
    plan: {
      id: string;
      config: MachineConfig;
      region: string;
      leaseTtlSec: number | undefined;
      admit: boolean;
    },
  ): MachineView {
    const { config, region, leaseTtlSec } = plan;
    const launch = !input.skipLaunch;
    const app = appFor(tx, principal, appName, 'write');
    checkSecretsVersion(app, input.minSecretsVersion);
    checkMachineQuota(tx, app, limitsIn(this.ctx).quotas);
    if (plan.admit) {
      admitOnHost(tx, limitsIn(this.ctx).capacity, config, plan.id, this.#admitted.held(HOST_CAPACITY));
    }
    const name = input.name ?? uniqueName(tx, app);
    if (nameTaken(tx, app, name)) {
      throw new HangarError('name_taken', `a machine named "${name}" already exists in app ${app.name}`);
    }
    const now = isoNow(this.ctx);
    const machine: MachineRecord = {
      id: plan.id,
      appId: app.id,
      name,
      region,
      hostId: this.ctx.hostId,
      state: 'created',
      instanceId: newUlid(),
      config,
      imageRef: null,
      ...allocateSixPn(tx, app, this.ctx),
      cordoned: input.skipServiceRegistration === true,
      skipSecrets: input.skipSecrets === true,
      createdAt: now,
      updatedAt: now,
    };
    attachVolume(tx, app, machine, undefined);
    tx.machines.insert(machine);
    tx.machineVersions.insert({
      machineId: machine.id,
      version: machine.instanceId,
      config,
      createdAt: now,
    });
    recordEvent(this.ctx, tx, machine, 'launch', 'created', 'user');
    if (launch && !this.ctx.runtime) {
      recordEvent(this.ctx, tx, machine, 'start', 'failed', 'hangar', { error: NO_RUNTIME_MESSAGE });
    }
    if (app.status === 'pending') tx.apps.update({ ...app, status: 'deployed', updatedAt: now });
    const lease =
      leaseTtlSec === undefined ? undefined : this.#leases.grant(tx, machine, principal, leaseTtlSec, '');
    return { ...this.#view(tx, machine), ...(lease ? { nonce: lease.nonce } : {}) };
  }

  /** Full config replacement (no partial updates); a started machine reboots into the new version. */
  async update(
    principal: Principal,
    appName: string,
    machineId: string,
    input: UpdateMachineInput,
    nonce: string | undefined,
  ): Promise<MachineView> {
    const config = normalizeMachineConfig(input.config);
    return this.#mutate(principal, appName, machineId, 'update', nonce, async ({ app, machine }) => {
      if (input.currentVersion !== undefined && input.currentVersion !== machine.instanceId) {
        throw failedPrecondition(
          `current_version ${input.currentVersion} is stale: machine ${machine.id} is at version ${machine.instanceId}`,
        );
      }
      if (input.name !== undefined && input.name !== machine.name) {
        throw invalidArgument(`name: a machine's name cannot change (it is "${machine.name}")`);
      }
      if (input.region !== undefined && input.region !== machine.region) {
        throw invalidArgument(`region: a machine's region cannot change (it is "${machine.region}")`);
      }
      checkSecretsVersion(app, input.minSecretsVersion);
      await checkMachineImage(config.image, app.name, this.ctx.registryPolicy);
      await this.#admitImage(app, config.image);
      const wasRunning = machine.state === 'started';
      const relaunch = wasRunning && !input.skipLaunch;
      if (relaunch) {
        // Its new guest is claimed before the old one is let go, so no other machine takes the room
        // between the stop and the boot (which spends the claim).
        await this.#admitted.reserve(
          HOST_CAPACITY,
          machine.id,
          () =>
            this.ctx.store.read((tx) =>
              admitOnHost(
                tx,
                limitsIn(this.ctx).capacity,
                config,
                machine.id,
                this.#admitted.held(HOST_CAPACITY),
              ),
            ),
          () => guestClaim(config),
        );
      }
      try {
        return await this.#replaceVersion(app, machine, input, config, wasRunning, relaunch);
      } finally {
        // A no-op after the boot; otherwise the update failed before it and the claim goes.
        if (relaunch) await this.#admitted.release(HOST_CAPACITY, machine.id);
      }
    });
  }

  async #replaceVersion(
    app: AppRecord,
    machine: MachineRecord,
    input: UpdateMachineInput,
    config: MachineConfig,
    wasRunning: boolean,
    relaunch: boolean,
  ): Promise<MachineView> {
    // A suspended machine's frozen workload belongs to the old version: it goes too.
    if (wasRunning || machine.state === 'suspended') await this.#lifecycle.stopWorkload(machine, 'update');
    const updated = await this.ctx.store.write((tx) => {
      const current = tx.machines.get(machine.id)!;
      const now = isoNow(this.ctx);
      const next: MachineRecord = {
        ...current,
        config,
        instanceId: newUlid(),
        // A new version resolves its image afresh at its first boot.
        imageRef: null,
        skipSecrets: input.skipSecrets === true,
        // A suspended snapshot belongs to the old config: after an update the machine boots fresh.
        // Judged on the state before stopWorkload, which leaves a suspended machine `stopping`.
        state: machine.state === 'suspended' || wasRunning ? 'stopped' : current.state,
        updatedAt: now,
      };
      attachVolume(tx, tx.apps.get(app.id)!, next, current);
      tx.machines.update(next);
      tx.machineVersions.insert({ machineId: next.id, version: next.instanceId, config, createdAt: now });
      recordEvent(this.ctx, tx, next, 'update', next.state, 'user', { version: next.instanceId });
      return next;
    });
    if (relaunch) await this.#lifecycle.boot(updated.id);
    return this.ctx.store.read((tx) => this.#view(tx, tx.machines.get(updated.id)!));
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  async start(
    principal: Principal,
    appName: string,
    machineId: string,
    nonce?: string,
  ): Promise<{ previousState: MachineState }> {
    return this.#mutate(
      principal,
      appName,
      machineId,
      'start',
      nonce,
      async ({ machine }) => {
        this.#lifecycle.requireRuntime();
        // The boot admits it against the host's capacity, in the write that makes it `starting`.
        await this.#lifecycle.boot(machine.id);
        return { previousState: machine.state };
      },
      { idempotentFrom: ['started'], result: ({ machine }) => ({ previousState: machine.state }) },
    );
  }

  async stop(
    principal: Principal,
    appName: string,
    machineId: string,
    options: { signal?: string; timeout?: unknown },
    nonce?: string,
  ): Promise<void> {
    const timeoutMs = options.timeout === undefined ? undefined : durationToMs(options.timeout, 'timeout');
    if (timeoutMs !== undefined && timeoutMs > MAX_STOP_TIMEOUT_MS) {
      throw invalidArgument(`timeout: at most ${MAX_STOP_TIMEOUT_MS / 1000}s`);
    }
    await this.#mutate(
      principal,
      appName,
      machineId,
      'stop',
      nonce,
      async ({ machine }) => {
        if (machine.state === 'created' || machine.state === 'failed') {
          // Nothing runs: the machine only changes state.
          await setMachineState(this.ctx, machine.id, 'stopped', 'stop', 'user');
          return;
        }
        await this.#lifecycle.stopWorkload(machine, 'stop', { signal: options.signal, timeoutMs });
        await setMachineState(this.ctx, machine.id, 'stopped', 'stop', 'user');
      },
      { idempotentFrom: ['stopped'], result: () => undefined },
    );
  }

  async suspend(principal: Principal, appName: string, machineId: string, nonce?: string): Promise<void> {
    await this.#mutate(
      principal,
      appName,
      machineId,
      'suspend',
      nonce,
      async ({ machine }) => {
        const runtime = this.#lifecycle.requireRuntime();
        await setMachineState(this.ctx, machine.id, 'suspending', 'suspend', 'user');
        try {
          await runtime.suspend(machine.id);
        } catch (error) {
          await setMachineState(this.ctx, machine.id, 'started', 'suspend', 'hangar', {
            error: (error as Error).message,
          });
          throw error;
        }
        await setMachineState(this.ctx, machine.id, 'suspended', 'suspend', 'user');
      },
      { idempotentFrom: ['suspended'], result: () => undefined },
    );
  }

  async restart(
    principal: Principal,
    appName: string,
    machineId: string,
    options: { signal?: string; timeoutMs?: number },
    nonce?: string,
  ): Promise<void> {
    if (options.timeoutMs !== undefined && options.timeoutMs > MAX_STOP_TIMEOUT_MS) {
      throw invalidArgument(`timeout: at most ${MAX_STOP_TIMEOUT_MS / 1000}s`);
    }
    await this.#mutate(principal, appName, machineId, 'restart', nonce, async ({ machine }) => {
      await this.#lifecycle.stopWorkload(machine, 'restart', options);
      await setMachineState(this.ctx, machine.id, 'stopped', 'restart', 'user');
      await this.#lifecycle.boot(machine.id);
    });
  }

  async signal(
    principal: Principal,
    appName: string,
    machineId: string,
    signal: string,
    nonce?: string,
  ): Promise<void> {
    await this.#mutate(principal, appName, machineId, 'signal', nonce, async ({ machine }) => {
      await this.#lifecycle.requireRuntime().signal(machine.id, signal);
      await this.ctx.store.write((tx) => recordEvent(this.ctx, tx, machine, 'signal', signal, 'user'));
    });
  }

  async destroy(
    principal: Principal,
    appName: string,
    machineId: string,
    force: boolean,
    nonce?: string,
  ): Promise<void> {
    const action: MachineAction = 'destroy';
    await this.#mutate(
      principal,
      appName,
      machineId,
      action,
      nonce,
      async ({ machine }) => this.#lifecycle.destroy(machine),
      {
        allowAnyState: force,
      },
    );
  }

  async cordon(
    principal: Principal,
    appName: string,
    machineId: string,
    cordoned: boolean,
    nonce?: string,
  ): Promise<void> {
    await this.#mutate(principal, appName, machineId, 'cordon', nonce, async ({ machine }) => {
      await this.ctx.store.write((tx) => {
        const current = tx.machines.get(machine.id)!;
        tx.machines.update({ ...current, cordoned, updatedAt: isoNow(this.ctx) });
        recordEvent(this.ctx, tx, current, cordoned ? 'cordon' : 'uncordon', current.state, 'user');
      });
    });
  }

  /** Used by app deletion: refuses while machines run unless `force`, then destroys every machine. */
  async destroyAllForApp(app: AppRecord, force: boolean): Promise<void> {
    const machines = await this.ctx.store.read((tx) => liveMachines(tx, app));
    const running = machines.filter((m) => !canBegin('destroy', m.state));
    if (running.length > 0 && !force) {
      throw failedPrecondition(
        `app ${app.name} has ${running.length} running machine(s) (${running.map((m) => m.id).join(', ')}); stop them first or delete with force=true`,
      );
    }
    for (const machine of machines) {
      await this.#queue.run(machine.id, async () => {
        const current = await this.ctx.store.read((tx) => tx.machines.get(machine.id));
        if (current && current.state !== 'destroyed') await this.#lifecycle.destroy(current);
      });
    }
  }

  // ---- wait and leases --------------------------------------------------------------------------

  wait(principal: Principal, appName: string, machineId: string, input: WaitInput, abort?: AbortSignal) {
    return this.#waits.wait(principal, appName, machineId, input, abort);
  }

  acquireLease(
    principal: Principal,
    appName: string,
    machineId: string,
    input: { ttlSec?: number; description?: string; nonce?: string },
  ): Promise<LeaseRecord> {
    return this.#leases.acquire(principal, appName, machineId, input);
  }

  getLease(principal: Principal, appName: string, machineId: string): Promise<LeaseRecord> {
    return this.#leases.get(principal, appName, machineId);
  }

  releaseLease(principal: Principal, appName: string, machineId: string, nonce: string | undefined) {
    return this.#leases.release(principal, appName, machineId, nonce);
  }

  // ---- metadata ----------------------------------------------------------------------------------

  /** Sets (string) or removes (null/"") keys. Metadata changes mint no version and reboot nothing. */
  async patchMetadata(
    principal: Principal,
    appName: string,
    machineId: string,
    changes: Record<string, string | null>,
    options: { machineVersion?: string; nonce?: string },
  ): Promise<Record<string, string>> {
    for (const key of Object.keys(changes)) {
      if (!METADATA_KEY.test(key)) {
        throw invalidArgument(`metadata key "${key}" is invalid; use 1-64 letters, digits, '_', '.' or '-'`);
      }
    }
    return this.ctx.store.write((tx) => {
      const machine = findLiveMachine(tx, appFor(tx, principal, appName, 'write'), machineId);
      checkLease(tx, machine, options.nonce, this.ctx.now());
      if (options.machineVersion !== undefined && options.machineVersion !== machine.instanceId) {
        throw failedPrecondition(
          `machine_version ${options.machineVersion} is stale: the machine is at ${machine.instanceId}`,
        );
      }
      const metadata = { ...machine.config.metadata };
      for (const [key, value] of Object.entries(changes)) {
        if (value === null || value === '') delete metadata[key];
        else metadata[key] = value;
      }
      if (Object.keys(metadata).length > LIMITS.mapEntries) {
        throw invalidArgument(`metadata: a machine holds at most ${LIMITS.mapEntries} keys`);
      }
      tx.machines.update({
        ...machine,
        config: { ...machine.config, metadata },
        updatedAt: isoNow(this.ctx),
      });
      return metadata;
    });
  }

  // ---- inside the machine ------------------------------------------------------------------------

  async exec(
    principal: Principal,
    appName: string,
    machineId: string,
    request: ExecRequest,
  ): Promise<ExecResult> {
    const machine = await this.#startedMachine(principal, appName, machineId, 'write');
    return this.#lifecycle.requireRuntime().exec(machine.id, request);
  }

  /** An interactive command in a started machine (`hangar ssh console`, `ssh sftp`); write access. */
  async console(
    principal: Principal,
    appName: string,
    machineId: string,
    request: ConsoleRequest,
  ): Promise<ConsoleSession> {
    const machine = await this.#startedMachine(principal, appName, machineId, 'write');
    const runtime = this.#lifecycle.requireRuntime();
    if (!runtime.console) {
      throw new HangarError('runtime_unavailable', "this host's machine runtime has no interactive console");
    }
    return runtime.console(machine.id, request);
  }

  async ps(principal: Principal, appName: string, machineId: string): Promise<ProcessStat[]> {
    const machine = await this.#startedMachine(principal, appName, machineId, 'read');
    return this.#lifecycle.requireRuntime().ps(machine.id);
  }

  // ---- the proxy's entry points -----------------------------------------------------------------
  // The proxy is part of the platform: no principal, no lease check (Fly's proxy starts machines whatever
  // their leases), but the same queue and state table as the API, and events with source `hangar`.

  /**
   * Starts or resumes a machine for a request. Runs in the machine's queue, so a stop or suspend in
   * progress finishes first and the machine then starts again: a request racing an autostop is never lost.
   */
  async wake(machineId: string, trigger: JsonObject): Promise<WakeResult> {
    const askedAt = this.ctx.now();
    return this.#queue.run(machineId, async () => {
      const queuedMs = this.ctx.now() - askedAt;
      const machine = await this.ctx.store.read((tx) => tx.machines.get(machineId));
      if (!machine || machine.state === 'destroyed') throw failedPrecondition(`machine ${machineId} is gone`);
      if (machine.state === 'started') return { previousState: 'started', queuedMs, bootMs: 0 };
      if (!canBegin('start', machine.state)) throw failedPrecondition(stateRefusal('start', machine));
      this.#lifecycle.requireRuntime();
      const bootAt = this.ctx.now();
      // The wake event goes in with the boot's first write: one synced commit less before the request.
      const wakeEvent = (tx: WriteTx, current: MachineRecord) =>
        recordEvent(this.ctx, tx, current, 'wake', current.state, 'hangar', trigger);
      await this.#lifecycle.boot(machine.id, wakeEvent).catch(async (error: unknown) => {
        // Refused before that write (no room on the host): the wake is still on record.
        if (HangarError.is(error) && error.code === 'insufficient_capacity') {
          await this.ctx.store.write((tx) => wakeEvent(tx, tx.machines.get(machine.id)!));
        }
        throw error;
      });
      return { previousState: machine.state, queuedMs, bootMs: this.ctx.now() - bootAt };
    });
  }

  /**
   * Autostop: stops or suspends an idle machine. In the queue, it checks again that the machine is
   * started, that it has not vetoed its stop (metadata `hangar_busy`), and that the proxy still finds it
   * idle (`stillIdle` returns why not). A suspend the machine cannot take becomes a stop, and says so.
   */
  async idleStop(
    machineId: string,
    mode: 'stop' | 'suspend',
    stillIdle: () => string | undefined,
    details: JsonObject = {},
  ): Promise<IdleStopResult> {
    return this.#queue.run(machineId, async () => {
      const machine = await this.ctx.store.read((tx) => tx.machines.get(machineId));
      if (machine?.state !== 'started')
        return { done: false, reason: `machine is ${machine?.state ?? 'gone'}` };
      if (isBusy(machine.config.metadata?.[BUSY_METADATA_KEY]))
        return { done: false, reason: 'busy (hangar_busy)' };
      const notIdle = stillIdle();
      if (notIdle !== undefined) return { done: false, reason: notIdle };
      if (mode === 'suspend') {
        const unfit = suspendUnfit(machine);
        if (unfit === undefined) {
          const runtime = this.#lifecycle.requireRuntime();
          await setMachineState(this.ctx, machine.id, 'suspending', 'autostop', 'hangar', details);
          try {
            await runtime.suspend(machine.id);
            await setMachineState(this.ctx, machine.id, 'suspended', 'autostop', 'hangar', details);
            return { done: true, mode: 'suspend' };
          } catch (error) {
            await setMachineState(this.ctx, machine.id, 'started', 'autostop', 'hangar', {
              error: (error as Error).message,
            });
            return this.#idleStopNow(machine, {
              ...details,
              suspend_fallback: `suspend failed: ${(error as Error).message}`,
            });
          }
        }
        return this.#idleStopNow(machine, { ...details, suspend_fallback: unfit });
      }
      return this.#idleStopNow(machine, details);
    });
  }

  /** The health checker's latest results for a machine (written only when a status changes). */
  async recordChecks(machineId: string, checks: CheckStatusRecord[]): Promise<void> {
    await this.ctx.store.write((tx) => {
      const machine = tx.machines.get(machineId);
      if (machine && machine.state !== 'destroyed') tx.machines.update({ ...machine, checks });
    });
  }

  /** An event the proxy records on a machine (a wake's latency split, a refused stop). */
  async noteProxyEvent(machineId: string, type: string, status: string, request: JsonObject): Promise<void> {
    await this.ctx.store.write((tx) => {
      const machine = tx.machines.get(machineId);
      if (machine) recordEvent(this.ctx, tx, machine, type, status, 'hangar', request);
    });
  }

  async #idleStopNow(machine: MachineRecord, details: JsonObject): Promise<IdleStopResult> {
    await this.#lifecycle.stopWorkload(machine, 'autostop', { source: 'hangar' });
    await setMachineState(this.ctx, machine.id, 'stopped', 'autostop', 'hangar', details);
    return {
      done: true,
      mode: 'stop',
      ...(typeof details.suspend_fallback === 'string' ? { fallback: details.suspend_fallback } : {}),
    };
  }

  /** Ends open waits (clients retry them) and waits for queued work: the first step of shutdown. */
  async close(): Promise<void> {
    this.#closing.abort();
    this.#waits.close();
    await this.#queue.drain();
  }

  // ---- internals ---------------------------------------------------------------------------------

  async #startedMachine(principal: Principal, appName: string, machineId: string, access: 'read' | 'write') {
    const machine = await this.ctx.store.read((tx) =>
      findMachine(tx, appFor(tx, principal, appName, access), machineId),
    );
    this.#lifecycle.requireRuntime();
    if (machine.state !== 'started') {
      throw failedPrecondition(`machine ${machine.id} is ${machine.state}; start it first`);
    }
    return machine;
  }

  /**
   * Runs one mutation in the machine's queue after checking access, the lease and the state table.
   * `idempotentFrom` names states in which the action is already done: the call then succeeds at once.
   */
  async #mutate<T>(
    principal: Principal,
    appName: string,
    machineId: string,
    action: MachineAction,
    nonce: string | undefined,
    task: (m: Mutation) => Promise<T>,
    options: { idempotentFrom?: MachineState[]; result?: (m: Mutation) => T; allowAnyState?: boolean } = {},
  ): Promise<T> {
    const { app, machine: found } = await this.ctx.store.read((tx) => {
      const app = appFor(tx, principal, appName, 'write');
      return { app, machine: findMachine(tx, app, machineId) };
    });
    return this.#queue.run(found.id, async () => {
      // Re-read inside the queue: an earlier queued mutation may have changed the machine.
      const machine = await this.ctx.store.read((tx) => {
        const current = tx.machines.get(found.id)!;
        checkLease(tx, current, nonce, this.ctx.now());
        return current;
      });
      if (machine.state === 'destroyed') {
        throw failedPrecondition(`machine ${machine.id} is destroyed`);
      }
      if (options.idempotentFrom?.includes(machine.state) && options.result)
        return options.result({ app, machine });
      if (!options.allowAnyState && !canBegin(action, machine.state)) {
        throw failedPrecondition(stateRefusal(action, machine));
      }
      return task({ app, machine });
    });
  }

  /** The app's unpacked images on this host stay within their quotas (the boot checks again when it unpacks). */
  async #admitImage(app: AppRecord, image: string): Promise<void> {
    await this.ctx.runtime?.admitImage?.(image, uidRangeForApp(app.internalNumericId));
  }

  #checkRegion(region: string): void {
    if (region !== this.ctx.region) {
      throw new HangarError(
        'failed_precondition',
        `insufficient resources to create machine: no host in region "${region}"; this Hangar serves region "${this.ctx.region}"`,
      );
    }
  }

  #view(tx: ReadTx, machine: MachineRecord): MachineView {
    return {
      machine,
      events: tx.machineEvents.list(
        { machineId: machine.id },
        { newestFirst: true, limit: EVENTS_IN_MACHINE },
      ),
    };
  }
}

export interface WakeResult {
  previousState: MachineState;
  /** Time spent behind other work in the machine's queue (a stop in progress). */
  queuedMs: number;
  /** The boot or resume itself. */
  bootMs: number;
}

export type IdleStopResult =
  | { done: true; mode: 'stop' | 'suspend'; fallback?: string }
  | { done: false; reason: string };

/** Metadata key a machine sets (through the metadata API, from inside or outside) to veto its autostop. */
export const BUSY_METADATA_KEY = 'hangar_busy';

const isBusy = (value: string | undefined) =>
  value !== undefined && value !== '' && value !== 'false' && value !== '0';

/** Why a machine cannot be suspended (fly-semantics §5.5), or undefined when it can. */
function suspendUnfit(machine: MachineRecord): string | undefined {
  const config = machine.config;
  if (config.guest.memory_mb > 2048) return 'memory above 2048 MB cannot be suspended';
  if ((config.init?.swap_size_mb ?? 0) > 0) return 'a machine with swap cannot be suspended';
  if (config.schedule !== undefined) return 'a scheduled machine cannot be suspended';
  if ((config.guest.gpus ?? 0) > 0) return 'a machine with GPUs cannot be suspended';
  return undefined;
}

export interface MachineView {
  machine: MachineRecord;
  events: MachineEventRecord[];
  /** Only on create with lease_ttl. */
  nonce?: string;
}

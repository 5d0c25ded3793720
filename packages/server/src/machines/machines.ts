import type { Principal } from '../auth/tokens.js';
import type {
  ExecRequest,
  ExecResult,
  ExitInfo,
  MachineRuntime,
  MachineSpec,
  ProcessStat,
} from '../runtime/runtime.js';
import { uidRangeForApp } from '../runtime/uid-range.js';
import { durationToMs } from '../shared/duration.js';
import { failedPrecondition, HangarError, invalidArgument } from '../shared/errors.js';
import { newLeaseNonce, newMachineId, newUlid } from '../shared/ids.js';
import { KeyedQueue } from '../shared/keyed-queue.js';
import type {
  AppRecord,
  JsonObject,
  LeaseRecord,
  MachineEventRecord,
  MachineRecord,
  MachineState,
  MachineVersionRecord,
} from '../store/records.js';
import type { ReadTx, WriteTx } from '../store/store.js';
import { appFor, isoNow, type PlatformContext } from './context.js';
import { type MachineConfig, normalizeMachineConfig } from './machine-config.js';
import {
  activeLease,
  allocateSixPn,
  attachVolume,
  checkLease,
  checkLeaseTtl,
  checkSecretsVersion,
  findLiveMachine,
  findMachine,
  leaseHeld,
  liveMachines,
  NO_RUNTIME_MESSAGE,
  nameTaken,
  nowSec,
  pinnedImage,
  stateRefusal,
  uniqueName,
  type WaitInput,
  waitOutcome,
} from './machine-rules.js';
import { canBegin, type MachineAction } from './states.js';

export interface CreateMachineInput {
  config: MachineConfig;
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
/** Fly's restart defaults: up to 10 automatic restarts within 5 minutes. */
const DEFAULT_MAX_RETRIES = 10;
const RESTART_WINDOW_MS = 5 * 60_000;
/** Fly's default stop timeout (fly.toml kill_timeout); the default signal is the runtime's to pick. */
const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const MAX_STOP_TIMEOUT_MS = 300_000;

type Mutation = { app: AppRecord; machine: MachineRecord };

/**
 * The one orchestrator of machines: validates transitions against the state table, serializes every
 * mutation of a machine through its queue, checks leases, mints versions, records events, and is the
 * only code that talks to the runtime.
 */
export class MachinesService {
  readonly #queue = new KeyedQueue();
  /** Open long-polls, so shutdown can answer them at once instead of waiting out their timeouts. */
  readonly #waits = new Set<(error: Error) => void>();
  /** Aborted by close(): ends followed log streams. */
  readonly #closing = new AbortController();

  /** Recent automatic restarts per machine, for `restart.max_retries` (counted within RESTART_WINDOW_MS). */
  readonly #restarts = new Map<string, number[]>();

  constructor(private readonly ctx: PlatformContext) {
    ctx.runtime?.onExit((machineId, exit) => {
      void this.#queue.run(machineId, () => this.#handleExit(machineId, exit)).catch(() => undefined);
    });
  }

  /**
   * At start: asks the runtime what became of the machines the store says are running while hangard was
   * away. Running ones were re-adopted; exited or vanished ones go through the same exit handling as a
   * live exit (restart policy, auto_destroy); containers nobody knows were removed by the runtime.
   */
  async reconcile(): Promise<void> {
    // Machines recorded before private networks existed get their address now, once.
    await this.ctx.store.write((tx) => {
      for (const machine of tx.machines.list()) {
        if (machine.machineNumber !== undefined || machine.state === 'destroyed') continue;
        const app = tx.apps.get(machine.appId);
        if (app) tx.machines.update({ ...machine, ...allocateSixPn(tx, app, this.ctx.hostId) });
      }
    });
    const runtime = this.ctx.runtime;
    if (!runtime) return;
    const known = await this.ctx.store.read((tx) =>
      tx.machines.list().map((m) => ({ machineId: m.id, state: m.state })),
    );
    for (const found of await runtime.recover(known)) {
      await this.#queue.run(found.machineId, async () => {
        const machine = await this.ctx.store.read((tx) => tx.machines.get(found.machineId));
        if (!machine) return;
        if (found.status === 'running' && machine.state !== 'started') {
          await this.#setState(machine.id, 'started', 'start', 'hangar', { recovered: true });
        } else if (found.status === 'paused' && machine.state !== 'suspended') {
          await this.#setState(machine.id, 'suspended', 'suspend', 'hangar', { recovered: true });
        } else if (found.status === 'exited' || found.status === 'missing') {
          const exit = found.exit ?? {
            exitCode: null,
            signal: null,
            oomKilled: false,
            requestedStop: false,
            exitedAt: this.ctx.now(),
          };
          await this.#handleExit(
            machine.id,
            exit,
            found.status === 'missing' ? 'its container vanished while hangard was down' : undefined,
          );
        }
      });
    }
  }

  /** An exit nobody asked for: record it, then restart, destroy or leave the machine stopped. */
  async #handleExit(machineId: string, exit: ExitInfo, note?: string): Promise<void> {
    const machine = await this.ctx.store.read((tx) => tx.machines.get(machineId));
    if (!machine || !['started', 'starting', 'suspended', 'suspending', 'stopping'].includes(machine.state))
      return;
    const restart = (machine.config.restart as { policy?: string; max_retries?: number } | undefined) ?? {};
    const policy = restart.policy ?? 'on-failure';
    const recent = (this.#restarts.get(machineId) ?? []).filter(
      (at) => this.ctx.now() - at < RESTART_WINDOW_MS,
    );
    const failed = exit.exitCode !== 0 || exit.oomKilled;
    const restarting =
      machine.state !== 'stopping' &&
      (policy === 'always' || (policy === 'on-failure' && failed)) &&
      recent.length < (restart.max_retries ?? DEFAULT_MAX_RETRIES);
    await this.ctx.store.write((tx) => {
      const current = tx.machines.get(machineId)!;
      const next = { ...current, state: 'stopped' as const, updatedAt: isoNow(this.ctx) };
      tx.machines.update(next);
      this.#event(tx, next, 'exit', 'stopped', 'flyd', {
        exit_event: {
          exit_code: exit.exitCode,
          oom_killed: exit.oomKilled,
          requested_stop: exit.requestedStop,
          restarting,
          signal: exit.signal,
          exited_at: new Date(exit.exitedAt).toISOString(),
        },
        restart_count: recent.length,
        ...(note ? { error: note } : {}),
      });
    });
    if (restarting) {
      this.#restarts.set(machineId, [...recent, this.ctx.now()]);
      await this.#boot(machineId).catch(() => undefined);
      return;
    }
    this.#restarts.delete(machineId);
    if (machine.config.auto_destroy === true) {
      const current = await this.ctx.store.read((tx) => tx.machines.get(machineId));
      if (current) await this.#destroyOne(current);
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
    return this.#requireRuntime().logs(machine.id, {
      ...options,
      signal: AbortSignal.any([options.signal, this.#closing.signal]),
    });
  }

  #requireRuntime(): MachineRuntime {
    if (!this.ctx.runtime) throw new HangarError('runtime_unavailable', NO_RUNTIME_MESSAGE);
    return this.ctx.runtime;
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
        .filter((m) =>
          Object.entries(filter.metadata ?? {}).every(
            ([k, v]) => (m.config.metadata as JsonObject | undefined)?.[k] === v,
          ),
        )
        .map((m) => this.#view(tx, m));
    });
  }

  async get(principal: Principal, appName: string, machineId: string): Promise<MachineView> {
    return this.ctx.store.read((tx) =>
      this.#view(tx, findMachine(tx, appFor(tx, principal, appName, 'read'), machineId)),
    );
  }

  async events(
    principal: Principal,
    appName: string,
    machineId: string,
    limit: number,
  ): Promise<MachineEventRecord[]> {
    return this.ctx.store.read((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'read'), machineId);
      return tx.machineEvents.list({ machineId: machine.id }, { newestFirst: true, limit });
    });
  }

  async versions(principal: Principal, appName: string, machineId: string): Promise<MachineVersionRecord[]> {
    return this.ctx.store.read((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'read'), machineId);
      return tx.machineVersions.list({ machineId: machine.id }, { newestFirst: true });
    });
  }

  async metadata(principal: Principal, appName: string, machineId: string): Promise<Record<string, string>> {
    const view = await this.get(principal, appName, machineId);
    return (view.machine.config.metadata as Record<string, string> | undefined) ?? {};
  }

  // ---- create and update -------------------------------------------------------------------------

  async create(principal: Principal, appName: string, input: CreateMachineInput): Promise<MachineView> {
    const config = normalizeMachineConfig(input.config) as JsonObject;
    const region = input.region ?? this.ctx.region;
    this.#checkRegion(region);
    if (input.name !== undefined && !MACHINE_NAME.test(input.name)) {
      throw invalidArgument(
        `name: "${input.name}" is not a valid machine name; use letters, digits, - and _`,
      );
    }
    const leaseTtlSec = checkLeaseTtl(input.leaseTtlSec, 'lease_ttl');
    const launch = !input.skipLaunch;
    const view = await this.ctx.store.write((tx) => {
      const app = appFor(tx, principal, appName, 'write');
      checkSecretsVersion(app, input.minSecretsVersion);
      const name = input.name ?? uniqueName(tx, app);
      if (nameTaken(tx, app, name)) {
        throw new HangarError('name_taken', `a machine named "${name}" already exists in app ${app.name}`);
      }
      const now = isoNow(this.ctx);
      const machine: MachineRecord = {
        id: newMachineId(),
        appId: app.id,
        name,
        region,
        hostId: this.ctx.hostId,
        state: 'created',
        instanceId: newUlid(),
        config,
        imageRef: null,
        ...allocateSixPn(tx, app, this.ctx.hostId),
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
      this.#event(tx, machine, 'launch', 'created', 'user');
      if (launch && !this.ctx.runtime) {
        this.#event(tx, machine, 'start', 'failed', 'hangar', { error: NO_RUNTIME_MESSAGE });
      }
      if (app.status === 'pending') tx.apps.update({ ...app, status: 'deployed', updatedAt: now });
      const lease =
        leaseTtlSec === undefined ? undefined : this.#newLease(tx, machine, principal, leaseTtlSec, '');
      return { ...this.#view(tx, machine), ...(lease ? { nonce: lease.nonce } : {}) };
    });
    if (launch && this.ctx.runtime) {
      void this.#queue.run(view.machine.id, () => this.#boot(view.machine.id)).catch(() => undefined);
    }
    return view;
  }

  /** Full config replacement (no partial updates); a started machine reboots into the new version. */
  async update(
    principal: Principal,
    appName: string,
    machineId: string,
    input: UpdateMachineInput,
    nonce: string | undefined,
  ): Promise<MachineView> {
    const config = normalizeMachineConfig(input.config) as JsonObject;
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
      const wasRunning = machine.state === 'started';
      // A suspended machine's frozen workload belongs to the old version: it goes too.
      if (wasRunning || machine.state === 'suspended') await this.#stopWorkload(machine, 'update');
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
          state: current.state === 'suspended' || wasRunning ? 'stopped' : current.state,
          updatedAt: now,
        };
        attachVolume(tx, tx.apps.get(app.id)!, next, current);
        tx.machines.update(next);
        tx.machineVersions.insert({ machineId: next.id, version: next.instanceId, config, createdAt: now });
        this.#event(tx, next, 'update', next.state, 'user', { version: next.instanceId });
        return next;
      });
      if (wasRunning && !input.skipLaunch) await this.#boot(updated.id);
      return this.ctx.store.read((tx) => this.#view(tx, tx.machines.get(updated.id)!));
    });
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
        this.#requireRuntime();
        await this.#boot(machine.id);
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
          await this.#setState(machine.id, 'stopped', 'stop', 'user');
          return;
        }
        await this.#stopWorkload(machine, 'stop', options.signal, timeoutMs);
        await this.#setState(machine.id, 'stopped', 'stop', 'user');
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
        const runtime = this.#requireRuntime();
        await this.#setState(machine.id, 'suspending', 'suspend', 'user');
        try {
          await runtime.suspend(machine.id);
        } catch (error) {
          await this.#setState(machine.id, 'started', 'suspend', 'hangar', {
            error: (error as Error).message,
          });
          throw error;
        }
        await this.#setState(machine.id, 'suspended', 'suspend', 'user');
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
    await this.#mutate(principal, appName, machineId, 'restart', nonce, async ({ machine }) => {
      await this.#stopWorkload(machine, 'restart', options.signal, options.timeoutMs);
      await this.#setState(machine.id, 'stopped', 'restart', 'user');
      await this.#boot(machine.id);
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
      await this.#requireRuntime().signal(machine.id, signal);
      await this.ctx.store.write((tx) => this.#event(tx, machine, 'signal', signal, 'user'));
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
      async ({ machine }) => this.#destroyOne(machine),
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
        this.#event(tx, current, cordoned ? 'cordon' : 'uncordon', current.state, 'user');
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
        if (current && current.state !== 'destroyed') await this.#destroyOne(current);
      });
    }
  }

  // ---- wait --------------------------------------------------------------------------------------

  /**
   * Long-polls until the machine is in one of `states` (and at `version`, when given). Answers at once
   * with a terminal error when the state can no longer be reached, instead of hanging until the timeout.
   */
  async wait(
    principal: Principal,
    appName: string,
    machineId: string,
    input: WaitInput,
    abort?: AbortSignal,
  ): Promise<void> {
    const { id } = await this.ctx.store.read((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'read'), machineId);
      if (input.version !== undefined && !tx.machineVersions.get(`${machine.id}/${input.version}`)) {
        throw new HangarError('not_found', `machine ${machine.id} has no version ${input.version}`);
      }
      return machine;
    });
    return new Promise<void>((resolve, reject) => {
      let finished = false;
      const finish = (error?: Error) => {
        if (finished) return;
        finished = true;
        this.#waits.delete(finish);
        clearTimeout(timer);
        unwatch();
        abort?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve();
      };
      const check = (machine: MachineRecord | undefined) => {
        if (!machine) return finish(new HangarError('not_found', `machine ${id} was deleted`));
        const outcome = waitOutcome(machine, input, this.ctx.runtime !== undefined);
        if (outcome === 'done') finish();
        else if (outcome instanceof HangarError) finish(outcome);
        else if (outcome === 'failed') {
          void this.ctx.store
            .read((tx) => tx.machineEvents.list({ machineId: id }, { newestFirst: true, limit: 1 })[0])
            .then((event) => {
              const reason = (event?.request as { error?: string } | undefined)?.error ?? 'see its events';
              finish(
                failedPrecondition(`machine ${id} failed: ${reason}; fix the cause, then start it again`),
              );
            });
        }
      };
      const onAbort = () => finish(new HangarError('deadline_exceeded', 'the client went away'));
      const timer = setTimeout(() => {
        void this.ctx.store
          .read((tx) => tx.machines.get(id))
          .then((m) =>
            finish(
              new HangarError(
                'deadline_exceeded',
                `machine failed to reach desired state, ${input.states.join('/')}, currently ${m?.state ?? 'deleted'}`,
              ),
            ),
          );
      }, input.timeoutMs);
      const unwatch = this.ctx.store.watch((batch) => {
        for (const change of batch.changes) {
          if (change.collection === 'machines' && change.key === id)
            check(change.doc as MachineRecord | undefined);
        }
      });
      abort?.addEventListener('abort', onAbort);
      this.#waits.add(finish);
      // Read after subscribing, so a change between the two cannot be missed.
      void this.ctx.store.read((tx) => tx.machines.get(id)).then(check, (error: Error) => finish(error));
    });
  }

  // ---- leases ------------------------------------------------------------------------------------

  async acquireLease(
    principal: Principal,
    appName: string,
    machineId: string,
    input: { ttlSec?: number; description?: string; nonce?: string },
  ): Promise<LeaseRecord> {
    const ttlSec = checkLeaseTtl(input.ttlSec ?? 30, 'ttl')!;
    return this.ctx.store.write((tx) => {
      const machine = findLiveMachine(tx, appFor(tx, principal, appName, 'write'), machineId);
      const current = activeLease(tx, machine.id, this.ctx.now());
      if (current && current.nonce !== input.nonce) {
        throw leaseHeld(current);
      }
      if (current) {
        // Refresh: same nonce, new expiry.
        const refreshed = { ...current, expiresAt: nowSec(this.ctx) + ttlSec, version: machine.instanceId };
        tx.leases.update(refreshed);
        return refreshed;
      }
      return this.#newLease(tx, machine, principal, ttlSec, input.description ?? '');
    });
  }

  async getLease(principal: Principal, appName: string, machineId: string): Promise<LeaseRecord> {
    return this.ctx.store.read((tx) => {
      const machine = findMachine(tx, appFor(tx, principal, appName, 'read'), machineId);
      const lease = activeLease(tx, machine.id, this.ctx.now());
      if (!lease) throw new HangarError('not_found', `machine ${machine.id} has no active lease`);
      return lease;
    });
  }

  /** Idempotent: releasing a lease that already expired or was released succeeds (pain point §9.12). */
  async releaseLease(
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
      const metadata = { ...((machine.config.metadata as Record<string, string> | undefined) ?? {}) };
      for (const [key, value] of Object.entries(changes)) {
        if (value === null || value === '') delete metadata[key];
        else metadata[key] = value;
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
    return this.#requireRuntime().exec(machine.id, request);
  }

  async ps(principal: Principal, appName: string, machineId: string): Promise<ProcessStat[]> {
    const machine = await this.#startedMachine(principal, appName, machineId, 'read');
    return this.#requireRuntime().ps(machine.id);
  }

  /** Ends open waits (clients retry them) and waits for queued work: the first step of shutdown. */
  async close(): Promise<void> {
    this.#closing.abort();
    for (const finish of [...this.#waits]) {
      finish(new HangarError('unavailable', 'hangard is shutting down; retry the wait'));
    }
    await this.#queue.drain();
  }

  // ---- internals ---------------------------------------------------------------------------------

  async #startedMachine(principal: Principal, appName: string, machineId: string, access: 'read' | 'write') {
    const machine = await this.ctx.store.read((tx) =>
      findMachine(tx, appFor(tx, principal, appName, access), machineId),
    );
    this.#requireRuntime();
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

  /** Boots the current version: prepare the image, start the workload, record each step. */
  async #boot(machineId: string): Promise<void> {
    const runtime = this.#requireRuntime();
    const { machine, spec, wasSuspended } = await this.ctx.store.write((tx) => {
      const current = tx.machines.get(machineId)!;
      const app = tx.apps.get(current.appId)!;
      tx.machines.update({ ...current, state: 'starting', updatedAt: isoNow(this.ctx) });
      return {
        machine: current,
        spec: this.#spec(tx, app, current),
        wasSuspended: current.state === 'suspended',
      };
    });
    await this.#orFail(machineId, 'start', async () => {
      try {
        if (wasSuspended) return await runtime.resume(machine.id);
        const imageRef = await runtime.prepare(spec);
        if (imageRef.digest !== machine.imageRef?.digest) {
          await this.ctx.store.write((tx) =>
            tx.machines.update({ ...tx.machines.get(machineId)!, imageRef }),
          );
        }
        await runtime.start(spec);
      } catch (error) {
        // A boot that fails for the machine's own reasons (its command, its image) is the caller's to fix.
        if (HangarError.is(error)) throw error;
        throw failedPrecondition(`machine ${machineId} failed to start: ${(error as Error).message}`);
      }
    });
    await this.#setState(machineId, 'started', 'start', 'flyd');
  }

  async #stopWorkload(
    machine: MachineRecord,
    reason: string,
    signal?: string,
    timeoutMs?: number,
  ): Promise<void> {
    const runtime = this.#requireRuntime();
    const stopConfig =
      (machine.config.stop_config as { signal?: string; timeout?: unknown } | undefined) ?? {};
    await this.#setState(machine.id, 'stopping', reason, 'user');
    const exit = await this.#orFail(machine.id, reason, () =>
      runtime.stop(machine.id, {
        // Unset, the runtime uses the image's STOPSIGNAL, else Fly's default.
        signal: signal ?? stopConfig.signal,
        timeoutMs:
          timeoutMs ??
          (stopConfig.timeout === undefined
            ? DEFAULT_STOP_TIMEOUT_MS
            : durationToMs(stopConfig.timeout, 'stop_config.timeout')),
      }),
    );
    await this.ctx.store.write((tx) =>
      this.#event(tx, machine, 'exit', 'stopped', 'flyd', {
        exit_event: {
          exit_code: exit.exitCode,
          signal: exit.signal,
          oom_killed: exit.oomKilled,
          requested_stop: exit.requestedStop,
          exited_at: new Date(exit.exitedAt).toISOString(),
        },
      }),
    );
  }

  async #destroyOne(machine: MachineRecord): Promise<void> {
    // The runtime's destroy is idempotent: it also cleans up after a machine that never booted.
    if (this.ctx.runtime) {
      const runtime = this.ctx.runtime;
      await this.#setState(machine.id, 'destroying', 'destroy', 'user');
      await this.#orFail(machine.id, 'destroy', () => runtime.destroy(machine.id));
    }
    await this.ctx.store.write((tx) => {
      const current = tx.machines.get(machine.id)!;
      const destroyed: MachineRecord = { ...current, state: 'destroyed', updatedAt: isoNow(this.ctx) };
      tx.machines.update(destroyed);
      for (const volume of tx.volumes.list({ attachedMachineId: machine.id })) {
        tx.volumes.update({ ...volume, attachedMachineId: null });
      }
      tx.leases.delete(machine.id);
      this.#event(tx, destroyed, 'destroy', 'destroyed', 'user');
    });
  }

  /** Runs a runtime step; if it throws, the machine is marked failed with the reason, never left mid-way. */
  async #orFail<T>(machineId: string, eventType: string, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      await this.#setState(machineId, 'failed', eventType, 'flyd', { error: (error as Error).message });
      throw error;
    }
  }

  async #setState(
    machineId: string,
    state: MachineState,
    eventType: string,
    source: MachineEventRecord['source'],
    request?: JsonObject,
  ): Promise<void> {
    await this.ctx.store.write((tx) => {
      const current = tx.machines.get(machineId)!;
      const next = { ...current, state, updatedAt: isoNow(this.ctx) };
      tx.machines.update(next);
      this.#event(tx, next, eventType, state, source, request);
    });
  }

  #event(
    tx: WriteTx,
    machine: MachineRecord,
    type: string,
    status: string,
    source: MachineEventRecord['source'],
    request?: JsonObject,
  ): void {
    tx.machineEvents.insert({
      id: newUlid(),
      machineId: machine.id,
      type,
      status,
      source,
      timestamp: this.ctx.now(),
      ...(request ? { request } : {}),
    });
  }

  #newLease(
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

  #spec(tx: ReadTx, app: AppRecord, machine: MachineRecord): MachineSpec {
    const secretValue = (name: string) => {
      const secret = tx.secrets.get(`${app.id}/${name}`);
      return secret ? this.ctx.vault.unseal(secret.sealed, `${app.id}/${name}`) : undefined;
    };
    const env: Record<string, string> = {
      ...((machine.config.env as Record<string, string> | undefined) ?? {}),
    };
    if (!machine.skipSecrets) {
      for (const secret of tx.secrets.list({ appId: app.id })) env[secret.name] = secretValue(secret.name)!;
    }
    type FileConfig = { guest_path: string; raw_value?: string; secret_name?: string; mode?: number };
    const files = ((machine.config.files as FileConfig[] | undefined) ?? []).map((file) => {
      const base64 =
        file.raw_value ?? (file.secret_name === undefined ? undefined : secretValue(file.secret_name));
      if (base64 === undefined) {
        throw new Error(
          `files: ${file.guest_path} needs secret ${file.secret_name}, which app ${app.name} does not have`,
        );
      }
      return { guestPath: file.guest_path, content: Buffer.from(base64, 'base64'), mode: file.mode ?? 0o644 };
    });
    const mounts = ((machine.config.mounts as { volume: string; path: string }[] | undefined) ?? []).map(
      (m) => ({
        volumeId: m.volume,
        path: m.path,
      }),
    );
    return {
      machineId: machine.id,
      appName: app.name,
      region: machine.region,
      version: machine.instanceId,
      image: pinnedImage(machine),
      config: machine.config,
      env,
      privateIp: machine.privateIp,
      network:
        machine.machineNumber === undefined
          ? null
          : { networkId: app.networkId, machineNumber: machine.machineNumber },
      uidMapping: uidRangeForApp(app.internalNumericId),
      mounts,
      files,
    };
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

export interface MachineView {
  machine: MachineRecord;
  events: MachineEventRecord[];
  /** Only on create with lease_ttl. */
  nonce?: string;
}

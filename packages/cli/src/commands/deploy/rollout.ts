// Puts a new version on an app's machines, per process group and per strategy (fly-semantics §8.1):
//   rolling    max_unavailable machines at a time, each waited for (started + checks) before the next;
//   immediate  every machine at once, no health wait;
//   canary     one extra machine of the new version first, verified and removed, then rolling;
//   bluegreen  a new (cordoned) twin for every machine, verified, then traffic moves and the old go.
// Groups without machines get new ones (first deploy). Every change is recorded, so that when a new
// version fails, each machine goes back to the config (and state) it had, and new machines are removed.
// Stopped and suspended machines are booted once with the new version, checked, and put back to sleep:
// a broken version shows up now, not at the first request after the deploy.

import type { Machine, MachineConfig, MachinesClient, Volume } from '@hangar/sdk';
import { isMachinesApiError } from '@hangar/sdk';
import { CliError } from '../../errors.js';
import {
  type AppConfig,
  type DeployStrategy,
  METADATA,
  RELEASE_COMMAND_GROUP,
} from '../../fly-toml/index.js';
import { LeaseKeeper } from './leases.js';
import { waitHealthy } from './verify.js';

export interface RolloutPlan {
  app: string;
  appConfig: AppConfig;
  configs: Map<string, MachineConfig>;
  strategy: DeployStrategy;
  maxUnavailable: number;
  waitTimeoutMs: number;
  /** Two machines per group with services on a first deploy (one when the group mounts a volume). */
  ha: boolean;
  region?: string;
  progress(line: string): void;
}

export type MachineAction = 'created' | 'updated' | 'replaced' | 'destroyed';

export interface MachineOutcome {
  id: string;
  group: string;
  action: MachineAction;
  state: string;
  version: string;
  /** For machines that were not running: booted once with the new version and checked. */
  verified?: boolean;
}

export interface RolloutResult {
  machines: MachineOutcome[];
  firstDeploy: boolean;
}

/** Raised when the new version failed and what was changed has been rolled back. */
export class RolledBackError extends CliError {
  constructor(message: string, hint: string) {
    super(message, hint);
    this.name = 'RolledBackError';
  }
}

type Change =
  | { kind: 'updated'; before: Machine }
  | { kind: 'created'; id: string }
  | { kind: 'volume'; id: string };

const IMMEDIATE_CONCURRENCY = 8;
/** States a machine rests in; the others are on the way somewhere. */
const SETTLED_STATES = new Set(['created', 'started', 'stopped', 'suspended', 'failed', 'destroyed']);
const SETTLE_TIMEOUT_MS = 60_000;

export function groupOf(m: Machine): string {
  return m.config?.metadata?.[METADATA.processGroup] ?? 'app';
}

function label(m: Pick<Machine, 'id'>, group: string): string {
  return `Machine ${m.id} [${group}]`;
}

/** Runs `work` over `items`, at most `limit` at a time; the first failure is thrown once all settled. */
async function inBatches<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += limit) {
    const results = await Promise.allSettled(items.slice(i, i + limit).map(work));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}

export class Rollout {
  readonly #changes: Change[] = [];
  readonly #outcomes: MachineOutcome[] = [];
  readonly #leases: LeaseKeeper;

  constructor(
    private readonly client: MachinesClient,
    private readonly plan: RolloutPlan,
  ) {
    this.#leases = new LeaseKeeper(client, plan.app);
  }

  async run(): Promise<RolloutResult> {
    const { app, configs, progress } = this.plan;
    const existing = (await this.client.machines.list(app)).filter(
      (m) => m.state !== 'destroyed' && m.state !== 'destroying' && groupOf(m) !== RELEASE_COMMAND_GROUP,
    );
    const firstDeploy = existing.length === 0;
    const byGroup = new Map<string, Machine[]>();
    for (const m of existing) byGroup.set(groupOf(m), [...(byGroup.get(groupOf(m)) ?? []), m]);
    const removedGroups = [...byGroup.keys()].filter((g) => !configs.has(g));

    try {
      await this.#leases.acquire(existing.map((m) => m.id));
      for (const [group, config] of configs) {
        const machines = byGroup.get(group) ?? [];
        if (machines.length === 0) {
          await this.#createGroup(group, config);
          continue;
        }
        progress(
          `Updating ${machines.length} machine${machines.length === 1 ? '' : 's'} of group ${group} (${this.plan.strategy})`,
        );
        await this.#updateGroup(group, config, machines);
      }
    } catch (err) {
      if (this.#changes.length === 0) throw err;
      const reason = err instanceof Error ? err.message : String(err);
      const undone = await this.#rollback(reason);
      throw new RolledBackError(
        `deploy failed: ${reason}. ${undone}`,
        `see the machine's output with \`hangar machine logs ID -a ${app}\`; fix and deploy again`,
      );
    } finally {
      await this.#leases.releaseAll();
    }

    for (const group of removedGroups) {
      for (const m of byGroup.get(group) ?? []) {
        progress(`${label(m, group)}: process group ${group} is no longer in fly.toml, destroying it`);
        await this.client.machines.destroy(app, m.id, { force: true });
        this.#outcomes.push({
          id: m.id,
          group,
          action: 'destroyed',
          state: 'destroyed',
          version: m.instance_id,
        });
      }
    }
    return { machines: this.#outcomes, firstDeploy };
  }

  // ---- creating --------------------------------------------------------------------------------

  async #createGroup(group: string, config: MachineConfig): Promise<void> {
    const mount = config.mounts?.[0];
    const count = this.plan.ha && config.services?.length && !mount ? 2 : 1;
    this.plan.progress(`Creating ${count} machine${count === 1 ? '' : 's'} for group ${group}`);
    for (let i = 0; i < count; i++) {
      const withVolume = mount ? await this.#volumeFor(group, config) : config;
      await this.#createMachine(group, withVolume);
    }
  }

  /** An unattached volume of the mount's name, else a new one (fly-semantics §7). */
  async #volumeFor(group: string, config: MachineConfig): Promise<MachineConfig> {
    const mount = config.mounts?.[0];
    if (!mount?.name) return config;
    const volumes: Volume[] = await this.client.volumes.list(this.plan.app);
    let volume = volumes.find(
      (v) => v.name === mount.name && v.state === 'created' && !v.attached_machine_id,
    );
    if (volume) {
      this.plan.progress(`Using volume ${volume.id} (${volume.name}) for group ${group}`);
    } else {
      const declared = this.plan.appConfig.mounts.find((m) => m.source === mount.name);
      volume = await this.client.volumes.create(this.plan.app, {
        name: mount.name,
        size_gb: declared?.initialSizeGb ?? 1,
        region: this.plan.region,
        ...(declared?.snapshotRetention ? { snapshot_retention: declared.snapshotRetention } : {}),
      });
      this.#changes.push({ kind: 'volume', id: volume.id });
      this.plan.progress(
        `Created volume ${volume.id} (${volume.name}, ${volume.size_gb} GB) for group ${group}`,
      );
    }
    return { ...config, mounts: [{ ...mount, volume: volume.id }] };
  }

  async #createMachine(
    group: string,
    config: MachineConfig,
    extra: { cordoned?: boolean } = {},
  ): Promise<Machine> {
    const since = Date.now();
    const machine = await this.client.machines.launch(this.plan.app, {
      config,
      region: this.plan.region,
      ...(extra.cordoned ? { skip_service_registration: true } : {}),
    });
    this.#changes.push({ kind: 'created', id: machine.id });
    this.plan.progress(`${label(machine, group)} created`);
    await this.#verify(machine, group, machine.instance_id, config, since);
    this.#outcomes.push({
      id: machine.id,
      group,
      action: 'created',
      state: 'started',
      version: machine.instance_id,
    });
    return machine;
  }

  // ---- updating --------------------------------------------------------------------------------

  async #updateGroup(group: string, config: MachineConfig, machines: Machine[]): Promise<void> {
    const { strategy } = this.plan;
    if (strategy === 'bluegreen') return this.#bluegreen(group, config, machines);
    if (strategy === 'canary') {
      this.plan.progress(`Booting a canary machine for group ${group}`);
      const canary = await this.#createMachine(group, config);
      this.plan.progress(`${label(canary, group)}: canary healthy, removing it`);
      await this.client.machines.destroy(this.plan.app, canary.id, { force: true });
      this.#outcomes.pop();
    }
    if (strategy === 'immediate') {
      await inBatches(machines, IMMEDIATE_CONCURRENCY, (m) => this.#updateMachine(group, m, config, false));
      return;
    }
    const { maxUnavailable } = this.plan;
    const batch =
      maxUnavailable >= 1 ? maxUnavailable : Math.max(1, Math.ceil(maxUnavailable * machines.length));
    await inBatches(machines, batch, (m) => this.#updateMachine(group, m, config, true));
  }

  /** The new config for one machine: its volume stays its own. */
  #configFor(m: Machine, config: MachineConfig): MachineConfig {
    const volume = m.config?.mounts?.[0]?.volume;
    const mount = config.mounts?.[0];
    if (!mount) return config;
    return { ...config, mounts: [{ ...mount, ...(volume ? { volume } : {}) }] };
  }

  async #updateMachine(group: string, m: Machine, newConfig: MachineConfig, verify: boolean): Promise<void> {
    const { app, progress } = this.plan;
    const nonce = this.#leases.nonce(m.id);
    const config = this.#configFor(m, newConfig);
    const wasRunning = m.state === 'started';
    const since = Date.now();
    progress(`${label(m, group)} updating (was ${m.state})`);
    this.#changes.push({ kind: 'updated', before: m });
    const updated = await this.client.machines.update(
      app,
      m.id,
      { config, current_version: m.instance_id, skip_launch: !wasRunning },
      { nonce },
    );
    const version = updated.instance_id;
    if (wasRunning) {
      if (verify) await this.#verify(m, group, version, config, since);
      this.#outcomes.push({ id: m.id, group, action: 'updated', state: 'started', version });
      return;
    }
    if (!verify) {
      progress(`${label(m, group)} updated, left ${updated.state}`);
      this.#outcomes.push({ id: m.id, group, action: 'updated', state: updated.state, version });
      return;
    }
    // Not running before: boot the new version once, check it, then put the machine back to sleep. An
    // update answers before a suspended machine's old workload is gone: wait until it has settled.
    await this.#settle(m.id);
    await this.#startWhenReady(m.id, nonce);
    await this.#verify(m, group, version, config, since);
    const back = m.state === 'suspended' ? 'suspended' : 'stopped';
    if (back === 'suspended') await this.client.machines.suspend(app, m.id, { nonce });
    else await this.client.machines.stop(app, m.id, {}, { nonce });
    await this.client.waitForState(app, m.id, back, { timeoutMs: this.plan.waitTimeoutMs, version });
    progress(`${label(m, group)} new version verified, ${back} again as before the deploy`);
    this.#outcomes.push({ id: m.id, group, action: 'updated', state: back, version, verified: true });
  }

  /** Waits until the machine is in a state that takes a start or an update (not stopping, replacing...). */
  async #settle(id: string): Promise<Machine> {
    const deadline = Date.now() + SETTLE_TIMEOUT_MS;
    for (;;) {
      const m = await this.client.machines.get(this.plan.app, id);
      if (SETTLED_STATES.has(m.state) || Date.now() > deadline) return m;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** `start` right after an update may meet the machine still settling (412); try again briefly. */
  async #startWhenReady(id: string, nonce: string | undefined): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.machines.start(this.plan.app, id, { nonce });
        return;
      } catch (err) {
        if (!isMachinesApiError(err) || err.status !== 412 || attempt >= 60) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async #bluegreen(group: string, config: MachineConfig, blues: Machine[]): Promise<void> {
    const { app, progress } = this.plan;
    if (!config.services?.some((s) => s.checks?.length) && !Object.keys(config.checks ?? {}).length) {
      throw new CliError(
        `the bluegreen strategy needs at least one health check for group ${group}`,
        'add [[http_service.checks]] (or [checks]) to fly.toml, or use the rolling strategy',
      );
    }
    const greens: Machine[] = [];
    for (const blue of blues) {
      progress(`Creating a green twin of ${blue.id} (cordoned until verified)`);
      greens.push(await this.#createMachine(group, config, { cordoned: true }));
    }
    for (const green of greens) await this.client.machines.uncordon(app, green.id);
    progress(
      `Group ${group}: ${greens.length} green machine${greens.length === 1 ? '' : 's'} now take traffic`,
    );
    for (const blue of blues) {
      await this.client.machines.destroy(
        app,
        blue.id,
        { force: true },
        { nonce: this.#leases.nonce(blue.id) },
      );
      this.#leases.forget(blue.id);
      this.#outcomes.push({
        id: blue.id,
        group,
        action: 'destroyed',
        state: 'destroyed',
        version: blue.instance_id,
      });
    }
    // Greens of machines that were asleep go to sleep too.
    for (const [i, blue] of blues.entries()) {
      const green = greens[i];
      if (!green || blue.state === 'started') continue;
      await this.client.machines.stop(app, green.id);
      const outcome = this.#outcomes.find((o) => o.id === green.id);
      if (outcome) outcome.state = 'stopped';
    }
  }

  async #verify(
    m: Pick<Machine, 'id'>,
    group: string,
    version: string,
    config: MachineConfig,
    since: number,
  ) {
    await waitHealthy(this.client, this.plan.app, m, version, config, {
      deadline: Date.now() + this.plan.waitTimeoutMs,
      since,
      label: label(m, group),
      progress: this.plan.progress,
    });
  }

  // ---- rolling back ----------------------------------------------------------------------------

  /** Undoes every change, newest first, and says what was done. Never throws. */
  async #rollback(reason: string): Promise<string> {
    const { app, progress } = this.plan;
    if (this.#changes.length === 0) return 'Nothing had been changed.';
    progress(`Rolling back: ${reason}`);
    let restored = 0;
    let removed = 0;
    const problems: string[] = [];
    for (const change of [...this.#changes].reverse()) {
      try {
        if (change.kind === 'created') {
          await this.client.machines.destroy(app, change.id, { force: true });
          await this.client
            .waitForState(app, change.id, 'destroyed', { timeoutMs: 60_000 })
            .catch(() => undefined);
          progress(`  machine ${change.id} (new) destroyed`);
          removed++;
        } else if (change.kind === 'volume') {
          await this.client.volumes.destroy(app, change.id);
          progress(`  volume ${change.id} (new) destroyed`);
        } else {
          const before = change.before;
          if (!before.config) continue;
          const nonce = this.#leases.nonce(before.id);
          const current = await this.#settle(before.id);
          const wasRunning = before.state === 'started';
          const back = await this.client.machines.update(
            app,
            before.id,
            { config: before.config, current_version: current.instance_id, skip_launch: !wasRunning },
            { nonce },
          );
          if (wasRunning) {
            await this.client.waitForState(app, before.id, 'started', {
              timeoutMs: 120_000,
              version: back.instance_id,
            });
          }
          const state = wasRunning ? 'started' : 'stopped';
          progress(`  machine ${before.id} back on its previous config (${state})`);
          restored++;
        }
      } catch (err) {
        problems.push(
          `${change.kind === 'updated' ? change.before.id : change.id}: ${(err as Error).message}`,
        );
      }
    }
    this.#outcomes.length = 0;
    const parts: string[] = [];
    if (restored)
      parts.push(`${restored} machine${restored === 1 ? '' : 's'} rolled back to the previous version`);
    if (removed) parts.push(`${removed} new machine${removed === 1 ? '' : 's'} removed`);
    let text = `${parts.join(', ') || 'Nothing needed undoing'}.`;
    const hadPrevious = this.#changes.some((c) => c.kind === 'updated');
    if (problems.length) text += ` Could not undo everything: ${problems.join('; ')}.`;
    else
      text += hadPrevious
        ? ' The previous version is still serving.'
        : ' Nothing was serving before this deploy.';
    return text.charAt(0).toUpperCase() + text.slice(1);
  }
}

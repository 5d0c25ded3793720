import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, type FSWatcher, constants as fsConstants, watch } from 'node:fs';
import {
  chmod,
  chown,
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  realpath,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { crashPoint } from '../shared/crash-points.js';
import { HangarError } from '../shared/errors.js';
import { MACHINE_DEFAULTS } from '../shared/machine-config.js';
import { runChecked, runCommand, startSession } from '../shared/run.js';
import { signalName, signalOfNumber } from '../shared/signals.js';
import { netnsName, netnsPath } from '../sixpn/netns.js';
import { MACHINE_RESOLV_CONF } from '../sixpn/resolver.js';
import type { ImageRefRecord } from '../store/records.js';
import { followLines, LOG_WRITER, readTail, rotateIfLarge, tailLines } from './machine-logs.js';
import { ensureMachineNamespaces, removeMachineNamespaces, usernsPath } from './machine-namespaces.js';
import { containerId, machineIdOf, machinePaths } from './machine-paths.js';
import { buildOciConfig, resolveCommand, resolveUser } from './oci/bundle.js';
import { containerCgroupPath, type MachineCgroups } from './oci/cgroups.js';
import { CompiledSeccomp } from './oci/compiled-seccomp.js';
import { INIT_BINARY } from './oci/detect.js';
import type { OciCli } from './oci/oci-cli.js';
import { defaultSeccompProfile } from './oci/seccomp.js';
import { processStats } from './process-info.js';
import { readImageTable } from './rootfs-files.js';
import type {
  ConsoleRequest,
  ConsoleSession,
  ExecRequest,
  ExecResult,
  ExitInfo,
  MachineRuntime,
  MachineSpec,
  NetworkAttacher,
  ProcessStat,
  RecoveredMachine,
} from './runtime.js';
import type { UidMapping } from './uid-range.js';

/** What the runtime needs of the image store (runtime/images). */
export interface ImageSource {
  prepare(
    reference: string,
    mapping: UidMapping,
    signal?: AbortSignal,
  ): Promise<{
    ref: ImageRefRecord;
    config: {
      entrypoint: string[];
      cmd: string[];
      env: Record<string, string>;
      workingDir: string;
      user: string;
      stopSignal: string | undefined;
    };
    rootfs: string;
  }>;
  admitImage?(reference: string, mapping: UidMapping, signal?: AbortSignal): Promise<void>;
}

/** What the runtime needs of volume storage (runtime/volumes). */
export interface VolumeMounter {
  mount(volumeId: string): Promise<string>;
  unmount(volumeId: string): Promise<void>;
}

export interface LinuxRuntimeOptions {
  dataDir: string;
  cli: OciCli;
  cgroups: MachineCgroups;
  images: ImageSource;
  volumes: VolumeMounter | undefined;
  /** Private networking; without it a machine's namespace has only its loopback. */
  network?: NetworkAttacher | undefined;
  /** A machine's log files together stay under this many bytes (each file half of it). */
  logMaxBytes?: number;
  pidsLimit?: number;
}

type Prepared = Awaited<ReturnType<ImageSource['prepare']>>;

/** What a boot's root filesystem and cgroup are made for: the image's rootfs, the memory, the owner. */
interface BootBase {
  lower: string;
  memoryBytes: number;
  owner: number;
}

interface Running {
  watcher: FSWatcher | undefined;
  /** Set while stop()/destroy() waits for the exit it caused. */
  expected?: { resolve: (exit: ExitInfo) => void; killSent: boolean };
  handled: boolean;
}

/**
 * The shim: runs the container in the foreground with its stdout and stderr piped into the log writer
 * (machine-logs.ts), then, once the writer has written the last line, records the exit status where
 * hangard finds it.
 */
const SHIM =
  'exit_file=$1; log=$2; half=$3; shift 3; ' +
  `{ "$@"; echo "$?" > "$exit_file.tmp"; } 2>&1 | { ${LOG_WRITER}; }; ` +
  'mv "$exit_file.tmp" "$exit_file"';
/** The default of a machine's log cap (its two log files together). */
export const DEFAULT_LOG_MAX_BYTES = 2 * 1024 * 1024;
const START_TIMEOUT_MS = 30_000;
/** exec answers carry the output in the response body: keep it bounded. */
const EXEC_OUTPUT_MAX_BYTES = 1024 * 1024;

/**
 * Machines as OCI containers on this Linux host. Each boot is a fresh overlay of the machine's image
 * (shared, unpacked once per app) with an empty upper layer; the container runs in its own pid,
 * mount, ipc, uts and cgroup namespaces and in the machine's user and network namespaces (kept across
 * boots, machine-namespaces.ts), under tini as PID 1.
 * The container is started by a detached shim, so it keeps running while hangard restarts; its exit
 * status lands in a file that a restarted hangard still finds.
 */
export class LinuxRuntime implements MachineRuntime {
  readonly name: string;
  readonly #options: LinuxRuntimeOptions;
  readonly #prepared = new Map<string, Prepared>();
  readonly #running = new Map<string, Running>();
  readonly #exitListeners: ((machineId: string, exit: ExitInfo) => void)[] = [];
  /** The seccomp program crun compiled for the machines' profile, handed to later boots. */
  readonly #compiledSeccomp = new CompiledSeccomp();
  /** What each machine's last boot here ran on: what its next boot's base is made ready for. */
  readonly #lastBoot = new Map<string, BootBase>();
  /** A base being made ready for a machine's next boot; its boot and its destroy wait for it. */
  readonly #nextBoot = new Map<string, Promise<void>>();
  /** Machines whose network namespace this process gave its ping range (kept with the namespace). */
  readonly #pingRangeSet = new Set<string>();
  readonly #housekeeping: NodeJS.Timeout;

  constructor(options: LinuxRuntimeOptions) {
    this.#options = options;
    this.name = options.cli.choice.name;
    // Rotate logs, and catch any exit whose inotify event was missed.
    this.#housekeeping = setInterval(() => void this.#sweep(), 2_000);
    this.#housekeeping.unref();
  }

  get #logMaxBytes(): number {
    return this.#options.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES;
  }

  async admitImage(image: string, mapping: UidMapping): Promise<void> {
    await this.#options.images.admitImage?.(image, mapping);
  }

  async prepare(spec: MachineSpec, signal?: AbortSignal): Promise<ImageRefRecord> {
    const prepared = await this.#options.images.prepare(spec.image, spec.uidMapping, signal);
    this.#prepared.set(spec.machineId, prepared);
    return prepared.ref;
  }

  async start(spec: MachineSpec): Promise<void> {
    const prepared =
      this.#prepared.get(spec.machineId) ?? (await this.#options.images.prepare(spec.image, spec.uidMapping));
    this.#prepared.delete(spec.machineId);
    const id = spec.machineId;
    const paths = machinePaths(this.#options.dataDir, id);
    const owner = spec.uidMapping.hostId;
    const boot: BootBase = { lower: prepared.rootfs, memoryBytes: spec.memoryBytes, owner };
    // A boot after a stop usually finds its root filesystem and cgroup made ready by that stop.
    await this.#nextBoot.get(id);
    if (!(await this.#takeReadyBase(id, boot))) {
      await this.#teardownBoot(id);
      await this.#freshBase(id, boot);
    }
    // This boot's files (secrets among them) are written afresh every time.
    await rm(paths.files, { recursive: true, force: true });
    await mkdir(paths.files);
    // The files are root's alone on the host: no host user may list the dir or open a file in it by its
    // predictable name. The machine still gets them, as bind mounts, which need no way through the
    // source's parent.
    await chmod(paths.files, 0o700);

    const env = this.#environment(spec, prepared);
    const binds = [
      ...(await this.#writeFiles(spec, paths.files, owner)),
      ...(await this.#mountVolumes(spec)),
    ];
    await this.#ensureNamespaces(id, spec.uidMapping);
    if (spec.network && this.#options.network) {
      await this.#options.network.attach(id, netnsName(id), spec.network);
    }
    const seccomp = defaultSeccompProfile();
    const annotations = this.#compiledSeccomp.annotationsFor(seccomp);
    const config = buildOciConfig({
      hostname: id,
      rootfs: paths.rootfs,
      args: resolveCommand(spec.command, prepared.config),
      env,
      cwd: prepared.config.workingDir || '/',
      user: await imageUser(paths.rootfs, prepared.config.user),
      mapping: spec.uidMapping,
      initBinary: INIT_BINARY,
      netnsPath: netnsPath(id),
      usernsPath: usernsPath(id),
      cgroupsPath: containerCgroupPath(id),
      memoryBytes: this.#options.cgroups.mode === 'v2' ? spec.memoryBytes : undefined,
      cpus: spec.cpus,
      pidsLimit: this.#options.pidsLimit ?? 4096,
      binds,
      annotations,
    });
    // 0600: the process spec holds the machine's env, secrets included.
    await writeFile(paths.config, JSON.stringify(config), { mode: 0o600 });
    await writeFile(paths.env, JSON.stringify(env), { mode: 0o600 });
    // The signal stop() sends when its caller names none: the machine's, else the image's, else Fly's default.
    await writeFile(
      paths.stopSignal,
      spec.stopSignal ?? signalName(prepared.config.stopSignal ?? '') ?? MACHINE_DEFAULTS.stopSignal,
    );
    await rm(paths.pid, { force: true });
    await rm(paths.exit, { force: true });
    await this.#launch(id, paths);
    this.#lastBoot.set(id, boot);
    const compiled = this.#options.cli.compiledSeccompFile(containerId(id));
    if (!annotations && compiled) await this.#compiledSeccomp.learn(seccomp, compiled);
  }

  /**
   * What a boot runs on, besides its files: an empty upper layer over the image, mounted, and the
   * machine's cgroup made afresh (so its counters start at zero). Done at boot, or by the previous boot's
   * end for the next one (#prepareNextBoot).
   */
  async #freshBase(machineId: string, boot: BootBase): Promise<void> {
    const paths = machinePaths(this.#options.dataDir, machineId);
    await rm(paths.upper, { recursive: true, force: true });
    await rm(paths.work, { recursive: true, force: true });
    for (const dir of [dirname(paths.dir), paths.dir, paths.rootfs, paths.upper, paths.work]) {
      await mkdir(dir, { recursive: true });
    }
    // Root in the machine is an unprivileged host uid: it may pass through, never list, Hangar's dirs.
    for (const dir of [this.#options.dataDir, dirname(paths.dir), paths.dir]) await chmod(dir, 0o711);
    await chown(paths.upper, boot.owner, boot.owner);
    await runChecked('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${boot.lower},upperdir=${paths.upper},workdir=${paths.work}`,
      paths.rootfs,
    ]);
    await this.#options.cgroups.prepare(machineId, boot.memoryBytes);
  }

  /**
   * After a boot ends and is torn down, the next boot's base is made ready at once, so that a wake after
   * a stop skips the mount and the cgroup. A boot or a destroy that comes meanwhile waits for it. A marker
   * written last says what it was made for; a boot takes it only when it matches and the mount is there.
   * Whatever it finds otherwise (a crash half-way, a host reboot, another image or memory size since) it
   * tears down and makes afresh; destroy tears it down like any boot.
   */
  #prepareNextBoot(machineId: string): Promise<void> {
    const boot = this.#lastBoot.get(machineId);
    const paths = machinePaths(this.#options.dataDir, machineId);
    if (!boot || !existsSync(paths.dir)) return Promise.resolve();
    const work: Promise<void> = (async () => {
      await this.#freshBase(machineId, boot);
      await writeFile(paths.nextBoot, JSON.stringify(boot), { mode: 0o600 });
    })()
      .catch(() => undefined)
      .finally(() => {
        if (this.#nextBoot.get(machineId) === work) this.#nextBoot.delete(machineId);
      });
    this.#nextBoot.set(machineId, work);
    return work;
  }

  /** Takes the base a previous boot's end made ready, if it is for this boot and still in place. */
  async #takeReadyBase(machineId: string, boot: BootBase): Promise<boolean> {
    const paths = machinePaths(this.#options.dataDir, machineId);
    const marker = await readFile(paths.nextBoot, 'utf8').catch(() => undefined);
    if (marker === undefined) return false;
    // Taken once: a boot that fails half-way leaves no marker, and the next one starts afresh.
    await rm(paths.nextBoot, { force: true });
    let made: Partial<BootBase>;
    try {
      made = JSON.parse(marker) as Partial<BootBase>;
    } catch {
      return false;
    }
    return (
      made.lower === boot.lower &&
      made.memoryBytes === boot.memoryBytes &&
      made.owner === boot.owner &&
      !this.#options.cli.hasState(containerId(machineId)) &&
      this.#options.cgroups.exists(machineId) &&
      (await isMountPoint(paths.rootfs))
    );
  }

  /** Starts the shim detached (it outlives hangard, its log writer too) with the container's output going to the log. */
  async #launch(id: string, paths: ReturnType<typeof machinePaths>): Promise<void> {
    // The writer appends; made here with mode 0600 so that the shell never creates it more open.
    await (await open(paths.log, 'a', 0o600)).close();
    const { file, args } = this.#options.cli.runCommandLine(paths.dir, containerId(id), paths.pid);
    const half = String(Math.floor(this.#logMaxBytes / 2));
    const shim = spawn('sh', ['-c', SHIM, 'hangar-shim', paths.exit, paths.log, half, file, ...args], {
      detached: true,
      stdio: 'ignore',
    });
    shim.unref();
    this.#watch(id);
    // Running once the runtime has written the pid file: checked with a stat, not a runtime process.
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (existsSync(paths.exit)) {
        const lines = await tailLines(paths.log, 5);
        await this.#collectExit(id);
        throw new HangarError(
          'failed_precondition',
          `the machine's process exited at once: ${lines.join(' | ') || 'no output'}`,
        );
      }
      if (existsSync(paths.pid)) return;
      if (Date.now() > deadline)
        throw new HangarError('internal', `the container did not start within ${START_TIMEOUT_MS / 1000}s`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  async stop(
    machineId: string,
    options: { signal: string | undefined; timeoutMs: number },
  ): Promise<ExitInfo> {
    const running = this.#running.get(machineId);
    const state = await this.#options.cli.state(containerId(machineId));
    if (!running || !state || state.status === 'stopped') {
      await this.#teardownBoot(machineId);
      return { exitCode: null, signal: null, oomKilled: false, requestedStop: true, exitedAt: Date.now() };
    }
    const exited = new Promise<ExitInfo>((resolve) => {
      running.expected = { resolve, killSent: false };
    });
    // A frozen machine cannot act on a signal: thaw it first (its suspended state is discarded anyway).
    if (state.status === 'paused') await this.#options.cli.resume(containerId(machineId));
    const bootStopSignal = await readFile(
      machinePaths(this.#options.dataDir, machineId).stopSignal,
      'utf8',
    ).catch(() => '');
    await this.#options.cli.kill(
      containerId(machineId),
      options.signal ?? (bootStopSignal.trim() || MACHINE_DEFAULTS.stopSignal),
    );
    const timedOut = Symbol('timeout');
    let timer: NodeJS.Timeout | undefined;
    const first = await Promise.race([
      exited,
      new Promise<typeof timedOut>((resolve) => {
        timer = setTimeout(() => resolve(timedOut), options.timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (first !== timedOut) return first;
    running.expected!.killSent = true;
    await this.#options.cli.kill(containerId(machineId), 'SIGKILL');
    return exited;
  }

  async signal(machineId: string, signal: string): Promise<void> {
    const result = await this.#options.cli.kill(containerId(machineId), signal);
    if (result.code !== 0)
      throw new HangarError('failed_precondition', `sending ${signal} failed: ${result.stderr.trim()}`);
  }

  async suspend(machineId: string): Promise<void> {
    await this.#options.cli.pause(containerId(machineId));
  }

  async resume(machineId: string): Promise<void> {
    // A wake from suspended waits on this: the freezer written directly saves a runtime process.
    if (await this.#options.cgroups.thaw(machineId)) return;
    await this.#options.cli.resume(containerId(machineId));
  }

  /** Removes everything of the machine: container, rootfs, namespace, cgroups, files. Idempotent. */
  async destroy(machineId: string): Promise<void> {
    await this.#nextBoot.get(machineId);
    this.#lastBoot.delete(machineId);
    if (this.#running.has(machineId)) await this.stop(machineId, { signal: 'SIGKILL', timeoutMs: 5_000 });
    else await this.#killUnwatched(machineId);
    await this.#teardownBoot(machineId);
    await removeMachineNamespaces(machineId);
    this.#pingRangeSet.delete(machineId);
    await rm(machinePaths(this.#options.dataDir, machineId).dir, { recursive: true, force: true });
  }

  /**
   * Runs a command as the machine's own process runs: the same user, umask, env, capabilities and
   * no-new-privileges (the boot's process spec with other arguments), so exec is no way around them.
   */
  async exec(machineId: string, request: ExecRequest): Promise<ExecResult> {
    const { spec, pidFile } = await this.#sideProcess(machineId, 'exec', (processSpec) => ({
      ...processSpec,
      args: request.command,
      terminal: false,
    }));
    let result: Awaited<ReturnType<OciCli['exec']>>;
    try {
      result = await this.#options.cli.exec(containerId(machineId), spec, pidFile, {
        timeoutMs: request.timeoutMs,
        maxOutputBytes: EXEC_OUTPUT_MAX_BYTES,
        ...(request.stdin !== undefined ? { stdin: request.stdin } : {}),
      });
    } catch (error) {
      const message = (error as Error).message;
      if (/did not finish within/.test(message)) {
        // Killing the runtime's exec client leaves the command running in the machine: end it too.
        await killByPidFile(pidFile);
        throw new HangarError(
          'deadline_exceeded',
          `the command did not finish within ${request.timeoutMs / 1000}s`,
        );
      }
      if (/maxBuffer/i.test(message)) {
        throw new HangarError(
          'payload_too_large',
          `the command printed more than ${EXEC_OUTPUT_MAX_BYTES / 1024 / 1024} MiB; write large output to a file and read it in parts`,
        );
      }
      throw error;
    } finally {
      await rm(spec, { force: true });
      await rm(pidFile, { force: true });
    }
    const code = result.code ?? 255;
    return {
      exitCode: code,
      exitSignal: code > 128 ? code - 128 : null,
      stdout: result.stdout,
      stderr: result.stderr,
    };
  }

  /**
   * An interactive command, run as exec runs one (the boot's process spec with other arguments). With a
   * terminal the spec asks for one and TERM is set; the runtime then makes the pty inside the machine.
   */
  async console(machineId: string, request: ConsoleRequest): Promise<ConsoleSession> {
    const { spec, pidFile } = await this.#sideProcess(machineId, 'console', (processSpec) => {
      const env = (processSpec.env ?? []).filter((entry) => !entry.startsWith('TERM='));
      if (request.tty) env.push(`TERM=${request.tty.term}`);
      return { ...processSpec, args: request.command, env, terminal: request.tty !== null };
    });
    const line = this.#options.cli.consoleCommandLine(containerId(machineId), spec, pidFile, request.tty);
    const child = startSession(line.file, line.args, line.env);
    const cleanup = async () => {
      await rm(spec, { force: true });
      await rm(pidFile, { force: true });
    };
    const exited = new Promise<number>((resolve) => {
      child.once('error', () => resolve(255));
      child.once('close', (code, signal) =>
        resolve(code ?? 128 + (signal ? (constants.signals[signal] ?? 9) : 9)),
      );
    }).finally(cleanup);
    child.stdin.on('error', () => undefined);
    const terminal = request.tty ? openMachineTerminal(pidFile, exited) : Promise.resolve(undefined);
    void exited.then(async () => (await terminal)?.close());
    return {
      input: child.stdin,
      resize: async (rows, cols) => {
        const handle = await terminal;
        if (!handle) return;
        await runCommand('stty', ['rows', String(rows), 'cols', String(cols)], {
          timeoutMs: 5_000,
          stdinFd: handle.fd,
        }).catch(() => undefined);
      },
      output: child.stdout,
      exited,
      kill: () => {
        // The runtime's exec client going leaves the command in the machine: end it by its pid too.
        void killByPidFile(pidFile).finally(() => child.kill('SIGKILL'));
      },
    };
  }

  /**
   * A command run beside the machine's own (exec, console): the boot's process spec as `adjust` makes
   * it, written 0600 (it holds the machine's env, secrets included), and where the runtime puts its pid.
   * The caller removes both.
   */
  async #sideProcess(
    machineId: string,
    kind: 'exec' | 'console',
    adjust: (processSpec: { env?: string[] }) => Record<string, unknown>,
  ): Promise<{ spec: string; pidFile: string }> {
    const paths = machinePaths(this.#options.dataDir, machineId);
    const boot = JSON.parse(await readFile(paths.config, 'utf8')) as { process: { env?: string[] } };
    const id = randomUUID();
    const spec = join(paths.dir, `${kind}-${id}.json`);
    await writeFile(spec, JSON.stringify(adjust(boot.process)), { mode: 0o600 });
    return { spec, pidFile: join(paths.dir, `${kind}-${id}.pid`) };
  }

  async ps(machineId: string): Promise<ProcessStat[]> {
    return processStats(await this.#options.cli.pids(containerId(machineId)));
  }

  async *logs(
    machineId: string,
    options: { tailLines: number; follow: boolean; signal: AbortSignal },
  ): AsyncIterable<string> {
    const logFile = machinePaths(this.#options.dataDir, machineId).log;
    const tail = await readTail(logFile, options.tailLines);
    for (const line of tail.lines) yield line;
    if (options.follow) yield* followLines(logFile, options.signal, tail.endOffset, tail.inode);
  }

  async recover(known: { machineId: string; state: string }[]): Promise<RecoveredMachine[]> {
    const byId = new Map(known.map((k) => [k.machineId, k.state]));
    const containers = new Map(
      (await this.#options.cli.list()).flatMap((c) => {
        const id = machineIdOf(c.id);
        return id ? [[id, c] as const] : [];
      }),
    );
    const results: RecoveredMachine[] = [];
    for (const [id, container] of containers) {
      const state = byId.get(id);
      if (state === undefined || state === 'destroyed') {
        await this.destroy(id);
        continue;
      }
      if (container.status === 'running' || container.status === 'paused') {
        this.#watch(id);
        results.push({ machineId: id, status: container.status });
      }
    }
    for (const [id, state] of byId) {
      const container = containers.get(id);
      if (container && (container.status === 'running' || container.status === 'paused')) continue;
      // Every state in which a boot may be (or have been) on the host, the in-between ones a crash can
      // leave included: their exit is settled and whatever the boot left (mounts, cgroups) undone.
      if (!BOOTED_STATES.has(state)) continue;
      const paths = machinePaths(this.#options.dataDir, id);
      if (existsSync(paths.exit)) {
        const exit = await this.#readExit(id, false);
        await this.#teardownBoot(id);
        results.push({ machineId: id, status: 'exited', exit });
      } else {
        await this.#teardownBoot(id);
        results.push({ machineId: id, status: 'missing' });
      }
    }
    // Runtime directories of machines the store does not know (a crash between steps) go too.
    for (const entry of await readdir(join(this.#options.dataDir, 'machines')).catch(() => [])) {
      if (!byId.has(entry)) await this.destroy(entry);
    }
    return results;
  }

  onExit(listener: (machineId: string, exit: ExitInfo) => void): void {
    this.#exitListeners.push(listener);
  }

  /** Stops watching; running machines keep running and are re-adopted at the next start. */
  async close(): Promise<void> {
    clearInterval(this.#housekeeping);
    for (const running of this.#running.values()) running.watcher?.close();
    this.#running.clear();
  }

  // ---- internals ---------------------------------------------------------------------------------

  /** The image's env below the platform's (spec.env), and the image reference only known after the pull. */
  #environment(spec: MachineSpec, prepared: Prepared): Record<string, string> {
    const ref = prepared.ref;
    return {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      ...prepared.config.env,
      ...spec.env,
      FLY_IMAGE_REF: `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}@${ref.digest}`,
    };
  }

  /**
   * `config.files` and the machine's /etc/hosts and /etc/resolv.conf are written under the machine's
   * dir and bind-mounted: the OCI runtime resolves their destinations inside the rootfs, so a symlink in
   * the image can never redirect a write to the host.
   */
  async #writeFiles(spec: MachineSpec, dir: string, owner: number) {
    const hosts = `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${spec.machineId}\n${
      spec.privateIp ? `${spec.privateIp}\tfly-local-6pn\n` : ''
    }`;
    const generated = [
      { guestPath: '/etc/hosts', content: Buffer.from(hosts), mode: 0o644 },
      { guestPath: '/etc/resolv.conf', content: Buffer.from(MACHINE_RESOLV_CONF), mode: 0o644 },
    ];
    const binds: { source: string; destination: string; readonly: boolean }[] = [];
    for (const [index, file] of [...generated, ...spec.files].entries()) {
      const source = join(dir, String(index));
      await writeFile(source, file.content, { mode: file.mode });
      await chmod(source, file.mode);
      await chown(source, owner, owner);
      binds.push({ source, destination: file.guestPath, readonly: false });
    }
    return binds;
  }

  async #mountVolumes(spec: MachineSpec) {
    if (spec.mounts.length === 0) return [];
    const volumes = this.#options.volumes;
    if (!volumes)
      throw new HangarError(
        'runtime_unavailable',
        'this host has no volume storage (loop devices as root are needed)',
      );
    // Written ahead of the mounts (and flushed), so that a crash between leaves the list behind: a
    // restarted hangard unmounts what this boot mounted when it tears the boot down (recover()), and a
    // listed volume that was never mounted is simply skipped (unmount is idempotent).
    await writeDurable(
      machinePaths(this.#options.dataDir, spec.machineId).volumes,
      JSON.stringify(spec.mounts.map((m) => m.volumeId)),
    );
    const binds = [];
    for (const mount of spec.mounts) {
      binds.push({ source: await volumes.mount(mount.volumeId), destination: mount.path, readonly: false });
    }
    crashPoint('boot-volumes-mounted');
    return binds;
  }

  /** The machine's user and network namespaces (machine-namespaces.ts), kept across boots. */
  async #ensureNamespaces(machineId: string, mapping: UidMapping): Promise<void> {
    const made = await ensureMachineNamespaces(machineId, mapping);
    // At the first boot of each machine after hangard starts, not only at creation: a namespace made
    // before this setting existed gets it too. Later boots (a wake after a stop) find it set.
    if (!made && this.#pingRangeSet.has(machineId)) return;
    // Root in the machine has raw sockets (CAP_NET_RAW over its own namespace); its other users have
    // ping sockets (ICMP datagrams, what iputils ping uses as a non-root user, for IPv4 and IPv6 alike)
    // when their groups are in this range. Host gids, so all of them.
    await runChecked('nsenter', [`--net=${netnsPath(machineId)}`, '--', 'tee', PING_GROUP_RANGE_FILE], {
      input: PING_GROUP_RANGE_ALL,
    });
    this.#pingRangeSet.add(machineId);
  }

  #watch(machineId: string): void {
    const dir = machinePaths(this.#options.dataDir, machineId).dir;
    const previous = this.#running.get(machineId);
    previous?.watcher?.close();
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dir, (_event, file) => {
        if (file === 'exit') void this.#collectExit(machineId);
      });
    } catch {
      watcher = undefined; // the sweep still notices the exit
    }
    this.#running.set(machineId, { watcher, handled: false });
  }

  /** Handles a container's exit once: reads the status, tears the boot down, tells whoever waits. */
  async #collectExit(machineId: string): Promise<void> {
    const running = this.#running.get(machineId);
    if (!running || running.handled || !existsSync(machinePaths(this.#options.dataDir, machineId).exit))
      return;
    running.handled = true;
    running.watcher?.close();
    const exit = await this.#readExit(
      machineId,
      running.expected !== undefined,
      running.expected?.killSent ?? false,
    );
    this.#running.delete(machineId);
    await this.#teardownBoot(machineId);
    // Before the stop returns: a request that arrives right after it finds the next boot ready.
    await this.#prepareNextBoot(machineId);
    if (running.expected) {
      running.expected.resolve(exit);
      return;
    }
    for (const listener of this.#exitListeners) listener(machineId, exit);
  }

  async #readExit(machineId: string, requestedStop: boolean, killSent = false): Promise<ExitInfo> {
    const text = await readFile(machinePaths(this.#options.dataDir, machineId).exit, 'utf8').catch(() => '');
    const code = Number.parseInt(text, 10);
    const exitCode = Number.isNaN(code) ? null : code;
    // tini reports a program killed by signal N as 128+N.
    const signalNumber = exitCode !== null && exitCode > 128 ? exitCode - 128 : null;
    const killedBySigkill = signalNumber === constants.signals.SIGKILL && !killSent;
    return {
      exitCode,
      signal: signalNumber === null ? null : signalOfNumber(signalNumber),
      oomKilled: await this.#options.cgroups.wasOomKilled(machineId, killedBySigkill),
      requestedStop,
      // When the shim wrote the status, not when hangard noticed (it may have been down meanwhile).
      exitedAt: await stat(machinePaths(this.#options.dataDir, machineId).exit).then(
        (s) => s.mtimeMs,
        () => Date.now(),
      ),
    };
  }

  /**
   * A container that no watcher follows (found at start: a stray, or a machine whose destroy a crash cut
   * short) is killed, and its exit awaited for a bounded time, so that its runtime process (whose mount
   * namespace still holds the boot's volume mounts) is on its way out before the boot is torn down.
   */
  async #killUnwatched(machineId: string): Promise<void> {
    const state = await this.#options.cli.state(containerId(machineId));
    if (!state || state.status === 'stopped') return;
    if (state.status === 'paused')
      await this.#options.cli.resume(containerId(machineId)).catch(() => undefined);
    await this.#options.cli.kill(containerId(machineId), 'SIGKILL');
    const exit = machinePaths(this.#options.dataDir, machineId).exit;
    for (let waited = 0; waited < UNWATCHED_EXIT_WAIT_MS && !existsSync(exit); waited += 50) {
      // Without a shim no exit is written: a stopped container is as far as the wait can see.
      const now = await this.#options.cli.state(containerId(machineId));
      if (!now || now.status === 'stopped') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Undoes one boot: container, rootfs mount, volume mounts, cgroups. Safe to call when nothing is there. */
  async #teardownBoot(machineId: string): Promise<void> {
    const paths = machinePaths(this.#options.dataDir, machineId);
    // Each step only when there is something to undo: every boot starts here, usually with nothing left.
    if (this.#options.cli.hasState(containerId(machineId)))
      await this.#options.cli.delete(containerId(machineId));
    if (await isMountPoint(paths.rootfs)) await runCommand('umount', [paths.rootfs]);
    const volumes = JSON.parse(await readFile(paths.volumes, 'utf8').catch(() => '[]')) as string[];
    for (const volumeId of volumes) await this.#options.volumes?.unmount(volumeId);
    await rm(paths.volumes, { force: true });
    await this.#options.cgroups.remove(machineId);
  }

  async #sweep(): Promise<void> {
    for (const machineId of [...this.#running.keys()]) {
      const paths = machinePaths(this.#options.dataDir, machineId);
      if (existsSync(paths.exit)) await this.#collectExit(machineId);
      // Only a machine started by an older shim (no log writer) can get past the cap.
      else await rotateIfLarge(paths.log, this.#logMaxBytes).catch(() => undefined);
    }
  }
}

/** How long destroy() waits for a container it did not watch to exit after SIGKILL (normally ms). */
const UNWATCHED_EXIT_WAIT_MS = 5_000;

/** Machine states whose boot may still be on the host: recover() settles them when no container runs. */
const BOOTED_STATES = new Set(['started', 'suspended', 'starting', 'stopping', 'suspending', 'replacing']);

const PING_GROUP_RANGE_FILE = '/proc/sys/net/ipv4/ping_group_range';
const PING_GROUP_RANGE_ALL = '0 2147483647';

/**
 * The uid and gid of the image's USER. Its /etc/passwd and /etc/group are the tenant's files: read only
 * inside the rootfs, only as regular files of bounded size (rootfs-files.ts), and only when USER names
 * anyone but root.
 */
async function imageUser(rootfs: string, spec: string): Promise<{ uid: number; gid: number }> {
  if (spec === '' || spec === 'root') return resolveUser(spec, '', '');
  const passwd = await readImageTable(rootfs, '/etc/passwd');
  const group = spec.includes(':') ? await readImageTable(rootfs, '/etc/group') : '';
  return resolveUser(spec, passwd, group);
}

/** Whether `path` is a mount point now (read from /proc/self/mountinfo: no process is started). */
async function isMountPoint(path: string): Promise<boolean> {
  // mountinfo names mount points by their real path: resolve symlinks in the data dir's path first.
  const real = await realpath(path).catch(() => undefined);
  if (real === undefined) return false;
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  // The fifth field is the mount point.
  return mountinfo.split('\n').some((line) => line.split(' ')[4] === real);
}

/** Writes `content` to `path` (mode 0600) and flushes it to disk before returning. */
async function writeDurable(path: string, content: string): Promise<void> {
  const file = await open(path, 'w', 0o600);
  try {
    await file.writeFile(content);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Ends the command whose pid the runtime wrote to `pidFile` (its exec client's end does not); never throws. */
async function killByPidFile(pidFile: string): Promise<void> {
  const pid = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
  if (!(pid > 1)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** Pseudo-terminal slaves are character devices of majors 136 to 143 (Linux's devices.txt). */
const PTY_SLAVE_MAJORS = { first: 136, last: 143 };

/**
 * The machine's side of a console's pty, opened once as soon as the command runs (its pid is in the pid
 * file), so that a resize later never opens a path the command could have pointed elsewhere meanwhile.
 * The runtime does not pass a resize of its own terminal on, so the size is set on this one (`stty`
 * with it as stdin: the kernel sends SIGWINCH to the command). Undefined if it is not a pty slave.
 */
async function openMachineTerminal(
  pidFile: string,
  exited: Promise<number>,
): Promise<FileHandle | undefined> {
  let done = false;
  void exited.then(() => {
    done = true;
  });
  for (let waited = 0; !done && waited < 10_000; waited += 20) {
    const pid = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
    if (pid > 1) {
      const handle = await open(
        `/proc/${pid}/fd/0`,
        fsConstants.O_RDONLY | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK,
      ).catch(() => undefined);
      if (!handle) return undefined;
      const stat = await handle.stat();
      const major = Math.floor(stat.rdev / 256) & 0xfff;
      if (stat.isCharacterDevice() && major >= PTY_SLAVE_MAJORS.first && major <= PTY_SLAVE_MAJORS.last) {
        return handle;
      }
      await handle.close();
      return undefined;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return undefined;
}

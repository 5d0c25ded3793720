import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type CommandResult, runChecked, runCommand } from '../../shared/run.js';

/** Which OCI runtime runs machines here, and how it must be invoked (found by detect.ts). */
export interface OciRuntimeChoice {
  name: 'crun' | 'runc';
  binary: string;
  /**
   * crun refuses hybrid cgroup hosts (cgroup2 mounted beside v1 with a controller on it). Run in a private
   * mount namespace without the cgroup2 mount, it sees plain v1 and works; only create/run need it.
   */
  hideUnifiedCgroup: boolean;
}

export interface ContainerState {
  id: string;
  status: 'created' | 'running' | 'paused' | 'stopped' | string;
  pid: number;
}

/** No runtime command may hang the orchestrator: they answer in milliseconds when healthy. */
const CLI_TIMEOUT = { timeoutMs: 30_000 };

/**
 * The OCI runtime's command line, with Hangar's own state root so that its containers never mix with
 * anyone else's on the host.
 */
export class OciCli {
  constructor(
    readonly choice: OciRuntimeChoice,
    readonly stateRoot: string,
  ) {}

  /**
   * The command that runs a container in the foreground: it exits with the container's exit status, and
   * writes the container's pid to `pidFile` as soon as it runs.
   */
  runCommandLine(bundle: string, id: string, pidFile: string): { file: string; args: string[] } {
    const run = ['--root', this.stateRoot, 'run', '--bundle', bundle, '--pid-file', pidFile, id];
    if (!this.choice.hideUnifiedCgroup) return { file: this.choice.binary, args: run };
    // $0 is the runtime binary and "$@" its arguments: nothing is spliced into the script text.
    return {
      file: 'unshare',
      args: [
        '-m',
        // A slave copy, not a private one: the runtime process lives as long as its machine, and a private
        // copy would pin every mount the host had when it started (another machine's volume, a netns), so
        // that unmounting them on the host frees nothing. Slave receives the host's unmounts; what is
        // mounted or unmounted in here (the hidden cgroup2 mount) still stays in here.
        '--propagation',
        'slave',
        'sh',
        '-c',
        'umount /sys/fs/cgroup/unified && exec "$0" "$@"',
        this.choice.binary,
        ...run,
      ],
    };
  }

  /** One runtime command against Hangar's state root, bounded in time. */
  #run(args: string[]): Promise<CommandResult> {
    return runCommand(this.choice.binary, ['--root', this.stateRoot, ...args], CLI_TIMEOUT);
  }

  async #runChecked(args: string[]): Promise<void> {
    await runChecked(this.choice.binary, ['--root', this.stateRoot, ...args], CLI_TIMEOUT);
  }

  kill(id: string, signal: string): Promise<CommandResult> {
    return this.#run(['kill', id, signal.replace(/^SIG/, '')]);
  }

  async pause(id: string): Promise<void> {
    await this.#runChecked(['pause', id]);
  }

  async resume(id: string): Promise<void> {
    await this.#runChecked(['resume', id]);
  }

  /**
   * Where crun keeps the seccomp program it compiled for a container (its `exec` applies it too);
   * undefined for runc, which keeps none (compiled-seccomp.ts).
   */
  compiledSeccompFile(id: string): string | undefined {
    return this.choice.name === 'crun' ? join(this.stateRoot, id, 'seccomp.bpf') : undefined;
  }

  /** Whether the runtime holds any state for this container (cheap: no process is started). */
  hasState(id: string): boolean {
    return existsSync(join(this.stateRoot, id));
  }

  /** Force-deletes; a container that does not exist is fine. */
  async delete(id: string): Promise<void> {
    await this.#run(['delete', '--force', id]);
  }

  async state(id: string): Promise<ContainerState | undefined> {
    const result = await this.#run(['state', id]);
    if (result.code !== 0) return undefined;
    const parsed = JSON.parse(result.stdout) as { id: string; status: string; pid: number };
    return { id: parsed.id, status: parsed.status, pid: parsed.pid };
  }

  async list(): Promise<ContainerState[]> {
    const result = await this.#run(['list', '--format', 'json']);
    if (result.code !== 0 || result.stdout.trim() === '' || result.stdout.trim() === 'null') return [];
    return (JSON.parse(result.stdout) as { id: string; status: string; pid: number }[]).map((c) => ({
      id: c.id,
      status: c.status,
      pid: c.pid,
    }));
  }

  /** Host pids of every process in the container. */
  async pids(id: string): Promise<number[]> {
    const result = await this.#run(['ps', '--format', 'json', id]);
    if (result.code !== 0) return [];
    return (JSON.parse(result.stdout || '[]') as number[]) ?? [];
  }

  /**
   * Runs the process described by the OCI process spec in `specFile` inside the container; its host
   * pid goes to `pidFile` (so a caller that gives up can end it).
   */
  exec(
    id: string,
    specFile: string,
    pidFile: string,
    options: { timeoutMs: number; stdin?: string; maxOutputBytes: number },
  ): Promise<CommandResult> {
    const args = ['--root', this.stateRoot, 'exec', '--process', specFile, '--pid-file', pidFile, id];
    return runCommand(this.choice.binary, args, {
      timeoutMs: options.timeoutMs,
      maxOutputBytes: options.maxOutputBytes,
      // Always close stdin, so a command that reads it ends instead of waiting forever.
      input: options.stdin ?? '',
    });
  }

  /**
   * The command line of an interactive exec. With a terminal, the runtime's foreground exec wants a
   * terminal on its own stdin (it makes the machine's pty inside the container's devpts, copies the size
   * and relays): util-linux `script` gives it one on the host. The script text is constant; paths, ids
   * and the size reach it through the environment, so nothing from a request is spliced into it.
   */
  consoleCommandLine(
    id: string,
    specFile: string,
    pidFile: string,
    tty: { rows: number; cols: number } | null,
  ): { file: string; args: string[]; env: Record<string, string> } {
    const args = ['--root', this.stateRoot, 'exec', '--process', specFile, '--pid-file', pidFile, id];
    if (!tty) return { file: this.choice.binary, args, env: {} };
    return {
      file: 'script',
      args: ['--quiet', '--flush', '--return', '--command', CONSOLE_SCRIPT, '/dev/null'],
      env: {
        SHELL: '/bin/sh',
        HANGAR_OCI: this.choice.binary,
        HANGAR_OCI_ROOT: this.stateRoot,
        HANGAR_SPEC: specFile,
        HANGAR_PID: pidFile,
        HANGAR_ID: id,
        HANGAR_ROWS: String(tty.rows),
        HANGAR_COLS: String(tty.cols),
      },
    };
  }
}

/** Sets the host pty's size (the runtime copies it into the machine's), then becomes the runtime's exec. */
const CONSOLE_SCRIPT =
  'stty rows "$HANGAR_ROWS" cols "$HANGAR_COLS" && exec "$HANGAR_OCI" --root "$HANGAR_OCI_ROOT" exec ' +
  '--process "$HANGAR_SPEC" --pid-file "$HANGAR_PID" "$HANGAR_ID"';

import type {
  ExecRequest,
  ExecResult,
  ExitInfo,
  MachineRuntime,
  MachineSpec,
  ProcessStat,
  RecoveredMachine,
} from '../../src/runtime/runtime.js';
import type { ImageRefRecord } from '../../src/store/records.js';

/**
 * FAKE, for tests only: an in-memory MachineRuntime that records calls, so the orchestrator's state
 * machine, events and wait can be tested through the API without containers. The product never uses
 * it; real containers come with the runtime issue.
 */
export class FakeRuntime implements MachineRuntime {
  readonly name = 'fake';
  readonly calls: string[] = [];
  readonly running = new Map<string, { spec: MachineSpec; paused: boolean }>();
  /** Set to make the next prepare() fail (e.g. an image pull error). */
  failPrepare: string | undefined;
  #exitListeners: ((machineId: string, exit: ExitInfo) => void)[] = [];

  async prepare(spec: MachineSpec): Promise<ImageRefRecord> {
    this.calls.push(`prepare ${spec.machineId}`);
    if (this.failPrepare) throw new Error(this.failPrepare);
    return {
      registry: 'fake',
      repository: spec.image,
      tag: 'latest',
      digest: 'sha256:fake',
      labels: {},
    };
  }

  async start(spec: MachineSpec): Promise<void> {
    this.calls.push(`start ${spec.machineId}`);
    this.running.set(spec.machineId, { spec, paused: false });
  }

  /** While set, stop() waits for it: a test holds a machine in `stopping` to act meanwhile. */
  holdStops: Promise<void> | undefined;

  async stop(machineId: string, options: { signal: string; timeoutMs: number }): Promise<ExitInfo> {
    this.calls.push(`stop ${machineId} ${options.signal} ${options.timeoutMs}`);
    await this.holdStops;
    this.running.delete(machineId);
    return {
      exitCode: 0,
      signal: options.signal,
      oomKilled: false,
      requestedStop: true,
      exitedAt: Date.now(),
    };
  }

  async signal(machineId: string, signal: string): Promise<void> {
    this.calls.push(`signal ${machineId} ${signal}`);
  }

  async suspend(machineId: string): Promise<void> {
    this.calls.push(`suspend ${machineId}`);
    const entry = this.running.get(machineId);
    if (entry) entry.paused = true;
  }

  async resume(machineId: string): Promise<void> {
    this.calls.push(`resume ${machineId}`);
    const entry = this.running.get(machineId);
    if (entry) entry.paused = false;
  }

  async destroy(machineId: string): Promise<void> {
    this.calls.push(`destroy ${machineId}`);
    this.running.delete(machineId);
  }

  async exec(machineId: string, request: ExecRequest): Promise<ExecResult> {
    this.calls.push(`exec ${machineId} ${request.command.join(' ')}`);
    return { exitCode: 0, exitSignal: null, stdout: `ran ${request.command.join(' ')}`, stderr: '' };
  }

  async ps(machineId: string): Promise<ProcessStat[]> {
    this.calls.push(`ps ${machineId}`);
    return [
      { pid: 1, stime: 0, rtime: 0, command: 'init', directory: '/', cpu: 0, rss: 1024, listen_sockets: [] },
    ];
  }

  async *logs(machineId: string): AsyncIterable<string> {
    this.calls.push(`logs ${machineId}`);
    yield `fake log line of ${machineId}`;
  }

  /** What recover() reports; tests set it before a restart. */
  recovered: RecoveredMachine[] = [];

  async recover(): Promise<RecoveredMachine[]> {
    this.calls.push('recover');
    return this.recovered;
  }

  onExit(listener: (machineId: string, exit: ExitInfo) => void): void {
    this.#exitListeners.push(listener);
  }

  /** Simulates an exit the orchestrator did not ask for (a crash, the app ending by itself). */
  crash(machineId: string, exit: Partial<ExitInfo> = {}): void {
    this.running.delete(machineId);
    for (const listener of this.#exitListeners) {
      listener(machineId, {
        exitCode: 1,
        signal: null,
        oomKilled: false,
        requestedStop: false,
        exitedAt: Date.now(),
        ...exit,
      });
    }
  }

  async close(): Promise<void> {
    this.running.clear();
  }
}

/** A spec's env without what the platform adds (PRIMARY_REGION and FLY_*): what the user and secrets gave. */
export function userEnv(spec: MachineSpec | undefined): Record<string, string> | undefined {
  if (!spec) return undefined;
  return Object.fromEntries(
    Object.entries(spec.env).filter(([name]) => name !== 'PRIMARY_REGION' && !name.startsWith('FLY_')),
  );
}

import type { ImageRefRecord } from '../store/records.js';
import type { UidMapping } from './uid-range.js';

export interface ConsoleRequest {
  command: string[];
  /** A pseudo-terminal in the machine (stdout and stderr both on it), of this size. */
  tty: { rows: number; cols: number; term: string } | null;
}

/** A running console command: write its input, read its output; `exited` gives its exit code. */
export interface ConsoleSession {
  input: NodeJS.WritableStream;
  output: NodeJS.ReadableStream;
  exited: Promise<number>;
  /** Ends the command (the client went away). */
  kill(): void;
  /** Sets the terminal's size (the command gets SIGWINCH); nothing without a terminal. */
  resize(rows: number, cols: number): Promise<void>;
}

/**
 * What the orchestrator needs from a machine runtime. The real implementation (OCI images run with
 * crun/runc) plugs in here; until a host has one, the orchestrator records machines and answers
 * `runtime_unavailable` for anything that needs a running workload. There is no simulated runtime.
 */
export interface MachineSpec {
  machineId: string;
  appName: string;
  region: string;
  version: string;
  /**
   * The image to boot: the config's reference for a version's first boot, then the digest it resolved
   * to (a restart runs the same image even if its tag moved, and needs no registry).
   */
  image: string;
  cpus: number;
  memoryBytes: number;
  /** What to run instead of the image's entrypoint and cmd; unset parts fall back to the image's. */
  command: { exec?: string[]; entrypoint?: string[]; cmd?: string[] };
  /** The stop signal the machine asked for; unset, the image's STOPSIGNAL, else SIGINT. */
  stopSignal: string | undefined;
  /**
   * Everything the machine's environment gets from the platform, in order of precedence already applied:
   * PRIMARY_REGION, then the config's env, then the app's secrets, then the FLY_ variables. The runtime
   * puts the image's own env below it and FLY_IMAGE_REF (known only after the pull) above it.
   */
  env: Record<string, string>;
  privateIp: string | null;
  /** Where the machine sits in its app's private network; null for machines that have no address. */
  network: MachineNetworkPlace | null;
  /** The app's range of host ids: root in the machine is `uidMapping.hostId` on the host. */
  uidMapping: UidMapping;
  /** Volumes to mount (at most one today). */
  mounts: { volumeId: string; path: string }[];
  /** `config.files`, already decoded (secret-backed ones included). */
  files: { guestPath: string; content: Buffer; mode: number }[];
}

export interface MachineNetworkPlace {
  networkId: number;
  machineNumber: number;
  /** The machine's private IPv4 address (only the host reaches it); absent on machines without one. */
  ipv4?: string;
}

/**
 * Plugs a machine's network namespace into its private network before its process starts (the host's
 * networking, net/host-network.ts). Without one, a machine's namespace has only its loopback.
 */
export interface NetworkAttacher {
  attach(machineId: string, netns: string, place: MachineNetworkPlace): Promise<void>;
}

/** What a restarted hangard finds of a machine it had started. */
export interface RecoveredMachine {
  machineId: string;
  /** running (or paused) containers are re-adopted; exited ones come with their exit. */
  status: 'running' | 'paused' | 'exited' | 'missing';
  exit?: ExitInfo;
}

export interface ExitInfo {
  exitCode: number | null;
  signal: string | null;
  oomKilled: boolean;
  requestedStop: boolean;
  exitedAt: number;
}

export interface ExecRequest {
  command: string[];
  timeoutMs: number;
  stdin?: string;
}

export interface ExecResult {
  exitCode: number;
  exitSignal: number | null;
  stdout: string;
  stderr: string;
}

export interface ProcessStat {
  pid: number;
  stime: number;
  rtime: number;
  command: string;
  directory: string;
  cpu: number;
  rss: number;
  listen_sockets: { proto: string; address: string }[];
}

export interface MachineRuntime {
  readonly name: string;
  /** Pulls and unpacks the image if needed; resolves the reference to a digest. */
  prepare(spec: MachineSpec, signal?: AbortSignal): Promise<ImageRefRecord>;
  /**
   * Refuses (quota_exceeded) an image that the app whose ids are `mapping` could not hold unpacked
   * beside its others; asked at create and update so the refusal comes before the boot. Runtimes
   * without an image store admit everything.
   */
  admitImage?(image: string, mapping: UidMapping): Promise<void>;
  start(spec: MachineSpec): Promise<void>;
  /** `signal` unset: the image's STOPSIGNAL, else SIGINT (Fly's default). */
  stop(machineId: string, options: { signal: string | undefined; timeoutMs: number }): Promise<ExitInfo>;
  signal(machineId: string, signal: string): Promise<void>;
  suspend(machineId: string): Promise<void>;
  resume(machineId: string): Promise<void>;
  destroy(machineId: string): Promise<void>;
  exec(machineId: string, request: ExecRequest): Promise<ExecResult>;
  /** An interactive command: with a terminal (`tty`), or with plain pipes (file copies). */
  console?(machineId: string, request: ConsoleRequest): Promise<ConsoleSession>;
  ps(machineId: string): Promise<ProcessStat[]>;
  /** The machine's captured stdout and stderr: the last `tailLines` lines, then new lines if `follow`. */
  logs(
    machineId: string,
    options: { tailLines: number; follow: boolean; signal: AbortSignal },
  ): AsyncIterable<string>;
  /**
   * At start: re-adopts the containers of machines the store says are running, reports the ones that
   * exited or vanished meanwhile, and removes containers of machines the store does not know.
   */
  recover(known: { machineId: string; state: string }[]): Promise<RecoveredMachine[]>;
  /** Exits the orchestrator did not ask for (crash, OOM, the app ending by itself). */
  onExit(listener: (machineId: string, exit: ExitInfo) => void): void;
  close(): Promise<void>;
}

import type { ImageRefRecord, JsonObject } from '../store/records.js';

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
  config: JsonObject;
  /** Plain env and decrypted app secrets (secrets already win over env). */
  env: Record<string, string>;
  privateIp: string | null;
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
  start(spec: MachineSpec): Promise<void>;
  stop(machineId: string, options: { signal: string; timeoutMs: number }): Promise<ExitInfo>;
  signal(machineId: string, signal: string): Promise<void>;
  suspend(machineId: string): Promise<void>;
  resume(machineId: string): Promise<void>;
  destroy(machineId: string): Promise<void>;
  exec(machineId: string, request: ExecRequest): Promise<ExecResult>;
  ps(machineId: string): Promise<ProcessStat[]>;
  /** Exits the orchestrator did not ask for (crash, OOM, the app ending by itself). */
  onExit(listener: (machineId: string, exit: ExitInfo) => void): void;
  close(): Promise<void>;
}

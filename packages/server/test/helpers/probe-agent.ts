import { type ChildProcess, spawn } from 'node:child_process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

/** This file is test/helpers/probe-agent.ts; the agent itself lives with the network tests. */
const AGENT = fileURLToPath(new URL('../net/probe-agent.mjs', import.meta.url));

export interface ProbeRequest {
  kind: 'tcp' | 'udp' | 'icmp' | 'heard';
  to: string;
  port?: number;
  from?: string;
  /** How long a probe waits (the agent's default: 1000 ms). */
  timeoutMs?: number;
}

export interface ProbeResult {
  ok: boolean;
  answer?: string;
  detail?: string;
  /** UDP only: the bytes sendto reported, or its error code (a datagram that never left). */
  sent?: number | string;
}

/**
 * A process in a network namespace that serves TCP and UDP on [::]:8080 and runs probes on request
 * (test/net/probe-agent.mjs): the stand-in for a machine's workload in the isolation tests.
 */
export class ProbeAgent {
  readonly #child: ChildProcess;
  readonly #waiting = new Map<number, (result: ProbeResult) => void>();
  #nextId = 1;
  readonly ready: Promise<void>;

  constructor(netns: string, name: string) {
    this.#child = spawn('ip', ['netns', 'exec', netns, process.execPath, AGENT, name], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let markReady: () => void = () => {};
    let fail: (error: Error) => void = () => {};
    this.ready = new Promise((resolve, reject) => {
      markReady = resolve;
      fail = reject;
    });
    this.#child.on('exit', (code) => fail(new Error(`agent ${name} exited (${code}) before it was ready`)));
    readline.createInterface({ input: this.#child.stdout! }).on('line', (line) => {
      const message = JSON.parse(line) as ProbeResult & { id?: number; ready?: boolean };
      if (message.ready) markReady();
      if (message.id !== undefined) this.#waiting.get(message.id)?.(message);
    });
  }

  /** Sources of every UDP datagram this agent's server received. */
  async heard(): Promise<string[]> {
    const result = await this.probe({ kind: 'heard', to: '' });
    return JSON.parse(result.answer ?? '[]') as string[];
  }

  probe(request: ProbeRequest): Promise<ProbeResult> {
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      this.#child.stdin!.write(`${JSON.stringify({ id, ...request })}\n`);
    });
  }

  /** Ends the agent and waits for it: a namespace lives on (with its veth) while a process is in it. */
  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.#child.once('exit', resolve));
    this.#child.stdin?.end();
    this.#child.kill();
    await exited;
  }
}

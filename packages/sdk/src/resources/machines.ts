import { type MutationOptions, path, type RequestOptions, type Transport } from '../client.js';
import { isMachinesApiError, MachinesApiError, SDK_ERROR_CODES } from '../errors.js';
import { sleep } from '../sleep.js';
import type {
  AcquireLeaseOptions,
  CreateMachineRequest,
  DestroyMachineOptions,
  ExecRequest,
  ExecResponse,
  Lease,
  LeaseEnvelope,
  ListEventsOptions,
  ListMachinesOptions,
  Machine,
  MachineEvent,
  MachineLogLine,
  MachineVersion,
  PatchMetadataOptions,
  ProcessStat,
  PsOptions,
  RestartMachineOptions,
  StartMachineResponse,
  StopMachineOptions,
  UpdateMachineRequest,
  WaitableState,
  WaitForStateOptions,
  WaitMachineOptions,
  WaitMachineResponse,
} from '../types.js';

/** The `wait` endpoint rejects timeouts above 60 s, so longer waits are a loop of calls. */
export const MAX_WAIT_CALL_SECONDS = 60;

/** Default overall deadline of `waitForState`. */
export const DEFAULT_WAIT_FOR_STATE_MS = 60_000;

/** Pause between a 408 and the next wait call, so a server that answers 408 early is not hammered. */
const WAIT_RETRY_PAUSE_MS = 100;

/** Numbers are seconds; the API wants Go durations, and `"30s"` is one. */
function toDuration(value: number | string | undefined): string | undefined {
  return typeof value === 'number' ? `${value}s` : value;
}

function unwrapLease(body: LeaseEnvelope | Lease): Lease {
  return 'data' in body && typeof body.data === 'object' && body.data !== null ? body.data : (body as Lease);
}

export class MachinesResource {
  readonly #t: Transport;

  constructor(transport: Transport) {
    this.#t = transport;
  }

  list(app: string, filters: ListMachinesOptions = {}, opts: RequestOptions = {}): Promise<Machine[]> {
    const query: Record<string, string | undefined> = {
      include_deleted: filters.includeDeleted ? 'true' : undefined,
      region: filters.region,
      state: Array.isArray(filters.state) ? filters.state.join(',') : filters.state,
      summary: filters.summary ? 'true' : undefined,
      limit: filters.pageSize === undefined ? undefined : String(filters.pageSize),
    };
    for (const [key, value] of Object.entries(filters.metadata ?? {})) query[`metadata.${key}`] = value;
    return this.#t.requestAllPages({
      method: 'GET',
      path: path`/v1/apps/${app}/machines`,
      query,
      signal: opts.signal,
    });
  }

  get(app: string, id: string, opts: RequestOptions = {}): Promise<Machine> {
    return this.#t.request({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}`,
      signal: opts.signal,
    });
  }

  /** `POST /machines`: creates a machine and, unless `skip_launch`, boots it (asynchronously). */
  launch(app: string, input: CreateMachineRequest, opts: RequestOptions = {}): Promise<Machine> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/machines`,
      body: input,
      signal: opts.signal,
    });
  }

  /** Same as `launch` (the REST operation's name). */
  create(app: string, input: CreateMachineRequest, opts: RequestOptions = {}): Promise<Machine> {
    return this.launch(app, input, opts);
  }

  /** Replaces the whole config (no partial updates); pass `current_version` to guard against races. */
  update(app: string, id: string, input: UpdateMachineRequest, opts: MutationOptions = {}): Promise<Machine> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/machines/${id}`,
      body: input,
      nonce: opts.nonce,
      signal: opts.signal,
    });
  }

  async destroy(
    app: string,
    id: string,
    options: DestroyMachineOptions = {},
    opts: MutationOptions = {},
  ): Promise<void> {
    await this.#t.request({
      method: 'DELETE',
      path: path`/v1/apps/${app}/machines/${id}`,
      query: { force: options.force ? 'true' : undefined, kill: options.kill ? 'true' : undefined },
      nonce: opts.nonce,
      signal: opts.signal,
    });
  }

  start(app: string, id: string, opts: MutationOptions = {}): Promise<StartMachineResponse> {
    return this.#action(app, id, 'start', opts);
  }

  async stop(
    app: string,
    id: string,
    options: StopMachineOptions = {},
    opts: MutationOptions = {},
  ): Promise<void> {
    const body = { signal: options.signal, timeout: toDuration(options.timeout) };
    await this.#action(app, id, 'stop', opts, { body });
  }

  async suspend(app: string, id: string, opts: MutationOptions = {}): Promise<void> {
    await this.#action(app, id, 'suspend', opts);
  }

  async restart(
    app: string,
    id: string,
    options: RestartMachineOptions = {},
    opts: MutationOptions = {},
  ): Promise<void> {
    const query = {
      signal: options.signal,
      timeout: toDuration(options.timeout),
      force_stop: options.forceStop ? 'true' : undefined,
    };
    await this.#action(app, id, 'restart', opts, { query });
  }

  /** Sends a signal by name (`"SIGUSR1"`) or number (`9`). */
  async signal(app: string, id: string, signal: string | number, opts: MutationOptions = {}): Promise<void> {
    await this.#action(app, id, 'signal', opts, { body: { signal } });
  }

  /** SIGKILL, the way fly-go's `Kill` sends it (a number). */
  kill(app: string, id: string, opts: MutationOptions = {}): Promise<void> {
    return this.signal(app, id, 9, opts);
  }

  async cordon(app: string, id: string, opts: MutationOptions = {}): Promise<void> {
    await this.#action(app, id, 'cordon', opts);
  }

  async uncordon(app: string, id: string, opts: MutationOptions = {}): Promise<void> {
    await this.#action(app, id, 'uncordon', opts);
  }

  /**
   * One call of the long-poll `wait` endpoint. Resolves when the machine is in (one of) the state(s);
   * rejects with a MachinesApiError of status 408 when the server's timeout (≤ 60 s) passes first.
   * Use `waitForState` for longer waits.
   */
  wait(
    app: string,
    id: string,
    options: WaitMachineOptions = {},
    opts: RequestOptions = {},
  ): Promise<WaitMachineResponse> {
    const states = options.state === undefined ? undefined : ([] as WaitableState[]).concat(options.state);
    return this.#t.request({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}/wait`,
      query: {
        state: states,
        timeout: options.timeout,
        instance_id: options.instanceId,
        version: options.version,
        from_event_id: options.fromEventId,
      },
      signal: opts.signal,
    });
  }

  /**
   * Waits up to `timeoutMs` (default 60 s) for a state, calling `wait` as many times as needed (each call
   * at most 60 s, the server's limit) and retrying on 408. Past the deadline it rejects with a
   * MachinesApiError whose code is `timeout`.
   */
  async waitForState(
    app: string,
    id: string,
    state: WaitableState | WaitableState[],
    options: WaitForStateOptions = {},
    opts: RequestOptions = {},
  ): Promise<WaitMachineResponse> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_FOR_STATE_MS;
    const deadline = Date.now() + timeoutMs;
    const deadlineReason = Symbol('deadline');
    // One signal for both ways a wait can end early: the caller aborts, or our own deadline passes while a
    // call is still held open by the server.
    const controller = new AbortController();
    const onCallerAbort = () => controller.abort(opts.signal?.reason);
    if (opts.signal?.aborted) onCallerAbort();
    opts.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const timer = setTimeout(() => controller.abort(deadlineReason), timeoutMs);
    const deadlinePassed = () => controller.signal.aborted && controller.signal.reason === deadlineReason;

    let lastDetail: string | undefined;
    try {
      while (Date.now() < deadline) {
        const seconds = Math.ceil((deadline - Date.now()) / 1000);
        const timeout = Math.min(MAX_WAIT_CALL_SECONDS, Math.max(1, seconds));
        try {
          return await this.wait(
            app,
            id,
            { state, timeout, instanceId: options.instanceId, version: options.version },
            { signal: controller.signal },
          );
        } catch (err) {
          if (deadlinePassed()) break;
          if (!isMachinesApiError(err) || err.status !== 408) throw err;
          lastDetail = err.detail;
        }
        try {
          await sleep(Math.min(WAIT_RETRY_PAUSE_MS, Math.max(0, deadline - Date.now())), controller.signal);
        } catch (err) {
          if (deadlinePassed()) break;
          throw err;
        }
      }
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onCallerAbort);
    }

    const wanted = ([] as string[]).concat(state).join(' or ');
    throw new MachinesApiError({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}/wait`,
      status: 408,
      code: SDK_ERROR_CODES.timeout,
      detail: `machine ${id} did not reach ${wanted} within ${timeoutMs} ms${lastDetail ? ` (${lastDetail})` : ''}`,
    });
  }

  /** Acquires a lease (or refreshes one you hold when `nonce` is given) and returns it. */
  async acquireLease(
    app: string,
    id: string,
    options: AcquireLeaseOptions = {},
    opts: RequestOptions = {},
  ): Promise<Lease> {
    const body = await this.#t.request<LeaseEnvelope | Lease>({
      method: 'POST',
      path: path`/v1/apps/${app}/machines/${id}/lease`,
      body: { ttl: options.ttl, description: options.description },
      nonce: options.nonce,
      signal: opts.signal,
    });
    return unwrapLease(body);
  }

  async getLease(app: string, id: string, opts: RequestOptions = {}): Promise<Lease> {
    const body = await this.#t.request<LeaseEnvelope | Lease>({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}/lease`,
      signal: opts.signal,
    });
    return unwrapLease(body);
  }

  async releaseLease(app: string, id: string, nonce: string, opts: RequestOptions = {}): Promise<void> {
    await this.#t.request({
      method: 'DELETE',
      path: path`/v1/apps/${app}/machines/${id}/lease`,
      nonce,
      signal: opts.signal,
    });
  }

  async getMetadata(app: string, id: string, opts: RequestOptions = {}): Promise<Record<string, string>> {
    const body = await this.#t.request<Record<string, string> | null | undefined>({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}/metadata`,
      signal: opts.signal,
    });
    return body ?? {};
  }

  async setMetadata(
    app: string,
    id: string,
    key: string,
    value: string,
    opts: MutationOptions = {},
  ): Promise<void> {
    await this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/machines/${id}/metadata/${key}`,
      body: { value },
      nonce: opts.nonce,
      signal: opts.signal,
    });
  }

  async deleteMetadata(app: string, id: string, key: string, opts: MutationOptions = {}): Promise<void> {
    await this.#t.request({
      method: 'DELETE',
      path: path`/v1/apps/${app}/machines/${id}/metadata/${key}`,
      nonce: opts.nonce,
      signal: opts.signal,
    });
  }

  /**
   * Sets several keys at once; `null` removes a key. Fly has not published this body's layout, so the
   * unambiguous nested form is sent: `{"metadata": {...}, "machine_version"?: "..."}`.
   */
  async patchMetadata(
    app: string,
    id: string,
    values: Record<string, string | null>,
    options: PatchMetadataOptions = {},
    opts: MutationOptions = {},
  ): Promise<void> {
    await this.#t.request({
      method: 'PATCH',
      path: path`/v1/apps/${app}/machines/${id}/metadata`,
      body: { metadata: values, machine_version: options.machineVersion },
      nonce: opts.nonce,
      signal: opts.signal,
    });
  }

  /** Newest first. */
  events(
    app: string,
    id: string,
    options: ListEventsOptions = {},
    opts: RequestOptions = {},
  ): Promise<MachineEvent[]> {
    return this.#t.request({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}/events`,
      query: { limit: options.limit },
      signal: opts.signal,
    });
  }

  versions(app: string, id: string, opts: RequestOptions = {}): Promise<MachineVersion[]> {
    return this.#t.requestAllPages({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}/versions`,
      signal: opts.signal,
    });
  }

  /**
   * The machine's output (Hangar's endpoint): the last `tail` lines, then, with `follow`, new lines until
   * `opts.signal` aborts.
   */
  logs(
    app: string,
    id: string,
    options: { tail?: number; follow?: boolean } = {},
    opts: RequestOptions = {},
  ): AsyncGenerator<MachineLogLine> {
    return this.#t.stream<MachineLogLine>({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}/logs`,
      query: { tail: options.tail, follow: options.follow ? true : undefined },
      signal: opts.signal,
    });
  }

  ps(app: string, id: string, options: PsOptions = {}, opts: RequestOptions = {}): Promise<ProcessStat[]> {
    return this.#t.request({
      method: 'GET',
      path: path`/v1/apps/${app}/machines/${id}/ps`,
      query: { sort_by: options.sortBy, order: options.order },
      signal: opts.signal,
    });
  }

  exec(app: string, id: string, input: ExecRequest, opts: RequestOptions = {}): Promise<ExecResponse> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/machines/${id}/exec`,
      body: input,
      signal: opts.signal,
    });
  }

  #action<T>(
    app: string,
    id: string,
    action: string,
    opts: MutationOptions,
    extra: { body?: unknown; query?: Record<string, string | undefined> } = {},
  ): Promise<T> {
    return this.#t.request({
      method: 'POST',
      path: `${path`/v1/apps/${app}/machines/${id}`}/${action}`,
      body: extra.body,
      query: extra.query,
      nonce: opts.nonce,
      signal: opts.signal,
    });
  }
}

import { path, type RequestOptions, type Transport } from '../client.js';
import type { AllocateIPRequest, IPAssignment, ListIPAssignmentsResponse } from '../types.js';

export class IPAssignmentsResource {
  readonly #t: Transport;

  constructor(transport: Transport) {
    this.#t = transport;
  }

  list(app: string, opts: RequestOptions = {}): Promise<ListIPAssignmentsResponse> {
    return this.#t.request({
      method: 'GET',
      path: path`/v1/apps/${app}/ip_assignments`,
      signal: opts.signal,
    });
  }

  /** `private_v6` is a Flycast address; its `network` names the network its callers live in. */
  allocate(app: string, input: AllocateIPRequest, opts: RequestOptions = {}): Promise<IPAssignment> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/ip_assignments`,
      body: input,
      signal: opts.signal,
    });
  }

  async release(app: string, ip: string, opts: RequestOptions = {}): Promise<void> {
    await this.#t.request({
      method: 'DELETE',
      path: path`/v1/apps/${app}/ip_assignments/${ip}`,
      signal: opts.signal,
    });
  }
}

import { path, type RequestOptions, type Transport } from '../client.js';
import type {
  CreateVolumeRequest,
  ExtendVolumeResponse,
  ForkVolumeRequest,
  UpdateVolumeRequest,
  Volume,
  VolumeSnapshot,
} from '../types.js';

export interface ListVolumesOptions {
  /** Trimmed payload. */
  summary?: boolean;
  /** Volumes per request (Hangar's `limit`, 1-1000); the list still holds every page. */
  pageSize?: number;
}

export class VolumesResource {
  readonly #t: Transport;

  constructor(transport: Transport) {
    this.#t = transport;
  }

  /** Includes volumes being destroyed; filter on `state` if you only want live ones. */
  list(app: string, options: ListVolumesOptions = {}, opts: RequestOptions = {}): Promise<Volume[]> {
    return this.#t.requestAllPages({
      method: 'GET',
      path: path`/v1/apps/${app}/volumes`,
      query: { summary: options.summary ? 'true' : undefined, limit: options.pageSize },
      signal: opts.signal,
    });
  }

  create(app: string, input: CreateVolumeRequest, opts: RequestOptions = {}): Promise<Volume> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${app}/volumes`,
      body: input,
      signal: opts.signal,
    });
  }

  /** A new volume with a copy of `id`'s data (`POST /volumes` with `source_volume_id`). */
  async fork(
    app: string,
    id: string,
    input: ForkVolumeRequest = {},
    opts: RequestOptions = {},
  ): Promise<Volume> {
    const name = input.name ?? (await this.get(app, id, opts)).name;
    return this.create(app, { name, region: input.region, source_volume_id: id }, opts);
  }

  get(app: string, id: string, opts: RequestOptions = {}): Promise<Volume> {
    return this.#t.request({ method: 'GET', path: path`/v1/apps/${app}/volumes/${id}`, signal: opts.signal });
  }

  /** `PUT /volumes/{id}` (Fly's older spec said POST; its docs and fly-go use PUT). */
  update(app: string, id: string, input: UpdateVolumeRequest, opts: RequestOptions = {}): Promise<Volume> {
    return this.#t.request({
      method: 'PUT',
      path: path`/v1/apps/${app}/volumes/${id}`,
      body: input,
      signal: opts.signal,
    });
  }

  /** Grows the volume to `sizeGb` in total (volumes never shrink). */
  extend(app: string, id: string, sizeGb: number, opts: RequestOptions = {}): Promise<ExtendVolumeResponse> {
    return this.#t.request({
      method: 'PUT',
      path: path`/v1/apps/${app}/volumes/${id}/extend`,
      body: { size_gb: sizeGb },
      signal: opts.signal,
    });
  }

  listSnapshots(app: string, id: string, opts: RequestOptions = {}): Promise<VolumeSnapshot[]> {
    return this.#t.requestAllPages({
      method: 'GET',
      path: path`/v1/apps/${app}/volumes/${id}/snapshots`,
      signal: opts.signal,
    });
  }

  /**
   * Takes an on-demand snapshot. Hangar answers with the snapshot once it is complete; Fly answers with
   * an empty body and completes it asynchronously (see `listSnapshots`), hence `undefined`.
   */
  async createSnapshot(
    app: string,
    id: string,
    opts: RequestOptions = {},
  ): Promise<VolumeSnapshot | undefined> {
    const body = await this.#t.request<VolumeSnapshot | undefined | ''>({
      method: 'POST',
      path: path`/v1/apps/${app}/volumes/${id}/snapshots`,
      signal: opts.signal,
    });
    return body && typeof body === 'object' ? body : undefined;
  }

  /** Returns the volume in its new state (`pending_destroy` or `destroyed`). */
  destroy(app: string, id: string, opts: RequestOptions = {}): Promise<Volume> {
    return this.#t.request({
      method: 'DELETE',
      path: path`/v1/apps/${app}/volumes/${id}`,
      signal: opts.signal,
    });
  }
}

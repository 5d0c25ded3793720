import { path, type RequestOptions, type Transport } from '../client.js';
import type {
  App,
  CreateAppRequest,
  DeleteAppOptions,
  DeployTokenRequest,
  DeployTokenResponse,
  ListAppsResponse,
} from '../types.js';

export class AppsResource {
  readonly #t: Transport;

  constructor(transport: Transport) {
    this.#t = transport;
  }

  /** `GET /v1/apps?org_slug=` — the API requires an org; `personal` is the user's own. */
  /** Every app of the org: follows Hangar's `next_cursor` across pages (Fly answers in one). */
  async list(
    orgSlug = 'personal',
    opts: RequestOptions & { pageSize?: number } = {},
  ): Promise<ListAppsResponse> {
    let cursor: string | undefined;
    let all: ListAppsResponse | undefined;
    for (;;) {
      const page: ListAppsResponse = await this.#t.request({
        method: 'GET',
        path: '/v1/apps',
        query: { org_slug: orgSlug, limit: opts.pageSize, cursor },
        signal: opts.signal,
      });
      all = all
        ? { ...all, apps: [...all.apps, ...(page.apps ?? [])] }
        : { ...page, apps: [...(page.apps ?? [])] };
      cursor = page.next_cursor;
      if (!cursor) {
        delete all.next_cursor;
        return all;
      }
    }
  }

  /**
   * `POST /v1/apps`. Sends the name as both `app_name` (Fly's docs) and `name` (fly-go), since servers
   * accept one or the other. Fly may answer 201 with an empty or partial body, so the app is then read back.
   */
  async create(input: CreateAppRequest, opts: RequestOptions = {}): Promise<App> {
    const created = await this.#t.request<Partial<App> | undefined>({
      method: 'POST',
      path: '/v1/apps',
      body: { ...input, name: input.app_name },
      signal: opts.signal,
    });
    if (created && typeof created === 'object' && typeof created.name === 'string') return created as App;
    return this.get(input.app_name, opts);
  }

  get(name: string, opts: RequestOptions = {}): Promise<App> {
    return this.#t.request({ method: 'GET', path: path`/v1/apps/${name}`, signal: opts.signal });
  }

  /** `DELETE /v1/apps/{name}`; `force` also stops and deletes the app's machines. */
  async delete(name: string, options: DeleteAppOptions = {}, opts: RequestOptions = {}): Promise<void> {
    await this.#t.request({
      method: 'DELETE',
      path: path`/v1/apps/${name}`,
      query: { force: options.force ? 'true' : undefined },
      signal: opts.signal,
    });
  }

  /** `POST /v1/apps/{name}/deploy_token`: a token limited to this app. */
  createDeployToken(
    name: string,
    input: DeployTokenRequest = {},
    opts: RequestOptions = {},
  ): Promise<DeployTokenResponse> {
    return this.#t.request({
      method: 'POST',
      path: path`/v1/apps/${name}/deploy_token`,
      body: input,
      signal: opts.signal,
    });
  }
}

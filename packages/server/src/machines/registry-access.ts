import type { Principal } from '../auth/tokens.js';
import { appFor, type PlatformContext } from './context.js';

export type RegistryAction = 'pull' | 'push';

/**
 * Who may use which space of Hangar's registry: the space `<app>/…` belongs to the app, so the same rules
 * as the Machines API apply (context.ts `appFor`): a deploy token pulls and pushes its own app's space, an
 * org token every space of its org, a read-only token pulls from them. The registry proxy asks here.
 */
export class RegistryAccessService {
  constructor(private readonly ctx: PlatformContext) {}

  /** Throws `forbidden` (or `not_found` for an app that exists nowhere) unless the principal may. */
  async authorize(principal: Principal, appName: string, action: RegistryAction): Promise<void> {
    await this.ctx.store.read((tx) => appFor(tx, principal, appName, action === 'push' ? 'write' : 'read'));
  }

  /** The apps whose spaces the principal may list. */
  async visibleApps(principal: Principal): Promise<Set<string>> {
    return this.ctx.store.read((tx) => {
      const apps = principal.appId
        ? [tx.apps.get(principal.appId)].filter((app) => app !== undefined)
        : tx.apps.list({ orgId: principal.orgId });
      return new Set(apps.map((app) => app.name));
    });
  }
}

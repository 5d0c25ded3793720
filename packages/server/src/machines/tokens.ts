import { mintToken, type Principal, tokenIdOf, tokensFromHeader, verifyToken } from '../auth/tokens.js';
import { parseGoDuration } from '../shared/duration.js';
import { HangarError, invalidArgument } from '../shared/errors.js';
import { newOrgId } from '../shared/ids.js';
import { formatDurationMs, LIMITS } from '../shared/limits.js';
import type { OrgRecord, TokenRecord, TokenType } from '../store/records.js';
import { DEFAULT_NETWORK } from './apps.js';
import { appFor, assertWritable, isoNow, orgFor, type PlatformContext, requireOrgToken } from './context.js';

/** 20 years, flyctl's default token lifetime (and the longest one). */
const DEFAULT_EXPIRY_MS = LIMITS.tokenExpiryMs;

export interface CreateTokenInput {
  type: TokenType;
  orgSlug: string;
  appName?: string;
  name?: string;
  expiry?: string;
}

export interface CreatedToken {
  record: TokenRecord;
  token: string;
}

const DEFAULT_NAMES: Record<TokenType, string> = {
  org: 'Org deploy token',
  deploy: 'Deploy token',
  readonly: 'Read-only org token',
};

export class TokensService {
  constructor(private readonly ctx: PlatformContext) {}

  /**
   * The principal an Authorization header proves, or 401. Any one valid token in a list is enough (as
   * with Fly's comma-separated macaroons). The answer never depends on which app the request names.
   */
  async authenticate(header: string | undefined): Promise<Principal> {
    const tokens = tokensFromHeader(header);
    if (tokens.length === 0) {
      throw new HangarError('unauthorized', 'missing token: send "Authorization: Bearer <token>"');
    }
    const now = this.ctx.now();
    const principal = await this.ctx.store.read((tx) => {
      for (const token of tokens) {
        const id = tokenIdOf(token);
        const found = id ? verifyToken(token, tx.tokens.get(id), now) : undefined;
        if (found) return found;
      }
      return undefined;
    });
    if (!principal)
      throw new HangarError('unauthorized', 'the token is not valid (unknown, revoked or expired)');
    return principal;
  }

  async create(principal: Principal, input: CreateTokenInput): Promise<CreatedToken> {
    requireOrgToken(principal, 'create tokens');
    const expiresInMs = input.expiry === undefined ? DEFAULT_EXPIRY_MS : parseGoDuration(input.expiry);
    if (expiresInMs === undefined || expiresInMs <= 0) {
      throw invalidArgument(`expiry: expected a positive duration such as "720h", got "${input.expiry}"`);
    }
    if (expiresInMs > LIMITS.tokenExpiryMs) {
      throw invalidArgument(
        `expiry: at most ${formatDurationMs(LIMITS.tokenExpiryMs)} (20 years), got "${input.expiry}"`,
      );
    }
    if (input.type === 'deploy' && !input.appName)
      throw invalidArgument('app_name: a deploy token needs an app');
    if (input.type !== 'deploy' && input.appName) {
      throw invalidArgument(`app_name: only deploy tokens are bound to an app, not ${input.type} tokens`);
    }
    const minted = mintToken();
    const record = await this.ctx.store.write((tx) => {
      const org = orgFor(tx, principal, input.orgSlug, 'write');
      const app = input.appName ? appFor(tx, principal, input.appName, 'write') : undefined;
      const created: TokenRecord = {
        id: minted.id,
        type: input.type,
        orgId: org.id,
        appId: app?.id ?? null,
        name: input.name ?? DEFAULT_NAMES[input.type],
        secretHash: minted.secretHash,
        createdAt: isoNow(this.ctx),
        expiresAt: new Date(this.ctx.now() + expiresInMs).toISOString(),
      };
      tx.tokens.insert(created);
      return created;
    });
    return { record, token: minted.token };
  }

  /** `POST /v1/apps/{app}/deploy_token`: Fly's way for an org token to mint a token for one app. */
  async createDeployToken(principal: Principal, appName: string, expiry?: string): Promise<CreatedToken> {
    const orgSlug = await this.ctx.store.read((tx) => {
      const app = appFor(tx, principal, appName, 'write');
      return tx.orgs.get(app.orgId)!.slug;
    });
    return this.create(principal, { type: 'deploy', orgSlug, appName, ...(expiry ? { expiry } : {}) });
  }

  async list(
    principal: Principal,
    orgSlug: string,
  ): Promise<{ token: TokenRecord; org: OrgRecord; appName: string | null }[]> {
    requireOrgToken(principal, 'list tokens');
    return this.ctx.store.read((tx) => {
      const org = orgFor(tx, principal, orgSlug, 'read');
      return tx.tokens.list({ orgId: org.id }).map((token) => ({
        token,
        org,
        appName: token.appId ? (tx.apps.get(token.appId)?.name ?? null) : null,
      }));
    });
  }

  async revoke(principal: Principal, tokenId: string): Promise<void> {
    requireOrgToken(principal, 'revoke tokens');
    assertWritable(principal);
    await this.ctx.store.write((tx) => {
      const token = tx.tokens.get(tokenId);
      if (!token || token.orgId !== principal.orgId)
        throw new HangarError('not_found', `token ${tokenId} was not found`);
      const orgTokens = tx.tokens.list({ orgId: token.orgId }).filter((t) => t.type === 'org');
      if (token.type === 'org' && orgTokens.length === 1) {
        throw new HangarError(
          'failed_precondition',
          `token ${tokenId} is the organization's last org token; create another org token before revoking it`,
        );
      }
      tx.tokens.delete(tokenId);
    });
  }

  /** What `GET /v1/tokens/current` reports about the caller. */
  async describe(principal: Principal): Promise<{ org: OrgRecord; appNames: string[] }> {
    return this.ctx.store.read((tx) => {
      const org = tx.orgs.get(principal.orgId)!;
      const apps = principal.appId ? [tx.apps.get(principal.appId)] : tx.apps.list({ orgId: org.id });
      return { org, appNames: apps.filter((a) => a !== undefined).map((a) => a.name) };
    });
  }

  /** True until the `personal` org exists (first start). */
  async needsBootstrap(): Promise<boolean> {
    return this.ctx.store.read((tx) => tx.orgs.list({ slug: 'personal' }).length === 0);
  }

  /**
   * First start: creates the `personal` org, its default network and an org token whose secret the
   * caller already stored (so a crash can never leave an org whose only token was lost).
   */
  async bootstrap(minted: { id: string; secretHash: string }): Promise<void> {
    await this.ctx.store.write((tx) => {
      if (tx.orgs.list({ slug: 'personal' }).length > 0) return;
      const createdAt = isoNow(this.ctx);
      const org: OrgRecord = {
        id: newOrgId(),
        slug: 'personal',
        name: 'Personal',
        internalNumericId: tx.nextSequence('org'),
        createdAt,
      };
      tx.orgs.insert(org);
      tx.networks.insert({ id: tx.nextSequence('network'), orgId: org.id, name: DEFAULT_NETWORK, createdAt });
      tx.tokens.insert({
        id: minted.id,
        type: 'org',
        orgId: org.id,
        appId: null,
        name: 'personal org token (created at first start)',
        secretHash: minted.secretHash,
        createdAt,
        expiresAt: null,
      });
    });
  }
}

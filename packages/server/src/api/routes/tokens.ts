import type { FastifyInstance } from 'fastify';
import { invalidArgument } from '../../shared/errors.js';
import { byCreation, pageQuery, paginate } from '../pagination.js';
import { queryString } from '../query.js';
import { principalOf, type RouteDeps } from '../route-context.js';
import { CreateTokenBody, DeployTokenBody } from '../schemas.js';
import * as wire from '../serialize.js';
import { parse } from '../validate.js';

/**
 * Fly manages tokens through GraphQL; Hangar serves the same operations as REST extensions under
 * /v1/tokens, plus Fly's own `POST /v1/apps/{app}/deploy_token`.
 */
export function tokenRoutes(app: FastifyInstance, { platform }: RouteDeps): void {
  const { tokens } = platform;
  const act = (action: string) => ({ config: { rate: 'machine_action' as const, action } });

  app.post('/v1/tokens', act('token.create'), async (request, reply) => {
    const body = parse(CreateTokenBody, request.body, 'body');
    const { record, token } = await tokens.create(principalOf(request), {
      type: body.type,
      orgSlug: body.org_slug,
      ...(body.app_name !== undefined ? { appName: body.app_name } : {}),
      ...(body.name !== undefined ? { name: body.name } : {}),
      ...(body.expiry !== undefined ? { expiry: body.expiry } : {}),
    });
    return reply.status(201).send({ ...wire.token(record, body.org_slug, body.app_name ?? null), token });
  });

  app.get('/v1/tokens', async (request) => {
    const orgSlug = queryString(request, 'org_slug');
    if (!orgSlug) throw invalidArgument('org_slug: this query parameter is required');
    const query = pageQuery(request);
    const list = await tokens.list(principalOf(request), orgSlug);
    const page = paginate(list, ({ token }) => byCreation(token), query);
    return {
      tokens: page.items.map(({ token, org, appName }) => wire.token(token, org.slug, appName)),
      ...(page.next ? { next_cursor: page.next } : {}),
    };
  });

  app.get('/v1/tokens/current', async (request) => {
    const principal = principalOf(request);
    const { org, appNames } = await tokens.describe(principal);
    return {
      tokens: [
        {
          token_id: principal.tokenId,
          type: principal.type,
          org_slug: org.slug,
          organization: org.name,
          apps: appNames,
        },
      ],
    };
  });

  app.delete('/v1/tokens/:token_id', act('token.revoke'), async (request) => {
    const { token_id } = request.params as { token_id: string };
    await tokens.revoke(principalOf(request), token_id);
    return { ok: true };
  });

  app.post('/v1/apps/:app_name/deploy_token', act('token.create'), async (request) => {
    const { app_name } = request.params as { app_name: string };
    const body = parse(DeployTokenBody, request.body, 'body');
    const { token } = await tokens.createDeployToken(principalOf(request), app_name, body.expiry);
    return { token };
  });
}

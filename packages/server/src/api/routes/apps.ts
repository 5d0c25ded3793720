import type { FastifyInstance } from 'fastify';
import { invalidArgument } from '../../shared/errors.js';
import { byCreation, pageQuery, paginate } from '../pagination.js';
import { queryBool, queryString } from '../query.js';
import { principalOf, type RouteDeps } from '../route-context.js';
import { CreateAppBody } from '../schemas.js';
import * as wire from '../serialize.js';
import { parse } from '../validate.js';

export function appRoutes(app: FastifyInstance, { platform }: RouteDeps): void {
  app.post(
    '/v1/apps',
    { config: { rate: 'machine_action', action: 'app.create' } },
    async (request, reply) => {
      const body = parse(CreateAppBody, request.body, 'body');
      const view = await platform.apps.create(principalOf(request), {
        name: (body.app_name ?? body.name)!,
        orgSlug: body.org_slug,
        ...(body.network !== undefined ? { network: body.network } : {}),
      });
      return reply.status(201).send(wire.app(view));
    },
  );

  app.get('/v1/apps', { config: { rate: 'machine_read', action: 'apps.list' } }, async (request) => {
    const orgSlug = queryString(request, 'org_slug');
    if (!orgSlug)
      throw invalidArgument('org_slug: this query parameter is required (your default org is "personal")');
    const query = pageQuery(request);
    const views = await platform.apps.list(principalOf(request), orgSlug);
    const page = paginate(views, (view) => byCreation(view.app), query);
    // total_apps counts them all, as Fly's does; `apps` is the page.
    return {
      total_apps: views.length,
      apps: page.items.map(wire.listApp),
      ...(page.next ? { next_cursor: page.next } : {}),
    };
  });

  app.get('/v1/apps/:app_name', { config: { rate: 'machine_read', action: 'app.get' } }, async (request) => {
    const { app_name } = request.params as { app_name: string };
    return wire.app(await platform.apps.get(principalOf(request), app_name));
  });

  app.delete(
    '/v1/apps/:app_name',
    { config: { rate: 'app_delete', action: 'app.delete' } },
    async (request, reply) => {
      const { app_name } = request.params as { app_name: string };
      await platform.apps.destroy(principalOf(request), app_name, queryBool(request, 'force'));
      return reply.status(202).send();
    },
  );
}

import type { FastifyInstance } from 'fastify';
import { pageQuery, paginate } from '../pagination.js';
import { principalOf, type RouteDeps } from '../route-context.js';
import { AllocateIpBody } from '../schemas.js';
import * as wire from '../serialize.js';
import { parse } from '../validate.js';

export function ipRoutes(app: FastifyInstance, { platform }: RouteDeps): void {
  const base = '/v1/apps/:app_name/ip_assignments';

  app.get(base, { config: { rate: 'machine_read', action: 'ips.list' } }, async (request) => {
    const { app_name } = request.params as { app_name: string };
    const query = pageQuery(request);
    const list = await platform.ips.list(principalOf(request), app_name);
    const page = paginate(list, ({ ip }) => `${ip.createdAt} ${ip.ip}`, query);
    return { ips: page.items.map(wire.ip), ...(page.next ? { next_cursor: page.next } : {}) };
  });

  app.post(base, { config: { rate: 'machine_action', action: 'ip.allocate' } }, async (request) => {
    const { app_name } = request.params as { app_name: string };
    const body = parse(AllocateIpBody, request.body, 'body');
    const view = await platform.ips.allocate(principalOf(request), app_name, {
      type: body.type,
      ...(body.region !== undefined ? { region: body.region } : {}),
      ...(body.network !== undefined ? { network: body.network } : {}),
      ...(body.org_slug !== undefined ? { orgSlug: body.org_slug } : {}),
      ...(body.service_name !== undefined ? { serviceName: body.service_name } : {}),
    });
    return wire.ip(view);
  });

  app.delete(`${base}/:ip`, { config: { rate: 'machine_action', action: 'ip.release' } }, async (request) => {
    const { app_name, ip } = request.params as { app_name: string; ip: string };
    // The router has decoded the path once already: decoding again made "%25" a 500.
    await platform.ips.release(principalOf(request), app_name, ip);
    return { ok: true };
  });
}

import type { FastifyInstance } from 'fastify';
import { principalOf, type RouteDeps } from '../route-context.js';
import { ImportCertificateBody } from '../schemas.js';
import * as wire from '../serialize.js';
import { parse } from '../validate.js';

const act = (action: string) => ({ config: { rate: 'machine_action' as const, action } });
const read = (action: string) => ({ config: { rate: 'machine_read' as const, action } });

/** Fly's certificates API, custom (imported) certificates only: ACME is not implemented. */
export function certificateRoutes(app: FastifyInstance, { platform }: RouteDeps): void {
  const { certificates } = platform;
  const base = '/v1/apps/:app_name/certificates';
  type Params = { app_name: string; hostname: string };

  app.get(base, read('certificates.list'), async (request) => {
    const { app_name } = request.params as Params;
    const list = await certificates.list(principalOf(request), app_name);
    return { certificates: list.map(wire.certificate), total_count: list.length };
  });

  app.post(`${base}/custom`, act('certificates.import'), async (request, reply) => {
    const { app_name } = request.params as Params;
    const body = parse(ImportCertificateBody, request.body, 'body');
    const record = await certificates.importCustom(principalOf(request), app_name, {
      hostname: body.hostname,
      fullchain: body.fullchain,
      privateKey: body.private_key,
    });
    return reply.status(201).send(wire.certificate(record));
  });

  app.get(`${base}/:hostname`, read('certificates.get'), async (request) => {
    const { app_name, hostname } = request.params as Params;
    return wire.certificate(await certificates.get(principalOf(request), app_name, hostname));
  });

  app.delete(`${base}/:hostname`, act('certificates.delete'), async (request) => {
    const { app_name, hostname } = request.params as Params;
    await certificates.remove(principalOf(request), app_name, hostname);
    return { ok: true };
  });
}

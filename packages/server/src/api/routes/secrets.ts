import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HangarError } from '../../shared/errors.js';
import { pageQuery, paginate } from '../pagination.js';
import { queryBool, queryInt } from '../query.js';
import { principalOf, type RouteDeps } from '../route-context.js';
import { SetSecretBody, SetSecretsBody } from '../schemas.js';
import * as wire from '../serialize.js';
import { parse } from '../validate.js';

const act = (action: string) => ({ config: { rate: 'machine_action' as const, action } });
const read = (action: string) => ({ config: { rate: 'machine_read' as const, action } });

/** Values go in, never out: Hangar has no token kind that may read a secret back. */
function refusePlaintext(request: FastifyRequest): void {
  if (queryBool(request, 'show_secrets')) {
    throw new HangarError(
      'forbidden',
      'Hangar never returns secret values over the API; read them inside a machine, where they are environment variables',
    );
  }
}

/** fly-go sends `version`, the newer spec `min_version`. */
const minVersion = (request: FastifyRequest) =>
  queryInt(request, 'min_version', { min: 0, max: Number.MAX_SAFE_INTEGER }) ??
  queryInt(request, 'version', { min: 0, max: Number.MAX_SAFE_INTEGER });

export function secretRoutes(app: FastifyInstance, { platform }: RouteDeps): void {
  const { secrets } = platform;
  const base = '/v1/apps/:app_name/secrets';
  type Params = { app_name: string; secret_name: string };

  app.get(base, read('secrets.list'), async (request) => {
    refusePlaintext(request);
    const { app_name } = request.params as Params;
    const query = pageQuery(request);
    const list = await secrets.list(principalOf(request), app_name, minVersion(request));
    const page = paginate(list, (secret) => `${secret.createdAt} ${secret.name}`, query);
    return { secrets: page.items.map(wire.secret), ...(page.next ? { next_cursor: page.next } : {}) };
  });

  app.post(base, act('secrets.set'), async (request) => {
    const { app_name } = request.params as Params;
    const { values } = parse(SetSecretsBody, request.body, 'body');
    const { secrets: list, version } = await secrets.apply(principalOf(request), app_name, values);
    // `Version` is Fly's deprecated capitalised copy; old clients still read it.
    return { secrets: list.map(wire.secret), version, Version: version };
  });

  app.get(`${base}/:secret_name`, read('secret.get'), async (request) => {
    refusePlaintext(request);
    const { app_name, secret_name } = request.params as Params;
    return wire.secret(await secrets.get(principalOf(request), app_name, secret_name));
  });

  app.post(`${base}/:secret_name`, act('secret.set'), async (request, reply) => {
    const { app_name, secret_name } = request.params as Params;
    const { value } = parse(SetSecretBody, request.body, 'body');
    const { secrets: list, version } = await secrets.apply(principalOf(request), app_name, {
      [secret_name]: value,
    });
    const record = list.find((s) => s.name === secret_name)!;
    return reply.status(201).send({ ...wire.secret(record), version });
  });

  app.delete(`${base}/:secret_name`, act('secret.unset'), async (request) => {
    const { app_name, secret_name } = request.params as Params;
    return { version: await secrets.unset(principalOf(request), app_name, secret_name) };
  });
}

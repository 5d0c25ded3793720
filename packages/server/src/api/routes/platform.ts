import type { FastifyInstance } from 'fastify';
import { HANGARD_VERSION } from '../../shared/version.js';
import type { RouteDeps } from '../route-context.js';

/** One host, one region today; the shape is Fly's (fly-go decodes the capitalised keys). */
export function platformRoutes(app: FastifyInstance, { platform }: RouteDeps): void {
  app.get('/v1/platform/regions', async () => {
    const code = platform.region;
    const regions = [
      {
        code,
        name: `Hangar region ${code}`,
        latitude: 0,
        longitude: 0,
        gateway_available: false,
        requires_paid_plan: false,
        deprecated: false,
        capacity: 1,
        geo_region: 'local',
      },
    ];
    return { Regions: regions, regions, Nearest: code, nearest: code };
  });

  // Hangar's own: which hangard answers, so clients (`hangar doctor`) can tell a version mismatch.
  // Behind authentication, unlike /healthz, so an anonymous caller does not learn it.
  app.get('/v1/platform/version', async () => ({ name: 'hangard', version: HANGARD_VERSION }));
}

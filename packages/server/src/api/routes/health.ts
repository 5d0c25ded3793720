import type { FastifyInstance } from 'fastify';
import type { MetricsRegistry } from '../../shared/metrics.js';

/** What /readyz reports: each part and whether it is up. */
export interface Readiness {
  ready: boolean;
  checks: Record<string, boolean>;
}

export interface HealthDeps {
  readiness: () => Promise<Readiness>;
  metrics: MetricsRegistry;
}

/**
 * Unauthenticated endpoints for supervisors and scrapers: liveness, readiness and Prometheus metrics.
 * They reveal no app or machine names beyond the proxy's per-app metric labels.
 */
export function healthRoutes(app: FastifyInstance, deps: HealthDeps): void {
  const open = { config: { public: true } };
  app.get('/healthz', open, async () => ({ status: 'ok' }));
  app.get('/readyz', open, async (_request, reply) => {
    const readiness = await deps.readiness();
    return reply.status(readiness.ready ? 200 : 503).send({
      status: readiness.ready ? 'ready' : 'not_ready',
      checks: readiness.checks,
    });
  });
  app.get('/metrics', open, async (_request, reply) =>
    reply.type('text/plain; version=0.0.4; charset=utf-8').send(deps.metrics.render()),
  );
}

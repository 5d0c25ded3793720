import type { MetricsRegistry } from '../shared/metrics.js';

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** What the proxy counts, by app (docs/proxy.md lists them). */
export function proxyMetrics(registry: MetricsRegistry) {
  return {
    requests: registry.counter('hangar_proxy_requests_total', 'Requests answered, by app and status class.'),
    latency: registry.histogram(
      'hangar_proxy_request_duration_seconds',
      'Time from a request arriving to its answer being sent, by app.',
      LATENCY_BUCKETS,
    ),
    wakes: registry.counter(
      'hangar_proxy_wakes_total',
      'Machines woken for requests, by app and prior state.',
    ),
    wakeFailures: registry.counter(
      'hangar_proxy_wake_failures_total',
      'Wakes that failed or timed out, by app.',
    ),
    wakeDuration: registry.histogram(
      'hangar_proxy_wake_duration_seconds',
      'Time from a wake being asked to the machine being ready, by app.',
      LATENCY_BUCKETS,
    ),
    queueDepth: registry.gauge(
      'hangar_proxy_queue_depth',
      'Requests waiting for a machine (a wake, or a slot below the hard limit), by app.',
    ),
    autostops: registry.counter(
      'hangar_proxy_autostops_total',
      'Machines stopped or suspended when idle, by app and mode.',
    ),
  };
}

export type ProxyMetrics = ReturnType<typeof proxyMetrics>;

export const statusClass = (status: number) => `${Math.floor(status / 100)}xx`;

/**
 * A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
 * exposition format. The proxy records into it and the api serves it at /metrics; it sits in shared/ so
 * that neither imports the other.
 */

export type Labels = Readonly<Record<string, string>>;

const escapeLabel = (value: string) =>
  value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

function labelText(labels: Labels, extra?: [string, string]): string {
  const entries = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b));
  if (extra) entries.push(extra);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

/** A map key for a label set: names in code-unit order (no locale: this runs on every request). */
function keyOf(labels: Labels): string {
  const names = Object.keys(labels);
  if (names.length > 1) names.sort();
  let key = '';
  for (const name of names) key += `${name}\u0000${labels[name]}\u0001`;
  return key;
}

interface Metric {
  render(): string[];
}

export class Counter implements Metric {
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    const key = keyOf(labels);
    const entry = this.#values.get(key) ?? { labels, value: 0 };
    entry.value += by;
    this.#values.set(key, entry);
  }

  get(labels: Labels = {}): number {
    return this.#values.get(keyOf(labels))?.value ?? 0;
  }

  render(): string[] {
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} counter`,
      ...[...this.#values.values()].map((e) => `${this.name}${labelText(e.labels)} ${e.value}`),
    ];
  }
}

export class Gauge implements Metric {
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  add(labels: Labels, by: number): void {
    const key = keyOf(labels);
    const entry = this.#values.get(key) ?? { labels, value: 0 };
    entry.value += by;
    this.#values.set(key, entry);
  }

  get(labels: Labels = {}): number {
    return this.#values.get(keyOf(labels))?.value ?? 0;
  }

  render(): string[] {
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} gauge`,
      ...[...this.#values.values()].map((e) => `${this.name}${labelText(e.labels)} ${e.value}`),
    ];
  }
}

export class Histogram implements Metric {
  readonly #values = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {}

  observe(labels: Labels, value: number): void {
    const key = keyOf(labels);
    const entry = this.#values.get(key) ?? {
      labels,
      counts: this.buckets.map(() => 0),
      sum: 0,
      count: 0,
    };
    this.buckets.forEach((bound, i) => {
      if (value <= bound) entry.counts[i]! += 1;
    });
    entry.sum += value;
    entry.count += 1;
    this.#values.set(key, entry);
  }

  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const e of this.#values.values()) {
      this.buckets.forEach((bound, i) => {
        lines.push(`${this.name}_bucket${labelText(e.labels, ['le', String(bound)])} ${e.counts[i]}`);
      });
      lines.push(`${this.name}_bucket${labelText(e.labels, ['le', '+Inf'])} ${e.count}`);
      lines.push(`${this.name}_sum${labelText(e.labels)} ${e.sum}`);
      lines.push(`${this.name}_count${labelText(e.labels)} ${e.count}`);
    }
    return lines;
  }
}

export class MetricsRegistry {
  readonly #metrics: Metric[] = [];

  counter(name: string, help: string): Counter {
    return this.#add(new Counter(name, help));
  }

  gauge(name: string, help: string): Gauge {
    return this.#add(new Gauge(name, help));
  }

  histogram(name: string, help: string, buckets: readonly number[]): Histogram {
    return this.#add(new Histogram(name, help, buckets));
  }

  /** The Prometheus text exposition format (version 0.0.4). */
  render(): string {
    return `${this.#metrics.flatMap((m) => m.render()).join('\n')}\n`;
  }

  #add<T extends Metric>(metric: T): T {
    this.#metrics.push(metric);
    return metric;
  }
}

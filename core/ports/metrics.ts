/**
 * Counters and histograms, named in Prometheus style (`pullthrough_requests_total`).
 * Core code reports what happened; an adapter decides where it goes. The noop is what
 * a runtime without a metrics sink, and every test of another part, uses.
 */
export type Labels = Readonly<Record<string, string>>;

export interface Metrics {
  /** Adds `by` (default 1) to a counter. */
  count(name: string, labels?: Labels, by?: number): void;
  /** Records one observation (a duration in seconds, a size in bytes). */
  observe(name: string, value: number, labels?: Labels): void;
}

export const noopMetrics: Metrics = {
  count() {},
  observe() {},
};

/** What each metric is, for the exposition's HELP and TYPE lines. */
export const METRIC_HELP: Readonly<Record<string, { type: 'counter' | 'gauge' | 'histogram'; help: string }>> = {
  pullthrough_requests_total: { type: 'counter', help: 'HTTP requests answered, by route pattern, method and status' },
  pullthrough_cache_requests_total: { type: 'counter', help: 'Successful manifest, blob and layer requests, by kind and result (hit: from the store; miss: from the upstream or a transfer)' },
  pullthrough_served_bytes_total: { type: 'counter', help: 'Bytes of blob and layer bodies sent, by source (store, redirect: the bucket sends them, transfer, upstream)' },
  pullthrough_upstream_requests_total: { type: 'counter', help: 'Requests to upstream registries, by host and status (error: no answer)' },
  pullthrough_job_duration_seconds: { type: 'histogram', help: 'Job run time, by kind and outcome' },
  pullthrough_evictions_total: { type: 'counter', help: 'Blobs and layers evicted by retention, by kind' },
  pullthrough_evicted_bytes_total: { type: 'counter', help: 'Bytes freed by retention, by kind' },
  pullthrough_stored_bytes: { type: 'gauge', help: 'Bytes the catalog counts stored, by kind (blob, layer)' },
  pullthrough_stored_objects: { type: 'gauge', help: 'Stored blobs and extracted layers, by kind' },
  pullthrough_transfers_in_flight: { type: 'gauge', help: 'Blob transfers running in this process' },
  pullthrough_transfer_clients: { type: 'gauge', help: 'Clients attached to the transfers running in this process' },
  pullthrough_jobs: { type: 'gauge', help: 'Jobs in the queue, by kind and state (queued is the queue depth)' },
};

const BUCKETS_SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** A gauge's value at scrape time: computed then (from the catalog, the transfers, the queue). */
export type GaugeSource = () => Promise<Array<{ name: string; labels?: Labels; value: number }>>;

const escape = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const labelText = (labels: Labels) => {
  const keys = Object.keys(labels).sort();
  return keys.length ? `{${keys.map((k) => `${k}="${escape(labels[k]!)}"`).join(',')}}` : '';
};
/** A label set's identity within a series: no escaping (counted on every request; the text is made at scrape time). */
const seriesKey = (labels: Labels) => {
  let key = '';
  for (const k of Object.keys(labels).sort()) key += `${k}\u0000${labels[k]}\u0001`;
  return key;
};

/**
 * Counters and histograms in this process's memory, written out in the Prometheus text
 * format (version 0.0.4) with the gauges computed at scrape time. Bounded by the label
 * sets that occur: routes are patterns, statuses and hosts are few.
 */
export class PrometheusMetrics implements Metrics {
  readonly #counters = new Map<string, Map<string, { labels: Labels; value: number }>>();
  readonly #histograms = new Map<string, Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>>();

  count(name: string, labels: Labels = {}, by = 1): void {
    const series = this.#counters.get(name) ?? new Map();
    this.#counters.set(name, series);
    const key = seriesKey(labels);
    const entry = series.get(key) ?? { labels, value: 0 };
    entry.value += by;
    series.set(key, entry);
  }

  observe(name: string, value: number, labels: Labels = {}): void {
    const series = this.#histograms.get(name) ?? new Map();
    this.#histograms.set(name, series);
    const key = seriesKey(labels);
    const entry = series.get(key) ?? { labels, counts: BUCKETS_SECONDS.map(() => 0), sum: 0, count: 0 };
    BUCKETS_SECONDS.forEach((le, i) => {
      if (value <= le) entry.counts[i]!++;
    });
    entry.sum += value;
    entry.count++;
    series.set(key, entry);
  }

  /** The exposition: every counter and histogram, then the gauges `sources` compute now. */
  async exposition(sources: readonly GaugeSource[]): Promise<string> {
    const lines: string[] = [];
    const head = (name: string, type: string) => {
      const help = METRIC_HELP[name];
      lines.push(`# HELP ${name} ${help?.help ?? name}`, `# TYPE ${name} ${help?.type ?? type}`);
    };
    for (const [name, series] of [...this.#counters].sort(([a], [b]) => a.localeCompare(b))) {
      head(name, 'counter');
      for (const { labels, value } of series.values()) lines.push(`${name}${labelText(labels)} ${value}`);
    }
    for (const [name, series] of [...this.#histograms].sort(([a], [b]) => a.localeCompare(b))) {
      head(name, 'histogram');
      for (const { labels, counts, sum, count } of series.values()) {
        BUCKETS_SECONDS.forEach((le, i) => lines.push(`${name}_bucket${labelText({ ...labels, le: String(le) })} ${counts[i]}`));
        lines.push(`${name}_bucket${labelText({ ...labels, le: '+Inf' })} ${count}`, `${name}_sum${labelText(labels)} ${sum}`, `${name}_count${labelText(labels)} ${count}`);
      }
    }
    const gauges = new Map<string, string[]>();
    for (const source of sources) {
      for (const g of await source()) {
        const list = gauges.get(g.name) ?? [];
        list.push(`${g.name}${labelText(g.labels ?? {})} ${g.value}`);
        gauges.set(g.name, list);
      }
    }
    for (const [name, list] of gauges) {
      head(name, 'gauge');
      lines.push(...list);
    }
    return `${lines.join('\n')}\n`;
  }
}

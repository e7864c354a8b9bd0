import type { Labels, Metrics } from '../ports/metrics.ts';
import type { Clock } from '../ports/clock.ts';

/** The width of an activity window. */
export const ACTIVITY_WINDOW_MS = 5 * 60_000;

/**
 * The activity metrics, as stored (schema/activity.ts):
 * - `cache:<kind>:<hit|miss>` — successful manifest, blob and layer GETs;
 * - `served:<source>` — body bytes sent: `store`, `redirect` (the bucket sent them),
 *   `transfer`, `upstream`;
 * - `upstream:<status>:<host>` — requests to an upstream registry (`error`: no answer).
 */
export interface ActivityRow {
  bucket: number;
  metric: string;
  value: number;
}

export interface UpstreamHealthRow {
  host: string;
  lastSuccessAt: number | null;
  lastErrorAt: number | null;
  lastError: string | null;
}

export interface ActivityBatch {
  rows: ActivityRow[];
  health: UpstreamHealthRow[];
}

/** Statuses that say the upstream is unwell (401, 403 and 404 are answers about a request, not about it). */
export const isFailingStatus = (status: string): boolean => status === 'error' || status === '429' || status.startsWith('5');

/**
 * The Metrics every component reports to, passed on to `inner` (Prometheus on Node) and
 * also kept per five-minute window for the status page: the cache's hits and misses, the
 * bytes sent by source, the upstreams' answers. Kept in memory until the pull counter's
 * batched flush (core/registry/pulls.ts) writes it, so the request path makes no write.
 * Bounded between flushes by windows × metrics, and metrics are few (kinds, sources,
 * configured hosts × statuses).
 */
export class ActivityRecorder implements Metrics {
  readonly #inner: Metrics;
  readonly #clock: Clock;
  #rows = new Map<string, ActivityRow>();
  #health = new Map<string, UpstreamHealthRow>();

  constructor(inner: Metrics, clock: Clock) {
    this.#inner = inner;
    this.#clock = clock;
  }

  get inner(): Metrics {
    return this.#inner;
  }

  count(name: string, labels: Labels = {}, by = 1): void {
    this.#inner.count(name, labels, by);
    const metric = activityMetric(name, labels);
    if (!metric) return;
    const now = this.#clock();
    const bucket = now - (now % ACTIVITY_WINDOW_MS);
    const key = `${bucket} ${metric}`;
    const row = this.#rows.get(key);
    if (row) row.value += by;
    else this.#rows.set(key, { bucket, metric, value: by });
    if (name === 'pullthrough_upstream_requests_total' && labels.host && labels.status) this.#noteHealth(labels.host, labels.status, now);
  }

  observe(name: string, value: number, labels?: Labels): void {
    this.#inner.observe(name, value, labels);
  }

  get pending(): boolean {
    return this.#rows.size > 0 || this.#health.size > 0;
  }

  /** What is pending, which the caller writes; handed back with `restore` when that fails. */
  drain(): ActivityBatch {
    const batch = { rows: [...this.#rows.values()], health: [...this.#health.values()] };
    this.#rows = new Map();
    this.#health = new Map();
    return batch;
  }

  restore(batch: ActivityBatch): void {
    for (const r of batch.rows) {
      const key = `${r.bucket} ${r.metric}`;
      const row = this.#rows.get(key);
      if (row) row.value += r.value;
      else this.#rows.set(key, { ...r });
    }
    for (const h of batch.health) {
      if (h.lastSuccessAt !== null) this.#noteHealth(h.host, '200', h.lastSuccessAt);
      if (h.lastErrorAt !== null) this.#noteHealth(h.host, h.lastError ?? 'error', h.lastErrorAt, h.lastError ?? undefined);
    }
  }

  #noteHealth(host: string, status: string, at: number, text?: string): void {
    const h = this.#health.get(host) ?? { host, lastSuccessAt: null, lastErrorAt: null, lastError: null };
    this.#health.set(host, h);
    if (/^[23]/.test(status)) h.lastSuccessAt = Math.max(h.lastSuccessAt ?? 0, at);
    else if (text !== undefined || isFailingStatus(status)) {
      if ((h.lastErrorAt ?? 0) <= at) {
        h.lastErrorAt = at;
        h.lastError = text ?? (status === 'error' ? 'no answer' : `HTTP ${status}`);
      }
    }
  }
}

/** A stored metric read back (the inverse of `activityMetric`). */
export type ParsedActivity =
  | { family: 'cache'; kind: string; result: string }
  | { family: 'served'; source: string }
  | { family: 'upstream'; status: string; host: string }
  | { family: 'other' };

export function parseActivityMetric(metric: string): ParsedActivity {
  const [family, a = '', ...rest] = metric.split(':');
  if (family === 'cache') return { family, kind: a, result: rest[0] ?? '' };
  if (family === 'served') return { family, source: a };
  if (family === 'upstream') return { family, status: a, host: rest.join(':') };
  return { family: 'other' };
}

/** The stored metric a counter feeds, or undefined for one the page does not keep. */
export function activityMetric(name: string, labels: Labels): string | undefined {
  if (name === 'pullthrough_cache_requests_total' && labels.kind && labels.result) return `cache:${labels.kind}:${labels.result}`;
  if (name === 'pullthrough_served_bytes_total' && labels.source) return `served:${labels.source}`;
  if (name === 'pullthrough_upstream_requests_total' && labels.host && labels.status) return `upstream:${labels.status}:${labels.host}`;
  return undefined;
}

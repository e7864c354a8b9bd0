import type { Catalog, Failure, RepositoryUse } from '../ports/catalog.ts';
import type { Clock } from '../ports/clock.ts';
import { ACTIVITY_WINDOW_MS, isFailingStatus, parseActivityMetric, type ParsedActivity } from './activity.ts';

const HOUR_MS = 3600_000;
const DAY_MS = 24 * HOUR_MS;
/** Repositories and failures listed. */
const LISTED = 10;

export interface StatusDeps {
  catalog: Catalog;
  clock: Clock;
  /** CACHE_MAX_BYTES (0: no cap) and the low-water mark in bytes. */
  capBytes: number;
  lowWaterBytes: number;
  /** The configured upstream hosts (listed even before they answered once). */
  upstreamHosts: readonly string[];
  /** This process's transfers and their clients, where the runtime can count them (Node). */
  localTransfers?: (() => { inFlight: number; clients: number }) | undefined;
  /** Writes this process's pending counts first, so that the summary includes them. */
  flush?: (() => Promise<void>) | undefined;
}

export interface Window {
  hits: number;
  misses: number;
  /** hits / (hits + misses), or null with no requests. */
  hitRatio: number | null;
  byKind: Record<'manifest' | 'blob' | 'layer', { hits: number; misses: number }>;
  /** Body bytes clients got from the store or the bucket: the upstream did not send them. */
  bytesSaved: number;
  /** Body bytes that came from the upstream (a transfer, or passed through). */
  bytesFromUpstream: number;
  upstreamRequests: number;
  upstreamErrors: number;
  tooManyRequests: number;
}

export interface UpstreamStatus {
  host: string;
  lastSuccessAt: number | null;
  lastErrorAt: number | null;
  lastError: string | null;
  hour: { requests: number; errors: number; tooManyRequests: number };
  day: { requests: number; errors: number; tooManyRequests: number };
}

export interface Status {
  generatedAt: number;
  stored: { bytes: number; blobBytes: number; layerBytes: number; blobs: number; layers: number; capBytes: number; lowWaterBytes: number };
  hour: Window;
  day: Window;
  /** The last 24 hours, an hour a point, oldest first: hits and misses (the chart). */
  series: Array<{ at: number; hits: number; misses: number }>;
  inFlight: { transfers: number; extractions: number; localTransfers?: number; localClients?: number };
  /** With details only (the admin scope once access control is on). */
  upstreams?: UpstreamStatus[];
  failures?: Failure[];
  repositories?: RepositoryUse[];
}

const emptyWindow = (): Window => ({
  hits: 0,
  misses: 0,
  hitRatio: null,
  byKind: { manifest: { hits: 0, misses: 0 }, blob: { hits: 0, misses: 0 }, layer: { hits: 0, misses: 0 } },
  bytesSaved: 0,
  bytesFromUpstream: 0,
  upstreamRequests: 0,
  upstreamErrors: 0,
  tooManyRequests: 0,
});

/** Adds one stored activity row to a window. */
function add(w: Window, m: ParsedActivity, value: number): void {
  if (m.family === 'cache') {
    const kind = w.byKind[m.kind as keyof Window['byKind']];
    if (!kind) return;
    if (m.result === 'hit') (kind.hits += value), (w.hits += value);
    else if (m.result === 'miss') (kind.misses += value), (w.misses += value);
  } else if (m.family === 'served') {
    if (m.source === 'store' || m.source === 'redirect') w.bytesSaved += value;
    else w.bytesFromUpstream += value;
  } else if (m.family === 'upstream') {
    w.upstreamRequests += value;
    if (isFailingStatus(m.status)) w.upstreamErrors += value;
    if (m.status === '429') w.tooManyRequests += value;
  }
}

/** What the status page and `pullthrough status` show, from the catalog (every process's counts). */
export async function status(deps: StatusDeps, options: { details: boolean }): Promise<Status> {
  await deps.flush?.();
  const { catalog } = deps;
  const now = deps.clock();
  const currentWindow = now - (now % ACTIVITY_WINDOW_MS);
  // Windows whose start is within the span: the last hour is the twelve latest windows.
  const hourStart = currentWindow - HOUR_MS + ACTIVITY_WINDOW_MS;
  const dayStart = currentWindow - DAY_MS + ACTIVITY_WINDOW_MS;
  const [usage, rows, inFlight] = await Promise.all([catalog.usage(), catalog.activitySince(dayStart), catalog.inFlight(now)]);
  const hour = emptyWindow();
  const day = emptyWindow();
  const seriesStart = now - (now % HOUR_MS) - 23 * HOUR_MS;
  const series = Array.from({ length: 24 }, (_, i) => ({ at: seriesStart + i * HOUR_MS, hits: 0, misses: 0 }));
  const perHost = new Map<string, Pick<UpstreamStatus, 'hour' | 'day'>>();
  for (const row of rows) {
    const m = parseActivityMetric(row.metric);
    const inHour = row.bucket >= hourStart;
    add(day, m, row.value);
    if (inHour) add(hour, m, row.value);
    const point = series[Math.floor((row.bucket - seriesStart) / HOUR_MS)];
    if (point && m.family === 'cache') {
      if (m.result === 'hit') point.hits += row.value;
      else if (m.result === 'miss') point.misses += row.value;
    }
    if (m.family === 'upstream') {
      const h = perHost.get(m.host) ?? { hour: { requests: 0, errors: 0, tooManyRequests: 0 }, day: { requests: 0, errors: 0, tooManyRequests: 0 } };
      perHost.set(m.host, h);
      for (const span of inHour ? [h.day, h.hour] : [h.day]) {
        span.requests += row.value;
        if (isFailingStatus(m.status)) span.errors += row.value;
        if (m.status === '429') span.tooManyRequests += row.value;
      }
    }
  }
  for (const w of [hour, day]) w.hitRatio = w.hits + w.misses > 0 ? w.hits / (w.hits + w.misses) : null;
  const local = deps.localTransfers?.();
  const result: Status = {
    generatedAt: now,
    stored: { bytes: usage.blobBytes + usage.layerBytes, blobBytes: usage.blobBytes, layerBytes: usage.layerBytes, blobs: usage.blobs, layers: usage.layers, capBytes: deps.capBytes, lowWaterBytes: deps.lowWaterBytes },
    hour,
    day,
    series,
    inFlight: { ...inFlight, ...(local ? { localTransfers: local.inFlight, localClients: local.clients } : {}) },
  };
  if (!options.details) return result;
  const [health, failures, repositories] = await Promise.all([catalog.upstreamHealth(), catalog.recentFailures(LISTED), catalog.topRepositories(LISTED)]);
  const hosts = [...new Set([...deps.upstreamHosts, ...health.map((h) => h.host)])];
  result.upstreams = hosts.map((host) => {
    const h = health.find((x) => x.host === host);
    const counts = perHost.get(host) ?? { hour: { requests: 0, errors: 0, tooManyRequests: 0 }, day: { requests: 0, errors: 0, tooManyRequests: 0 } };
    return { host, lastSuccessAt: h?.lastSuccessAt ?? null, lastErrorAt: h?.lastErrorAt ?? null, lastError: h?.lastError ?? null, ...counts };
  });
  result.failures = failures;
  result.repositories = repositories;
  return result;
}

// The one wiring of pullthrough's parts, shared by both runtimes (workers/node.ts and
// workers/cloudflare.ts) and by the tests: from a parsed configuration and the adapters
// a runtime has (catalog, store, queue) to the app's dependencies and the jobs'.
import { lowWaterBytes, type Config } from '../core/config.ts';
import type { BlobStore } from '../core/ports/blob-store.ts';
import type { Catalog } from '../core/ports/catalog.ts';
import type { JobQueue } from '../core/ports/job-queue.ts';
import type { Upstream } from '../core/ports/upstream.ts';
import type { Spool } from '../core/ports/spool.ts';
import type { SharedCache } from '../core/ports/shared-cache.ts';
import { Transfers, type TransferDeps } from '../core/cache/transfer.ts';
import { noopMetrics, PrometheusMetrics, type GaugeSource, type Metrics } from '../core/ports/metrics.ts';
import { systemClock, type Clock } from '../core/ports/clock.ts';
import type { IngestDeps } from '../core/cache/ingest.ts';
import type { PlanDeps } from '../core/sandbox/plan.ts';
import { PullCounter } from '../core/registry/pulls.ts';
import { ActivityRecorder } from '../core/registry/activity.ts';
import type { NativeDecoders } from '../core/layer/decompress.ts';
import type { WarmDeps } from '../core/cache/warm.ts';
import { PresignedUrls } from '../core/registry/presigned.ts';
import { Flights } from '../core/registry/flights.ts';
import { CachedCatalog } from '../core/registry/memory-cache.ts';
import type { FetchedManifest } from '../core/registry/manifests.ts';
import { UpstreamRegistry, type UpstreamOptions } from '../core/adapters/http-upstream.ts';
import { FilesystemBlobStore } from '../core/adapters/fs-store.ts';
import { S3BlobStore, createS3Client } from '../core/adapters/s3-store.ts';
import type { AppDeps } from '../functions/app.ts';
import type { GcDeps } from '../core/cache/gc.ts';
import type { AccessDeps } from '../functions/access.ts';
import { Replays, type ReplayDeps } from '../functions/replay.ts';
import { Access } from '../core/auth/access.ts';
import { MemoryRateLimiter, type RateLimiter } from '../core/auth/rate-limit.ts';

export type Log = (entry: Record<string, unknown>) => void;

export interface Deps {
  app: AppDeps;
  ingest: IngestDeps;
  plan: PlanDeps;
  /** Garbage collection (the Node scheduler, the Worker's cron, `POST /api/gc`). */
  gc: GcDeps;
  warm: WarmDeps;
  /** Pull counts waiting for their batch write: a stopping runtime flushes them. */
  pulls: PullCounter;
  log: Log;
  metrics: Metrics;
  /** Warm answers to give again before the app, when the runtime reads its requests for them (`Parts.replayRequest`). */
  replays: Replays | undefined;
}

export interface Parts {
  catalog: Catalog;
  store: BlobStore;
  queue: JobQueue;
  log: Log;
  metrics?: Metrics;
  /** Layer decoders the runtime has natively (Node passes its zlib: core/adapters/node-zlib.ts). */
  decoders?: NativeDecoders;
  clock?: Clock;
  /** What the isolates of one place share (a Worker's Cache API): manifests and tag resolutions, behind the in-process cache. */
  sharedCache?: SharedCache;
  /** Local scratch space for blobs in flight (Node, with an S3 store): readers here read it at the upstream's pace. */
  spool?: Spool;
  /** Timings of the transfers (tests shorten them). */
  transfer?: Pick<TransferDeps, 'stallMs' | 'resumes' | 'pollMs'>;
  /** Options of the upstream clients (tests shorten the retries). */
  upstream?: UpstreamOptions;
  /** The cold-work limit (a Worker's binding); else one in process when COLD_RATE_PER_MINUTE is set. */
  limiter?: RateLimiter;
  /** Jobs by kind and state, for the metrics (the libSQL queue; Cloudflare's are not countable from here). */
  jobCounts?: () => Promise<Array<{ kind: string; state: string; n: number }>>;
  /** The libSQL queue's done jobs, which garbage collection removes after a week (Node). */
  doneJobs?: GcDeps['doneJobs'];
  /** The client's address for the anonymous rate limit; else the Node socket's. */
  clientAddress?: AccessDeps['clientAddress'];
  /** A runtime that answers warm requests again before the app (Node) reads a context's request for their keys (functions/replay.ts). */
  replayRequest?: ReplayDeps['requestOf'];
}

/** The peer of the Node socket (@hono/node-server hands the request over as `c.env.incoming`). */
const socketAddress: AccessDeps['clientAddress'] = (c) => (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress;

/** The configured blob store: S3 when `S3_BUCKET` is set, else `DATA_DIR/store`. */
export function storeFor(config: Config): BlobStore {
  if (!config.s3) return new FilesystemBlobStore(`${config.dataDir}/store`);
  return new S3BlobStore(createS3Client(config.s3), {
    bucket: config.s3.bucket,
    endpoint: config.s3.endpoint,
    partSizeBytes: config.ingestPartSizeBytes,
    queueSize: config.ingestQueueSize,
  });
}

export function buildDeps(config: Config, parts: Parts): Deps {
  const { store, queue, log } = parts;
  const clock = parts.clock ?? systemClock;
  // Every part of the process reads and writes through one cache, so its own writes are never seen late.
  const catalog = new CachedCatalog(
    parts.catalog,
    {
      maxBytes: config.memoryCache.maxBytes,
      maxEntries: config.memoryCache.maxEntries,
      ttlMs: config.memoryCache.ttlSeconds * 1000,
      tagTtlMs: config.tagTtlSeconds * 1000,
      shared: parts.sharedCache,
    },
    clock,
  );
  // Every count also goes to the status page's activity windows, written with the pull counts.
  const activity = new ActivityRecorder(parts.metrics ?? noopMetrics, clock);
  const metrics: Metrics = activity;
  const upstreams = new Map<string, Upstream>(Object.entries(config.upstreams).map(([host, u]) => [host, new UpstreamRegistry(host, u, { now: clock, metrics, ...parts.upstream })]));
  const pulls = new PullCounter(catalog, clock, config.pullFlushSeconds * 1000, activity);
  const tagFlights = new Flights<string>();
  const manifests = {
    catalog,
    store,
    upstreams,
    queue,
    pulls,
    clock,
    tagTtlSeconds: config.tagTtlSeconds,
    tagFlights,
    manifestFlights: new Flights<FetchedManifest>(),
    manifestBytes: catalog,
    extractEagerly: config.extract === 'eager',
  };
  const leaseMs = config.jobLeaseSeconds * 1000;
  const transfers = new Transfers({ catalog, store, upstreams, spool: parts.spool, leaseMs, clock, log, ...parts.transfer });
  const plan = { manifests, extractOff: config.extract === 'off', presignTtlSeconds: config.presignTtlSeconds };
  // Gauges are computed when scraped: from the catalog, this process's transfers, the queue.
  const gauges: GaugeSource[] = [
    async () => {
      const u = await catalog.usage();
      return [
        { name: 'pullthrough_stored_bytes', labels: { kind: 'blob' }, value: u.blobBytes },
        { name: 'pullthrough_stored_bytes', labels: { kind: 'layer' }, value: u.layerBytes },
        { name: 'pullthrough_stored_objects', labels: { kind: 'blob' }, value: u.blobs },
        { name: 'pullthrough_stored_objects', labels: { kind: 'layer' }, value: u.layers },
      ];
    },
    async () => {
      const t = transfers.stats();
      return [
        { name: 'pullthrough_transfers_in_flight', value: t.inFlight },
        { name: 'pullthrough_transfer_clients', value: t.clients },
      ];
    },
    async () => (await (parts.jobCounts?.() ?? Promise.resolve([]))).map((j) => ({ name: 'pullthrough_jobs', labels: { kind: j.kind, state: j.state }, value: j.n })),
  ];
  const metricsExposition = () => (activity.inner instanceof PrometheusMetrics ? activity.inner : new PrometheusMetrics()).exposition(gauges);
  const routing = { upstreamHosts: new Set(upstreams.keys()), defaultUpstream: config.defaultUpstream, publicUrl: config.publicUrl };
  const presigned = new PresignedUrls((key, ttl, options) => store.presign(key, ttl, options), clock, config.presignTtlSeconds);
  const warm: WarmDeps = {
    catalog,
    queue,
    clock,
    manifests,
    plan,
    defaultPlatforms: config.warmPlatforms,
    maxAttempts: config.ingestMaxAttempts,
    routing,
    localProgress: (digests) => transfers.progress(digests),
  };
  const gc: GcDeps = {
    catalog,
    store,
    spool: parts.spool,
    doneJobs: parts.doneJobs,
    clock,
    leaseMs,
    log,
    retention: config.retention,
    metrics,
    guardMs: (config.presignTtlSeconds + config.pullFlushSeconds + 60) * 1000,
    settleMs: config.memoryCache.ttlSeconds * 1000,
  };
  const replays = parts.replayRequest ? new Replays({ catalog, clock, pulls, metrics, log, requestOf: parts.replayRequest }) : undefined;
  return {
    app: {
      replays,
      manifests,
      blobs: { catalog, store, upstreams, queue, pulls, clock, transfers, delivery: config.blobDelivery, presigned },
      tags: { catalog, upstreams, clock, tagTtlSeconds: config.tagTtlSeconds, tagFlights },
      routing,
      plan,
      layers: { catalog, store, delivery: config.blobDelivery, presigned },
      access: {
        access: new Access(config.auth, clock),
        limiter: parts.limiter ?? (config.coldRatePerMinute > 0 ? new MemoryRateLimiter(config.coldRatePerMinute, clock) : undefined),
        clientAddress: parts.clientAddress ?? socketAddress,
        log,
      },
      gc,
      warm,
      import: { catalog, store, clock, leaseMs, log },
      status: {
        catalog,
        clock,
        capBytes: config.retention.maxBytes,
        lowWaterBytes: lowWaterBytes(config.retention),
        upstreamHosts: [...upstreams.keys()],
        localTransfers: parts.spool ? () => transfers.stats() : undefined,
        flush: () => pulls.flush(),
      },
      metricsExposition,
      log,
      metrics,
    },
    ingest: { catalog, store, upstreams, leaseMs, clock, transfers, decoders: parts.decoders },
    plan,
    gc,
    warm,
    pulls,
    log,
    metrics,
    replays,
  };
}

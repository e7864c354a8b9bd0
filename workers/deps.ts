// The one wiring of pullthrough's parts, shared by both runtimes (workers/node.ts and
// workers/cloudflare.ts): from a parsed configuration, a database and a queue to the app's
// dependencies and the job handlers'.
import type { Config } from '../core/config.ts';
import type { Database } from '../core/adapters/libsql.ts';
import type { BlobStore } from '../core/ports/blob-store.ts';
import type { JobMessage } from '../core/adapters/libsql-queue.ts';
import { and, eq } from 'drizzle-orm';
import { blobs } from '../schema/blobs.ts';
import { layers } from '../schema/layers.ts';
import { classify, ingestBlob, type IngestDeps, type JobResult } from '../core/cache/ingest.ts';
import { extractLayer, type ExtractDeps } from '../core/cache/extract.ts';
import { rootfsPlan, type PlanDeps } from '../core/sandbox/plan.ts';
import { UpstreamRegistry } from '../core/adapters/http-upstream.ts';
import { FilesystemBlobStore } from '../core/adapters/fs-store.ts';
import { S3BlobStore, createS3Client } from '../core/adapters/s3-store.ts';
import type { AppDeps } from '../functions/app.ts';

export interface Queue {
  send(messages: readonly JobMessage[]): Promise<void>;
}

type Log = (entry: Record<string, unknown>) => void;

export interface Deps {
  app: AppDeps;
  ingest: IngestDeps;
  extract: ExtractDeps;
  plan: PlanDeps;
  log: Log;
}

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

export function buildDeps(config: Config, parts: { db: Database; store: BlobStore; queue: Queue; log: Log }): Deps {
  const { db, store, queue } = parts;
  const upstreams = new Map(Object.entries(config.upstreams).map(([host, u]) => [host, new UpstreamRegistry(host, u)]));
  const manifests = { db, store, upstreams, queue, tagTtlSeconds: config.tagTtlSeconds, extract: config.extract };
  const plan = { manifests, extract: config.extract, presignTtlSeconds: config.presignTtlSeconds };
  const leaseMs = config.jobLeaseSeconds * 1000;
  return {
    app: {
      manifests,
      blobs: { db, store, upstreams, queue, delivery: config.blobDelivery, presignTtlSeconds: config.presignTtlSeconds },
      routing: { upstreamHosts: new Set(upstreams.keys()), defaultUpstream: config.defaultUpstream, publicUrl: config.publicUrl },
      plan,
      layers: { db, store, delivery: config.blobDelivery, presignTtlSeconds: config.presignTtlSeconds },
      log: parts.log,
    },
    ingest: { db, store, upstreams, leaseMs },
    extract: { db, store, leaseMs },
    plan,
    log: parts.log,
  };
}

/** How long an extract job waits for another consumer that is fetching its blob. */
const BLOB_WAIT_MS = 10 * 60 * 1000;
const BLOB_POLL_MS = 1000;

/**
 * The extract job: the layer's blob is ingested first when it is not stored yet (or
 * awaited while another consumer fetches it), then extracted.
 */
async function runExtract(deps: Deps, diffId: string, owner: string): Promise<JobResult> {
  const [layer] = await deps.extract.db.select().from(layers).where(eq(layers.diffId, diffId));
  if (!layer) return { ok: false, retry: false, error: `no layer row for ${diffId}` };
  if (layer.state === 'ready') return { ok: true, outcome: 'already-ready' };
  const deadline = Date.now() + BLOB_WAIT_MS;
  for (;;) {
    const [blob] = await deps.ingest.db.select({ state: blobs.state }).from(blobs).where(eq(blobs.digest, layer.blobDigest));
    if (!blob) return { ok: false, retry: false, error: `no blob row for ${layer.blobDigest}` };
    if (blob.state === 'ready') break;
    const ingested = await ingestBlob(deps.ingest, layer.blobDigest, owner);
    if (!ingested.ok) {
      // Said on the layer too, so that a plan shows why it is not extracting.
      const error = `the layer blob could not be stored: ${ingested.error}`;
      await deps.extract.db.update(layers).set({ state: 'failed', error, updatedAt: Date.now() }).where(and(eq(layers.diffId, diffId), eq(layers.state, 'pending')));
      return { ...ingested, error };
    }
    if (ingested.outcome !== 'leased-elsewhere') continue;
    if (Date.now() > deadline) return { ok: false, retry: true, error: `blob ${layer.blobDigest} is still being fetched by another consumer` };
    await new Promise((resolve) => setTimeout(resolve, BLOB_POLL_MS));
  }
  return extractLayer(deps.extract, diffId, owner);
}

const stringField = (payload: unknown, field: string): string | undefined => {
  const value = (payload as Record<string, unknown> | null)?.[field];
  return typeof value === 'string' ? value : undefined;
};

/**
 * One job as both runtimes' consumers run it (`ingest`, `extract`, `prepare-layers`):
 * validated, timed, and logged when done (`{"msg":kind,…,outcome,attempt,ms,bytes}`);
 * failures are for the caller's queue to retry or record.
 */
export async function runJob(deps: Deps, job: { kind: string; payload: unknown }, owner: string, attempt: number): Promise<JobResult & { subject: Record<string, string> }> {
  const started = performance.now();
  let subject: Record<string, string>;
  let result: JobResult;
  const digest = stringField(job.payload, 'digest');
  const diffId = stringField(job.payload, 'diffId');
  const manifest = stringField(job.payload, 'manifest');
  if (job.kind === 'ingest' && digest) {
    subject = { digest };
    result = await ingestBlob(deps.ingest, digest, owner);
  } else if (job.kind === 'extract' && diffId) {
    subject = { diff_id: diffId };
    result = await runExtract(deps, diffId, owner);
  } else if (job.kind === 'prepare-layers' && manifest) {
    const target = { upstream: stringField(job.payload, 'upstream') ?? '', name: stringField(job.payload, 'name') ?? '' };
    subject = { manifest };
    try {
      await rootfsPlan({ ...deps.plan, extract: 'eager' }, target, manifest);
      result = { ok: true, outcome: 'scheduled' };
    } catch (e) {
      result = classify(e);
    }
  } else {
    return { ok: false, retry: false, error: `unknown job ${JSON.stringify(job.kind)} or bad payload`, subject: {} };
  }
  if (result.ok) {
    const ms = Math.round(performance.now() - started);
    deps.log({ msg: job.kind, ...subject, outcome: result.outcome, attempt, ms, ...(result.outcome === 'stored' ? { bytes: result.bytes } : {}) });
  }
  return { ...result, subject };
}

// The one wiring of pullthrough's parts, shared by both runtimes (workers/node.ts and
// workers/cloudflare.ts): from a parsed configuration, a database and a queue to the app's
// dependencies and the ingest job's.
import type { Config } from '../core/config.ts';
import type { Database } from '../core/db.ts';
import type { BlobStore } from '../core/blobstore.ts';
import type { JobMessage } from '../core/jobs.ts';
import { ingestBlob, type IngestDeps, type JobResult } from '../core/ingest.ts';
import { UpstreamRegistry } from '../core/upstream.ts';
import { FilesystemBlobStore } from '../core/store-fs.ts';
import { S3BlobStore, createS3Client } from '../core/store-s3.ts';
import type { AppDeps } from '../functions/app.ts';

export interface Queue {
  send(messages: readonly JobMessage[]): Promise<void>;
}

type Log = (entry: Record<string, unknown>) => void;

export interface Deps {
  app: AppDeps;
  ingest: IngestDeps;
  log: Log;
}

/** The configured blob store: S3 when `S3_BUCKET` is set, else `DATA_DIR/store`. */
export function storeFor(config: Config): BlobStore {
  if (!config.s3) return new FilesystemBlobStore(`${config.dataDir}/store`);
  return new S3BlobStore(createS3Client(config.s3), {
    bucket: config.s3.bucket,
    partSizeBytes: config.ingestPartSizeBytes,
    queueSize: config.ingestQueueSize,
  });
}

export function buildDeps(config: Config, parts: { db: Database; store: BlobStore; queue: Queue; log: Log }): Deps {
  const { db, store, queue } = parts;
  const upstreams = new Map(Object.entries(config.upstreams).map(([host, u]) => [host, new UpstreamRegistry(host, u)]));
  return {
    app: {
      manifests: { db, store, upstreams, queue, tagTtlSeconds: config.tagTtlSeconds },
      blobs: { db, store, upstreams, queue, delivery: config.blobDelivery, presignTtlSeconds: config.presignTtlSeconds },
      routing: { upstreamHosts: new Set(upstreams.keys()), defaultUpstream: config.defaultUpstream },
      log: parts.log,
    },
    ingest: { db, store, upstreams, leaseMs: config.jobLeaseSeconds * 1000 },
    log: parts.log,
  };
}

/**
 * One ingest job as both runtimes' consumers run it: timed, and a completed one logged
 * (`{"msg":"ingest",digest,outcome,attempt,ms,bytes}`); failures are for the caller's queue.
 */
export async function runIngest(deps: Deps, digest: string, owner: string, attempt: number): Promise<JobResult> {
  const started = performance.now();
  const result = await ingestBlob(deps.ingest, digest, owner);
  if (result.ok) {
    const ms = Math.round(performance.now() - started);
    deps.log({ msg: 'ingest', digest, outcome: result.outcome, attempt, ms, ...(result.outcome === 'stored' ? { bytes: result.bytes } : {}) });
  }
  return result;
}

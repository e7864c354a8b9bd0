import type { NativeDecoders } from '../layer/decompress.ts';
import type { Catalog } from '../ports/catalog.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { Upstreams } from '../ports/upstream.ts';
import type { Clock } from '../ports/clock.ts';
import { DEFER_MS, failureOf, type JobResult } from './retry.ts';
import { TRANSFER_OWNER_PREFIX, type Transfers } from './transfer.ts';

export interface IngestDeps {
  catalog: Catalog;
  store: BlobStore;
  upstreams: Upstreams;
  leaseMs: number;
  clock: Clock;
  /** The job's fetch is the blob's one transfer, which clients join. */
  transfers: Transfers;
  /** Layer decoders the runtime has natively (Node's zlib), used by extraction. */
  decoders?: NativeDecoders | undefined;
}

/**
 * The ingest job: claims the blob row with a lease (so exactly one consumer fetches it),
 * streams the upstream body through a digest + size check into the store, and marks the
 * row ready. A blob that is already ready is a no-op. Every failure is recorded on the
 * row as `failed` with its error; the result says whether the queue should retry.
 * `signal` (the job's own lease) stops the transfer too.
 */
export async function ingestBlob(deps: IngestDeps, digest: string, owner: string, signal?: AbortSignal): Promise<JobResult> {
  const { catalog, clock } = deps;
  const claim = await catalog.claim('blob', digest, owner, deps.leaseMs, clock());
  if (!claim.claimed) {
    if (!claim.current) return { ok: false, retry: false, error: `no blob row for ${digest}` };
    if (claim.current.state === 'ready') return { ok: true, outcome: 'already-ready' };
    // A client's transfer has no job behind it: this job waits for it, and takes over if
    // it fails or its process dies (the lease then runs out).
    if (claim.current.leaseOwner?.startsWith(TRANSFER_OWNER_PREFIX)) {
      return { ok: true, outcome: 'deferred', waitMs: DEFER_MS, reason: `blob ${digest} is being fetched for a client` };
    }
    // A live lease means another consumer is fetching it under its own job or message,
    // which is retried or redelivered if that consumer fails: this duplicate is done.
    return { ok: true, outcome: 'leased-elsewhere' };
  }
  try {
    return { ok: true, outcome: 'stored', bytes: await deps.transfers.run(claim.claimed, owner, signal) };
  } catch (e) {
    return failureOf(e);
  }
}

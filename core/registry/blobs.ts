import type { PresignedUrls } from './presigned.ts';
import type { Catalog } from '../ports/catalog.ts';
import type { BlobStore, ByteRange, LocalFile } from '../ports/blob-store.ts';
import type { JobQueue } from '../ports/job-queue.ts';
import type { Clock } from '../ports/clock.ts';
import { selectUpstream, upstreamError, type Upstreams } from '../ports/upstream.ts';
import { OciError } from '../oci/errors.ts';
import { blobKey } from '../oci/keys.ts';
import { parseDigest, type RepositoryTarget } from '../oci/reference.ts';
import { resolveRange } from '../oci/range.ts';
import type { PullCounter } from './pulls.ts';
import type { Transfers } from '../cache/transfer.ts';
import { confirmInRepository } from './reach.ts';

/** What the read path of manifests and blobs works with. */
export interface RegistryDeps {
  catalog: Catalog;
  store: BlobStore;
  upstreams: Upstreams;
  queue: JobQueue;
  /** Pull counts, written in batches. */
  pulls: PullCounter;
  clock: Clock;
  /**
   * Called before work that makes the mirror contact an upstream for this request (set
   * per request, functions/access.ts): throws TOOMANYREQUESTS when the caller is over
   * its cold-work rate. Absent: no limit.
   */
  admit?: (() => Promise<void>) | undefined;
}

export interface BlobDeps extends RegistryDeps {
  /** The one transfer per cold blob, which clients join. */
  transfers: Transfers;
  delivery: 'redirect' | 'stream';
  /** Presigned bucket URLs for redirects, reused while most of their lifetime is left. */
  presigned: PresignedUrls;
}

export type BlobAnswer = (
  | { kind: 'redirect'; url: string; digest: string; size: number }
  | { kind: 'stored'; digest: string; size: number; range?: ByteRange; body?: ReadableStream<Uint8Array>; file?: LocalFile | undefined }
  | { kind: 'upstream'; digest: string; response: Response }
  /** Fed from the one transfer of the blob (its size when known; `range` when one was asked). */
  | { kind: 'transfer'; digest: string; size: number | undefined; range?: ByteRange | undefined; body: ReadableStream<Uint8Array> }
) & {
  /** Bookkeeping to finish after the response (a batch of pull counts), when some is due. */
  background?: Promise<void> | undefined;
};

/**
 * A blob for a client. Ready blobs come from the store (a presigned redirect, or a
 * stream honouring Range); others are passed through from the upstream while making sure
 * one ingest job exists. HEAD never downloads a body and never enqueues. Throws
 * DIGEST_INVALID, BLOB_UNKNOWN, RANGE_INVALID, UNAVAILABLE, TOOMANYREQUESTS.
 */
export async function getBlob(deps: BlobDeps, target: RepositoryTarget, reference: string, method: 'GET' | 'HEAD', rangeHeader?: string): Promise<BlobAnswer> {
  const digest = parseDigest(reference);
  const row = await deps.catalog.blob(digest.value);
  // Stored content is served under this repository only when the repository reaches it
  // (core/ports/catalog.ts inRepository), or its upstream says it has it: a digest cached
  // through one repository cannot be probed, or read, through another.
  let reached = row !== undefined && (await deps.catalog.inRepository(target, digest.value));
  if (row?.state === 'ready' && row.size !== null && !reached) {
    await confirmInRepository(deps, target, 'blobs', digest.value, new OciError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: digest.value }));
    reached = true;
  }
  if (row?.state === 'ready' && row.size !== null && reached) {
    const background = method === 'GET' ? deps.pulls.count('blob', digest.value) : undefined;
    if (method === 'GET' && deps.delivery === 'redirect') {
      const url = await deps.presigned.url(row.storageKey);
      if (url) return { kind: 'redirect', url, digest: digest.value, size: row.size, background };
    }
    const range = resolveRange(rangeHeader, row.size);
    if (method === 'HEAD') return { kind: 'stored', digest: digest.value, size: row.size };
    const object = await deps.store.get(row.storageKey, range);
    if (object) return { kind: 'stored', digest: digest.value, size: row.size, range, body: object.body, file: object.file, background };
    // The row says ready but the object is gone (deleted behind our back): fetch it again.
    await deps.catalog.blobMissing(digest.value, deps.clock());
  }
  // A GET of a blob this repository reaches joins (or, for the whole blob, starts) its
  // one transfer, which fetches it from the repository that introduced it.
  if (row && reached && method === 'GET' && (!rangeHeader || row.size !== null)) {
    const range = rangeHeader && row.size !== null ? resolveRange(rangeHeader, row.size) : undefined;
    await deps.admit?.();
    // The ingest job stays ensured: it waits while the transfer runs, and takes over if it fails.
    await deps.queue.send([{ kind: 'ingest', digest: digest.value }]);
    const attached = await deps.transfers.attach(row, range);
    if (attached) return { kind: 'transfer', digest: digest.value, size: attached.size, range: attached.range, body: attached.body, background: attached.done };
  }
  const upstream = selectUpstream(deps.upstreams, target.upstream);
  const headers: Record<string, string> = rangeHeader && method === 'GET' ? { range: rangeHeader } : {};
  const res = await upstream.request(method, `/v2/${target.name}/blobs/${digest.value}`, target.name, headers);
  if (!res.ok) throw await upstreamError(res, target.upstream, new OciError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: digest.value }));
  if (!reached) await deps.catalog.recordInRepository(target, digest.value, deps.clock());
  if (method === 'GET') {
    await deps.catalog.recordBlob({ digest: digest.value, upstream: target.upstream, name: target.name, storageKey: blobKey(digest) }, deps.clock());
    await deps.queue.send([{ kind: 'ingest', digest: digest.value }]);
  }
  return { kind: 'upstream', digest: digest.value, response: res };
}

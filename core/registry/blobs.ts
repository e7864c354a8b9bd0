import { eq, sql } from 'drizzle-orm';
import { blobs } from '../../schema/blobs.ts';
import type { Database } from '../adapters/libsql.ts';
import type { BlobStore, ByteRange } from '../ports/blob-store.ts';
import type { UpstreamRegistry } from '../adapters/http-upstream.ts';
import type { JobMessage } from '../adapters/libsql-queue.ts';
import { selectUpstream, upstreamError } from '../adapters/http-upstream.ts';
import { OciError } from '../oci/errors.ts';
import { parseDigest, type RepositoryTarget } from '../oci/reference.ts';
import { recordBlob } from '../cache/ingest.ts';
import { resolveRange } from '../oci/range.ts';

export interface BlobDeps {
  db: Database;
  store: BlobStore;
  upstreams: ReadonlyMap<string, UpstreamRegistry>;
  queue: { send(messages: readonly JobMessage[]): Promise<void> };
  delivery: 'redirect' | 'stream';
  presignTtlSeconds: number;
}

export type BlobAnswer =
  | { kind: 'redirect'; url: string; digest: string }
  | { kind: 'stored'; digest: string; size: number; range?: ByteRange; body?: ReadableStream<Uint8Array> }
  | { kind: 'upstream'; digest: string; response: Response };

/**
 * A blob for a client. Ready blobs come from the store (a presigned redirect, or a
 * stream honouring Range); others are passed through from the upstream while making sure
 * one ingest job exists. HEAD never downloads a body and never enqueues. Throws
 * DIGEST_INVALID, BLOB_UNKNOWN, RANGE_INVALID, UNAVAILABLE, TOOMANYREQUESTS.
 */
export async function getBlob(deps: BlobDeps, target: RepositoryTarget, reference: string, method: 'GET' | 'HEAD', rangeHeader?: string): Promise<BlobAnswer> {
  const digest = parseDigest(reference);
  const [row] = await deps.db.select().from(blobs).where(eq(blobs.digest, digest.value));
  if (row?.state === 'ready' && row.size !== null) {
    if (method === 'GET') {
      await deps.db.update(blobs).set({ pullCount: sql`${blobs.pullCount} + 1`, lastPulledAt: Date.now() }).where(eq(blobs.digest, digest.value));
    }
    if (method === 'GET' && deps.delivery === 'redirect') {
      const url = await deps.store.presign(row.storageKey, deps.presignTtlSeconds);
      if (url) return { kind: 'redirect', url, digest: digest.value };
    }
    const range = resolveRange(rangeHeader, row.size);
    if (method === 'HEAD') return { kind: 'stored', digest: digest.value, size: row.size };
    const object = await deps.store.get(row.storageKey, range);
    if (object) return { kind: 'stored', digest: digest.value, size: row.size, range, body: object.body };
    // The row says ready but the object is gone (deleted behind our back): fetch it again.
    await deps.db.update(blobs).set({ state: 'pending' }).where(eq(blobs.digest, digest.value));
  }
  const upstream = selectUpstream(deps.upstreams, target.upstream);
  const headers: Record<string, string> = rangeHeader && method === 'GET' ? { range: rangeHeader } : {};
  const res = await upstream.request(method, `/v2/${target.name}/blobs/${digest.value}`, target.name, headers);
  if (!res.ok) throw await upstreamError(res, target.upstream, new OciError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: digest.value }));
  if (method === 'GET') {
    await recordBlob(deps.db, { digest: digest.value, upstream: target.upstream, name: target.name });
    await deps.queue.send([{ key: `ingest:${digest.value}`, kind: 'ingest', payload: { digest: digest.value } }]);
  }
  return { kind: 'upstream', digest: digest.value, response: res };
}

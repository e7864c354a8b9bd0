import type { Blob, Catalog } from '../ports/catalog.ts';
import type { Clock } from '../ports/clock.ts';
import { upstreamError, type Upstreams } from '../ports/upstream.ts';
import { OciError, TransientError } from '../oci/errors.ts';
import { whileLeased } from './lease.ts';
import { failureOf } from './retry.ts';

/**
 * The blob's body from the upstream that introduced it, and its size when known (the
 * descriptor's, else the upstream's Content-Length). Throws DENIED for an upstream that is
 * no longer configured, BLOB_UNKNOWN when the upstream does not have it, the upstream's
 * other errors, and the signal's reason when aborted.
 */
export async function openUpstreamBlob(upstreams: Upstreams, row: Blob, signal: AbortSignal): Promise<{ body: ReadableStream<Uint8Array>; size: number | undefined }> {
  const upstream = upstreams.get(row.upstream);
  if (!upstream) throw new OciError('DENIED', 'upstream registry is not configured', { upstream: row.upstream });
  const res = await upstream.request('GET', `/v2/${row.name}/blobs/${row.digest}`, row.name, {}, signal).catch((e: unknown) => {
    throw signal.aborted ? signal.reason : e;
  });
  if (!res.ok) throw await upstreamError(res, row.upstream, new OciError('BLOB_UNKNOWN', 'the upstream does not have the blob', { digest: row.digest, name: row.name }));
  if (!res.body) throw new TransientError('upstream sent no body');
  const contentLength = res.headers.get('content-length');
  return { body: res.body, size: row.size ?? (contentLength !== null ? Number(contentLength) : undefined) };
}

/**
 * Runs `store` (which writes the claimed blob and resolves with its verified size) under
 * the blob row's lease, then records the end on the row: ready with the size, or failed
 * with the error and whether a retry can help (both only while `owner` holds the lease).
 * Rethrows the failure.
 */
export async function storeUnderLease(
  deps: { catalog: Catalog; clock: Clock; leaseMs: number },
  digest: string,
  owner: string,
  signal: AbortSignal | undefined,
  store: (leased: AbortSignal) => Promise<number>,
): Promise<number> {
  const { catalog, clock, leaseMs } = deps;
  try {
    const size = await whileLeased({ what: 'blob', leaseMs, renew: () => catalog.renew('blob', digest, owner, leaseMs, clock()), signal }, store);
    await catalog.blobStored(digest, owner, size, clock());
    return size;
  } catch (e) {
    const failure = failureOf(e);
    await catalog.fail('blob', digest, owner, { message: failure.error, retryable: failure.retry }, clock()).catch(() => {});
    throw e;
  }
}

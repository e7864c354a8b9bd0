import type { Blob, Catalog } from '../ports/catalog.ts';
import type { Clock } from '../ports/clock.ts';
import { upstreamError, type Upstreams } from '../ports/upstream.ts';
import { OciError, TransientError } from '../oci/errors.ts';
import { whileLeased } from './lease.ts';
import { failureOf } from './retry.ts';

/** An upstream blob body, and where in the blob it starts. */
export interface UpstreamBody {
  body: ReadableStream<Uint8Array>;
  /** The blob's size when known (the descriptor's, else the upstream's Content-Length or Content-Range). */
  size: number | undefined;
  /** Offset of the body's first byte: `from` when the upstream honoured the Range, else 0. */
  start: number;
  /** The upstream's validator for the object (ETag), to tell a changed object on resume. */
  etag: string | undefined;
}

/**
 * The blob's body from the upstream that introduced it, from byte `from` on (a Range
 * request; an upstream that ignores it answers from 0, which `start` says). Throws DENIED
 * for an upstream that is no longer configured, BLOB_UNKNOWN when the upstream does not
 * have it, the upstream's other errors, and the signal's reason when aborted.
 */
export async function openUpstreamBlob(upstreams: Upstreams, row: Blob, signal: AbortSignal, from = 0): Promise<UpstreamBody> {
  const upstream = upstreams.get(row.upstream);
  if (!upstream) throw new OciError('DENIED', 'upstream registry is not configured', { upstream: row.upstream });
  const headers: Record<string, string> = from > 0 ? { range: `bytes=${from}-` } : {};
  const res = await upstream.request('GET', `/v2/${row.name}/blobs/${row.digest}`, row.name, headers, signal).catch((e: unknown) => {
    throw signal.aborted ? signal.reason : e;
  });
  if (!res.ok) throw await upstreamError(res, row.upstream, new OciError('BLOB_UNKNOWN', 'the upstream does not have the blob', { digest: row.digest, name: row.name }));
  if (!res.body) throw new TransientError('upstream sent no body');
  const etag = res.headers.get('etag') ?? undefined;
  const contentLength = res.headers.get('content-length');
  if (res.status === 206) {
    const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
    if (!m || Number(m[1]) !== from) {
      await res.body.cancel().catch(() => {});
      throw new TransientError(`the upstream answered a Range from ${from} with ${res.headers.get('content-range') ?? 'no Content-Range'}`);
    }
    const total = m[2] === '*' ? undefined : Number(m[2]);
    return { body: res.body, size: row.size ?? total, start: from, etag };
  }
  return { body: res.body, size: row.size ?? (contentLength !== null ? Number(contentLength) : undefined), start: 0, etag };
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

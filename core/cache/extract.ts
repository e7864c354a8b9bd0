import type { Catalog, Layer } from '../ports/catalog.ts';
import { DigestMismatchError, OciError, TransientError } from '../oci/errors.ts';
import { layerTarKey, layerTocKey } from '../oci/keys.ts';
import { parseDigest } from '../oci/reference.ts';
import { DecompressError, compressionOf, decompressed } from '../layer/decompress.ts';
import { TarError } from '../layer/tar.ts';
import { tocStream, tocWriter } from '../layer/toc.ts';
import { whileLeased } from './lease.ts';
import { DEFER_MS, failureOf, type JobResult } from './retry.ts';
import { ingestBlob, type IngestDeps } from './ingest.ts';

/** The extract job works with what ingest does: it may have to store the layer blob first. */
export type ExtractDeps = IngestDeps;


export interface ImageLayer {
  diffId: string;
  blobDigest: string;
  mediaType: string;
}

/**
 * Records a layer as `pending` unless a row exists. Throws DIGEST_INVALID, and
 * UNSUPPORTED for a media type that is not a layer tar.
 */
export async function recordLayer(catalog: Catalog, source: ImageLayer, now: number): Promise<void> {
  const diffId = parseDigest(source.diffId);
  if (diffId.algorithm !== 'sha256') throw new OciError('DIGEST_INVALID', 'diff_ids must be sha256', { diff_id: diffId.value });
  await catalog.recordLayer(
    {
      diffId: diffId.value,
      blobDigest: parseDigest(source.blobDigest).value,
      mediaType: source.mediaType,
      compression: compressionOf(source.mediaType),
      tarKey: layerTarKey(diffId),
      tocKey: layerTocKey(diffId),
    },
    now,
  );
}

/**
 * The extract job. The layer's blob is ingested first when it is not stored (by this
 * job, under the blob's own lease); while another consumer fetches it, the job is
 * deferred rather than waiting in a consumer. Then the layer row is claimed with a lease
 * and the stored (verified) blob streams through decompression and the tar reader into
 * `layer.tar` while it is hashed, with `toc.json` alongside. `layer.tar` is committed
 * only if its hash equals the diff_id, and `toc.json` only after that; either failing
 * leaves nothing under either key. Every failure is recorded on the row.
 */
export async function extractLayer(deps: ExtractDeps, diffId: string, owner: string, signal?: AbortSignal): Promise<JobResult> {
  const { catalog, clock } = deps;
  const layer = await catalog.layer(diffId);
  if (!layer) return { ok: false, retry: false, error: `no layer row for ${diffId}` };
  if (layer.state === 'ready') return { ok: true, outcome: 'already-ready' };
  const blob = await catalog.blob(layer.blobDigest);
  if (!blob) return { ok: false, retry: false, error: `no blob row for ${layer.blobDigest}` };
  if (blob.state !== 'ready') {
    const ingested = await ingestBlob(deps, layer.blobDigest, owner, signal);
    if (!ingested.ok) {
      // Said on the layer too, so that a plan shows why it is not extracting.
      const error = `the layer blob could not be stored: ${ingested.error}`;
      await catalog.layerBlobFailed(diffId, error, ingested.retry, clock());
      return { ...ingested, error };
    }
    if (ingested.outcome === 'leased-elsewhere' || ingested.outcome === 'deferred') {
      return { ok: true, outcome: 'deferred', waitMs: DEFER_MS, reason: `blob ${layer.blobDigest} is being fetched by another consumer` };
    }
  }

  const claim = await catalog.claim('layer', diffId, owner, deps.leaseMs, clock());
  if (!claim.claimed) {
    if (!claim.current) return { ok: false, retry: false, error: `no layer row for ${diffId}` };
    return { ok: true, outcome: claim.current.state === 'ready' ? 'already-ready' : 'leased-elsewhere' };
  }
  const row = claim.claimed;
  try {
    const done = await whileLeased(
      { what: 'layer', leaseMs: deps.leaseMs, renew: () => catalog.renew('layer', diffId, owner, deps.leaseMs, clock()), signal },
      (leased) => extractIntoStore(deps, row, leased),
    );
    await catalog.layerStored(diffId, owner, { size: done.size, fileCount: done.files, tocDigest: done.tocDigest }, clock());
    return { ok: true, outcome: 'stored', bytes: done.size };
  } catch (e) {
    // Recorded only while we hold the lease (a lost lease leaves the row to its new owner).
    const failure = failureOf(e);
    await catalog.fail('layer', diffId, owner, { message: failure.error, retryable: failure.retry }, clock());
    return failure;
  }
}

async function extractIntoStore(deps: ExtractDeps, row: Layer, signal: AbortSignal): Promise<{ size: number; files: number; tocDigest: string }> {
  const blob = await deps.catalog.blob(row.blobDigest);
  if (blob?.state !== 'ready') throw new TransientError(`blob ${row.blobDigest} is not stored yet`);
  const object = await deps.store.get(blob.storageKey);
  if (!object) throw new TransientError(`blob ${row.blobDigest} is missing from the store`);

  const toc = tocWriter(row.diffId);
  const reader = tocStream((entry) => toc.write(entry));
  const tocPut = deps.store.put(row.tocKey, toc.readable, { contentType: 'application/json' });
  // Keep the TOC upload's rejection handled until it is awaited below.
  tocPut.catch(() => {});
  let size: number;
  try {
    const tar = decompressed(object.body, row.compression, signal, deps.decoders).pipeThrough(reader);
    ({ size } = await deps.store.put(row.tarKey, tar, { expected: { digest: row.diffId }, contentType: 'application/x-tar' }));
  } catch (e) {
    toc.fail(e);
    await tocPut.catch(() => {});
    throw signal.aborted ? signal.reason : layerError(e, row);
  }
  toc.finish(size);
  await tocPut;
  return { size, files: reader.entries(), tocDigest: toc.digest() };
}

/** What went wrong with the layer's content, as a recordable error (none of it changes on a retry). */
function layerError(e: unknown, row: Layer): unknown {
  const where = { diff_id: row.diffId, blob: row.blobDigest, mediaType: row.mediaType };
  if (e instanceof DigestMismatchError) {
    return new OciError('LAYER_INVALID', 'the uncompressed layer does not match the diff_id in the image config', { ...where, actual: e.detail?.actual });
  }
  if (e instanceof TarError) return new OciError('LAYER_INVALID', `the layer is not a valid tar: ${e.message}`, where);
  if (e instanceof DecompressError) return new OciError('LAYER_INVALID', `the layer is not valid ${row.compression}: ${e.message}`, where);
  return e;
}

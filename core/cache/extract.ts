import { and, eq, inArray, lte, or, sql } from 'drizzle-orm';
import { layers, type Layer } from '../../schema/layers.ts';
import { blobs } from '../../schema/blobs.ts';
import type { Database } from '../adapters/libsql.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import { DigestMismatchError, OciError } from '../oci/errors.ts';
import { DecompressError, compressionOf, decompressed } from '../layer/decompress.ts';
import { TarError } from '../layer/tar.ts';
import { tocStream, tocWriter } from '../layer/toc.ts';
import { holdLease } from './lease.ts';
import { classify, type JobResult } from './ingest.ts';
import { parseDigest, type Digest } from '../oci/reference.ts';

/** Public bucket keys of an extracted layer (see README "Bucket layout"). */
export const layerTarKey = (diffId: Digest): string => `layers/${diffId.algorithm}/${diffId.hex}/layer.tar`;
export const layerTocKey = (diffId: Digest): string => `layers/${diffId.algorithm}/${diffId.hex}/toc.json`;

export interface ExtractDeps {
  db: Database;
  store: BlobStore;
  leaseMs: number;
  now?: () => number;
}

export interface LayerSource {
  diffId: string;
  blobDigest: string;
  mediaType: string;
}

/**
 * Records a layer as `pending` unless a row exists. Throws DIGEST_INVALID, and
 * UNSUPPORTED for a media type that is not a layer tar.
 */
export async function recordLayer(db: Database, source: LayerSource, now = Date.now()): Promise<void> {
  const diffId = parseDigest(source.diffId);
  if (diffId.algorithm !== 'sha256') throw new OciError('DIGEST_INVALID', 'diff_ids must be sha256', { diff_id: diffId.value });
  const compression = compressionOf(source.mediaType);
  await db
    .insert(layers)
    .values({
      diffId: diffId.value,
      blobDigest: parseDigest(source.blobDigest).value,
      mediaType: source.mediaType,
      compression,
      tarKey: layerTarKey(diffId),
      tocKey: layerTocKey(diffId),
      createdAt: now,
      updatedAt: now,
    })
    .onConflictDoNothing();
}

/** Errors recorded on a layer row that another attempt will not fix. */
export const isPermanentLayerError = (error: string | null): boolean => error !== null && /^(LAYER_INVALID|UNSUPPORTED):/.test(error);

/**
 * The extract job: claims the layer row with a lease, streams the stored (verified) blob
 * through decompression and the tar reader into `layer.tar` while hashing it, and writes
 * `toc.json` alongside. `layer.tar` is committed only if its hash equals the diff_id,
 * and `toc.json` only after that; either failing leaves nothing under either key. The
 * blob must be ready in the store (the caller ingests it first). Every failure is
 * recorded on the row; the result says whether the queue should retry.
 */
export async function extractLayer(deps: ExtractDeps, diffId: string, owner: string): Promise<JobResult> {
  const now = deps.now ?? Date.now;
  const { db } = deps;
  const claimedAt = now();
  const [row] = await db
    .update(layers)
    .set({ state: 'extracting', leaseOwner: owner, leaseExpiresAt: claimedAt + deps.leaseMs, attempts: sql`${layers.attempts} + 1`, updatedAt: claimedAt })
    .where(
      and(
        eq(layers.diffId, diffId),
        or(inArray(layers.state, ['pending', 'failed']), and(eq(layers.state, 'extracting'), lte(layers.leaseExpiresAt, claimedAt))),
      ),
    )
    .returning();
  if (!row) {
    const [current] = await db.select().from(layers).where(eq(layers.diffId, diffId));
    if (!current) return { ok: false, retry: false, error: `no layer row for ${diffId}` };
    return { ok: true, outcome: current.state === 'ready' ? 'already-ready' : 'leased-elsewhere' };
  }

  const lease = holdLease('layer', async () => {
    const t = now();
    const renewed = await db
      .update(layers)
      .set({ leaseExpiresAt: t + deps.leaseMs, updatedAt: t })
      .where(and(eq(layers.diffId, diffId), eq(layers.leaseOwner, owner)))
      .returning({ diffId: layers.diffId });
    return renewed.length > 0;
  }, deps.leaseMs);
  const mine = and(eq(layers.diffId, diffId), eq(layers.leaseOwner, owner));
  try {
    const done = await extractIntoStore(deps, row, lease.signal);
    const t = now();
    await db
      .update(layers)
      .set({ state: 'ready', size: done.size, fileCount: done.files, tocDigest: done.tocDigest, readyAt: t, updatedAt: t, error: null, leaseOwner: null, leaseExpiresAt: null })
      .where(mine);
    return { ok: true, outcome: 'stored', bytes: done.size };
  } catch (e) {
    const failure = classify(e);
    await db.update(layers).set({ state: 'failed', error: failure.error, updatedAt: now(), leaseOwner: null, leaseExpiresAt: null }).where(mine);
    return failure;
  } finally {
    lease.stop();
  }
}

async function extractIntoStore(deps: ExtractDeps, row: Layer, signal: AbortSignal): Promise<{ size: number; files: number; tocDigest: string }> {
  const [blob] = await deps.db.select().from(blobs).where(eq(blobs.digest, row.blobDigest));
  if (blob?.state !== 'ready') throw new Error(`blob ${row.blobDigest} is not stored yet`);
  const object = await deps.store.get(blob.storageKey);
  if (!object) throw new Error(`blob ${row.blobDigest} is missing from the store`);

  const toc = tocWriter(row.diffId);
  const reader = tocStream((entry) => toc.write(entry));
  const tocPut = deps.store.put(row.tocKey, toc.readable, { contentType: 'application/json' });
  // Keep the TOC upload's rejection handled until it is awaited below.
  tocPut.catch(() => {});
  let size: number;
  try {
    const tar = decompressed(object.body, row.compression, signal).pipeThrough(reader);
    ({ size } = await deps.store.put(row.tarKey, tar, { expected: { digest: row.diffId }, contentType: 'application/x-tar' }));
  } catch (e) {
    toc.fail(e);
    await tocPut.catch(() => {});
    throw layerError(e, row);
  }
  toc.finish(size);
  await tocPut;
  return { size, files: reader.entries(), tocDigest: toc.digest() };
}

/** What went wrong with the layer's content, as a recordable error. */
function layerError(e: unknown, row: Layer): unknown {
  const where = { diff_id: row.diffId, blob: row.blobDigest, mediaType: row.mediaType };
  if (e instanceof DigestMismatchError) {
    return new OciError('LAYER_INVALID', 'the uncompressed layer does not match the diff_id in the image config', { ...where, actual: e.detail?.actual });
  }
  if (e instanceof TarError) return new OciError('LAYER_INVALID', `the layer is not a valid tar: ${e.message}`, where);
  if (e instanceof DecompressError) return new OciError('LAYER_INVALID', `the layer is not valid ${row.compression}: ${e.message}`, where);
  return e;
}

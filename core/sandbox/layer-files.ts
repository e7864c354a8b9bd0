import type { PresignedUrls } from '../registry/presigned.ts';
import type { Catalog, Layer } from '../ports/catalog.ts';
import type { BlobStore, ByteRange, LocalFile } from '../ports/blob-store.ts';
import { OciError } from '../oci/errors.ts';
import { MAX_TOC_BYTES, readCapped } from '../oci/limits.ts';
import { resolveRange } from '../oci/range.ts';
import { parseDigest, type RepositoryTarget } from '../oci/reference.ts';
import { normalizeTarPath } from '../layer/tar.ts';
import { parseToc, type Toc, type TocEntry } from '../layer/toc.ts';

/** Parsed TOCs kept per process/isolate: they never change once published. */
const TOC_CACHE_SIZE = 8;

export interface LayerDeps {
  catalog: Catalog;
  store: BlobStore;
  delivery: 'redirect' | 'stream';
  /** Presigned bucket URLs for redirects, reused while most of their lifetime is left. */
  presigned: PresignedUrls;
}

export type LayerObjectAnswer =
  | { kind: 'redirect'; url: string }
  | { kind: 'stored'; size: number; range?: ByteRange; body?: ReadableStream<Uint8Array>; file?: LocalFile | undefined; contentType: string };

/**
 * The layer row, ready, reached through the repository (its blob is one the repository
 * reaches: core/ports/catalog.ts inRepository). A layer the repository does not reach
 * answers exactly as one that does not exist. Throws DIGEST_INVALID, LAYER_UNKNOWN (with
 * its state when it is not ready).
 */
async function readyLayer(catalog: Catalog, target: RepositoryTarget, diffIdText: string): Promise<Layer> {
  const diffId = parseDigest(diffIdText);
  const row = await catalog.layer(diffId.value);
  if (!row || !(await catalog.inRepository(target, row.blobDigest))) throw new OciError('LAYER_UNKNOWN', 'layer is not extracted', { diff_id: diffId.value });
  if (row.state !== 'ready') throw new OciError('LAYER_UNKNOWN', 'layer is not extracted', { diff_id: diffId.value, state: row.state, error: row.error });
  return row;
}

/**
 * `layer.tar` (honouring Range) or `toc.json` of an extracted layer: a presigned redirect
 * when delivery is `redirect` and the store can sign, else a stream. HEAD reads no body.
 * Throws DIGEST_INVALID, LAYER_UNKNOWN, RANGE_INVALID.
 */
export async function getLayerObject(deps: LayerDeps, target: RepositoryTarget, diffId: string, which: 'tar' | 'toc', method: 'GET' | 'HEAD', rangeHeader?: string): Promise<LayerObjectAnswer> {
  const row = await readyLayer(deps.catalog, target, diffId);
  const key = which === 'tar' ? row.tarKey : row.tocKey;
  const contentType = which === 'tar' ? 'application/x-tar' : 'application/json';
  if (method === 'GET' && deps.delivery === 'redirect') {
    const url = await deps.presigned.url(key, { contentType });
    if (url) return { kind: 'redirect', url };
  }
  const stat = which === 'tar' ? { size: row.size! } : await deps.store.stat(key);
  if (!stat) throw new OciError('LAYER_UNKNOWN', 'layer TOC is missing from the store', { diff_id: row.diffId });
  const range = resolveRange(rangeHeader, stat.size);
  if (method === 'HEAD') return { kind: 'stored', size: stat.size, contentType };
  const object = await deps.store.get(key, range);
  if (!object) throw new OciError('LAYER_UNKNOWN', 'layer is missing from the store', { diff_id: row.diffId });
  return { kind: 'stored', size: stat.size, range, body: object.body, file: object.file, contentType };
}

const tocCache = new Map<string, Toc>();

async function tocOf(deps: LayerDeps, row: Layer): Promise<Toc> {
  const cached = tocCache.get(row.diffId);
  if (cached) {
    tocCache.delete(row.diffId);
    tocCache.set(row.diffId, cached);
    return cached;
  }
  const object = await deps.store.get(row.tocKey);
  if (!object) throw new OciError('LAYER_UNKNOWN', 'layer TOC is missing from the store', { diff_id: row.diffId });
  const toc = parseToc(new TextDecoder().decode(await readCapped(new Response(object.body), MAX_TOC_BYTES)));
  tocCache.set(row.diffId, toc);
  if (tocCache.size > TOC_CACHE_SIZE) tocCache.delete(tocCache.keys().next().value!);
  return toc;
}

export interface LayerFileAnswer {
  entry: TocEntry;
  /** The file's size (the whole file, whatever the range). */
  size: number;
  range?: ByteRange;
  /** Absent for HEAD. */
  body?: ReadableStream<Uint8Array>;
  /** The same bytes in a local file (the filesystem store). */
  file?: LocalFile | undefined;
}

/**
 * One regular file out of an extracted layer, read with a single Range request on
 * layer.tar at the offset its TOC entry gives (a hard link reads its target's data).
 * Throws DIGEST_INVALID, LAYER_UNKNOWN, FILE_UNKNOWN (no such path, or not a regular
 * file: the detail says what it is), RANGE_INVALID.
 */
export async function getLayerFile(deps: LayerDeps, target: RepositoryTarget, diffId: string, path: string, method: 'GET' | 'HEAD', rangeHeader?: string): Promise<LayerFileAnswer> {
  const row = await readyLayer(deps.catalog, target, diffId);
  const toc = await tocOf(deps, row);
  const wanted = normalizeTarPath(path);
  // The last member with a path wins, as when the tar is unpacked.
  const find = (p: string, before = toc.entries.length) => toc.entries.findLast((e, i) => i < before && e.path === p);
  let entry = find(wanted);
  if (!entry) throw new OciError('FILE_UNKNOWN', 'no such path in the layer', { diff_id: row.diffId, path: wanted });
  if (entry.type === 'hardlink') {
    const at = toc.entries.indexOf(entry);
    const target = find(entry.linkname!, at);
    if (target?.type !== 'file') throw new OciError('FILE_UNKNOWN', 'hard link to a path that is not an earlier regular file', { diff_id: row.diffId, path: wanted, linkname: entry.linkname });
    entry = { ...target, path: entry.path };
  }
  if (entry.type !== 'file') {
    throw new OciError('FILE_UNKNOWN', 'not a regular file', { diff_id: row.diffId, path: wanted, type: entry.type, ...(entry.linkname ? { linkname: entry.linkname } : {}) });
  }
  const range = resolveRange(rangeHeader, entry.size);
  if (method === 'HEAD' || entry.size === 0) return { entry, size: entry.size, ...(range ? { range } : {}), ...(method === 'GET' ? { body: new Response(new Uint8Array(0)).body! } : {}) };
  const start = entry.offset + (range?.start ?? 0);
  const end = entry.offset + (range?.end ?? entry.size - 1);
  const object = await deps.store.get(row.tarKey, { start, end });
  if (!object) throw new OciError('LAYER_UNKNOWN', 'layer is missing from the store', { diff_id: row.diffId });
  return { entry, size: entry.size, ...(range ? { range } : {}), body: object.body, file: object.file };
}

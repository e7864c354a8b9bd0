import { OciError } from './errors.ts';

/** Manifests are read whole, so they are capped before they are read (distribution's limit). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Image configs, read whole to find diff_ids: capped like manifests. */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** Tag lists and referrer indexes are read whole: capped like distribution caps bodies. */
export const MAX_LISTING_BYTES = 8 * 1024 * 1024;
/** toc.json is read whole to find a file (a million entries fit). */
export const MAX_TOC_BYTES = 256 * 1024 * 1024;

/** Reads a body up to `limit` bytes; throws UPSTREAM_INVALID beyond it (never buffers more). */
export async function readCapped(res: Response, limit: number): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > limit) {
    await res.body?.cancel();
    throw new OciError('UPSTREAM_INVALID', 'upstream document is larger than the limit', { size: declared, limit });
  }
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of res.body ?? []) {
    total += chunk.byteLength;
    if (total > limit) throw new OciError('UPSTREAM_INVALID', 'upstream document is larger than the limit', { limit });
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

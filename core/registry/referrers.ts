import { selectUpstream, upstreamError, type Upstreams } from '../ports/upstream.ts';
import { OciError } from '../oci/errors.ts';
import { MediaType, parseManifest } from '../oci/manifest.ts';
import { MAX_LISTING_BYTES, readCapped } from '../oci/limits.ts';
import { parseDigest, type RepositoryTarget } from '../oci/reference.ts';

export interface ReferrersAnswer {
  bytes: Uint8Array;
  /** The filters the upstream applied (`OCI-Filters-Applied`), if any. */
  filtersApplied?: string;
}

/**
 * The referrers index of a manifest, passed through from the upstream byte for byte.
 * An upstream without the referrers API answers 404, and so do we: clients then fall back
 * to the `sha256-<hex>` tag schema, which resolves through the manifest route.
 */
export async function listReferrers(deps: { upstreams: Upstreams }, target: RepositoryTarget, reference: string, artifactType: string | undefined): Promise<ReferrersAnswer> {
  const digest = parseDigest(reference);
  const query = artifactType ? `?${new URLSearchParams({ artifactType })}` : '';
  const res = await selectUpstream(deps.upstreams, target.upstream).request('GET', `/v2/${target.name}/referrers/${digest.value}${query}`, target.name, {
    accept: MediaType.OciIndex,
  });
  if (!res.ok) {
    throw await upstreamError(res, target.upstream, new OciError('NAME_UNKNOWN', 'the upstream has no referrers for this name', { name: target.name, digest: digest.value }));
  }
  const bytes = await readCapped(res, MAX_LISTING_BYTES);
  let parsed;
  try {
    parsed = parseManifest(bytes, MediaType.OciIndex);
  } catch (cause) {
    throw new OciError('UPSTREAM_INVALID', 'upstream referrers answer is not an OCI index', undefined, { cause });
  }
  if (parsed.kind !== 'index') throw new OciError('UPSTREAM_INVALID', 'upstream referrers answer is not an OCI index');
  const filtersApplied = res.headers.get('oci-filters-applied');
  return filtersApplied ? { bytes, filtersApplied } : { bytes };
}

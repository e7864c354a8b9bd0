import type { ManifestReference } from '../ports/catalog.ts';
import { selectUpstream, upstreamError } from '../ports/upstream.ts';
import { OciError } from '../oci/errors.ts';
import { digestOf } from '../oci/digest.ts';
import { DEFAULT_PLATFORM, MediaType, accepts, parseManifest, selectPlatform } from '../oci/manifest.ts';
import { MAX_MANIFEST_BYTES, readCapped } from '../oci/limits.ts';
import { blobKey, manifestKey } from '../oci/keys.ts';
import { parseDigest, parseReference, type Digest, type RepositoryTarget } from '../oci/reference.ts';
import type { RegistryDeps } from './blobs.ts';
import type { Flights } from './flights.ts';
import { MANIFEST_ACCEPT, resolveTag } from './tags.ts';
import { confirmInRepository } from './reach.ts';

export interface ManifestDeps extends RegistryDeps {
  tagTtlSeconds: number;
  tagFlights: Flights<string>;
  /** Manifest fetches running now, by repository and digest: concurrent requests share one upstream GET. */
  manifestFlights: Flights<FetchedManifest>;
  /** Every image manifest fetched from the upstream gets its layers extracted (EXTRACT=eager). */
  extractEagerly: boolean;
  /** Manifest bytes by digest kept in memory (core/registry/memory-cache.ts); absent: read from the store every time. */
  manifestBytes?: ManifestBytes | undefined;
}

/** Manifest bytes by digest, in memory: they match their digest, so an entry is never wrong. */
export interface ManifestBytes {
  manifestBytes(digest: string): Promise<Uint8Array | undefined>;
  keepManifestBytes(digest: string, bytes: Uint8Array): Promise<void>;
}

/** A manifest fetched from the upstream, verified, stored and recorded. */
export interface FetchedManifest {
  mediaType: string;
  bytes: Uint8Array;
}

export interface ResolvedManifest {
  digest: string;
  mediaType: string;
  size: number;
  /** Absent for HEAD. */
  bytes?: Uint8Array;
  /** Served from the store (a cache hit), not fetched from the upstream now. */
  fromStore: boolean;
  /** Bookkeeping to finish after the response (a batch of pull counts), when some is due. */
  background?: Promise<void> | undefined;
}

/**
 * A manifest by tag or digest, byte-exact with the upstream. Stored manifests are read
 * from the store; others are fetched by digest, verified, stored and recorded, and the
 * blobs they reference are enqueued for ingest. Throws MANIFEST_UNKNOWN (also for a
 * reference that is neither a tag nor a digest), UPSTREAM_INVALID, UNAVAILABLE, TOOMANYREQUESTS.
 */
export async function getManifest(deps: ManifestDeps, target: RepositoryTarget, reference: string, method: 'GET' | 'HEAD'): Promise<ResolvedManifest> {
  const ref = parseReference(reference);
  const digest = 'tag' in ref ? parseDigest(await resolveTag(deps, target, ref.tag)) : ref.digest;
  const stored = await deps.catalog.manifest(digest.value);
  // A tag resolved here is this repository's; a digest stored through another repository
  // is served here only when this one reaches it too, or its upstream says it has it.
  if (stored && !('tag' in ref) && !(await deps.catalog.inRepository(target, digest.value))) {
    await confirmInRepository(deps, target, 'manifests', digest.value, new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { name: target.name, reference }));
  }
  if (stored) {
    const bytes = method === 'GET' ? await storedManifest(deps, digest.value, stored.storageKey) : undefined;
    if (method === 'HEAD' || bytes) {
      await enqueueMissingBlobs(deps, digest.value);
      const background = method === 'GET' ? deps.pulls.count('manifest', digest.value) : undefined;
      return { digest: digest.value, mediaType: stored.mediaType, size: stored.size, bytes, background, fromStore: true };
    }
  }
  const fetched = await deps.manifestFlights.run(`${target.upstream}/${target.name}@${digest.value}`, () => fetchManifest(deps, target, reference, digest));
  const background = method === 'GET' ? deps.pulls.count('manifest', digest.value) : undefined;
  return { digest: digest.value, mediaType: fetched.mediaType, size: fetched.bytes.length, bytes: method === 'GET' ? fetched.bytes : undefined, background, fromStore: false };
}

/** A stored manifest's bytes: from memory, else read from the store (and kept); undefined when the object is gone. */
async function storedManifest(deps: ManifestDeps, digest: string, key: string): Promise<Uint8Array | undefined> {
  const kept = await deps.manifestBytes?.manifestBytes(digest);
  if (kept) return kept;
  const object = await deps.store.get(key);
  if (!object) return undefined;
  const bytes = await readCapped(new Response(object.body), MAX_MANIFEST_BYTES);
  await deps.manifestBytes?.keepManifestBytes(digest, bytes);
  return bytes;
}

/**
 * Fetches a manifest by digest from the upstream, checks it against the digest, stores
 * and records it with its references, and makes sure its blobs (and, with
 * EXTRACT=eager, its layers) are scheduled.
 */
async function fetchManifest(deps: ManifestDeps, target: RepositoryTarget, reference: string, digest: Digest): Promise<FetchedManifest> {
  const res = await selectUpstream(deps.upstreams, target.upstream).request('GET', `/v2/${target.name}/manifests/${digest.value}`, target.name, MANIFEST_ACCEPT);
  if (!res.ok) throw await upstreamError(res, target.upstream, new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { name: target.name, reference }));
  const bytes = await readCapped(res, MAX_MANIFEST_BYTES);
  const actual = digestOf(bytes, digest.algorithm);
  if (actual !== digest.value) throw new OciError('UPSTREAM_INVALID', 'upstream manifest does not match its digest', { expected: digest.value, actual });
  const parsed = parseManifest(bytes, res.headers.get('content-type') ?? undefined);
  const key = manifestKey(digest);
  await deps.store.put(key, new Response(bytes).body!, { expected: { digest: digest.value, size: bytes.length }, contentType: parsed.mediaType });
  const references: ManifestReference[] =
    parsed.kind === 'image'
      ? [{ d: parsed.config, kind: 'config' as const }, ...parsed.layers.map((d) => ({ d, kind: 'layer' as const }))].map(({ d, kind }, position) => ({
          digest: d.digest,
          kind,
          position,
          blob: { digest: d.digest, upstream: target.upstream, name: target.name, size: d.size, mediaType: d.mediaType, storageKey: blobKey(parseDigest(d.digest)) },
        }))
      : parsed.manifests.map((d, position) => ({ digest: d.digest, kind: 'manifest' as const, position }));
  await deps.catalog.recordManifest({ digest: digest.value, mediaType: parsed.mediaType, size: bytes.length, storageKey: key }, references, deps.clock());
  await deps.catalog.recordInRepository(target, digest.value, deps.clock());
  await deps.manifestBytes?.keepManifestBytes(digest.value, bytes);
  await enqueueMissingBlobs(deps, digest.value);
  if (parsed.kind === 'image' && deps.extractEagerly) {
    await deps.queue.send([{ kind: 'prepare-layers', upstream: target.upstream, name: target.name, manifest: digest.value }]);
  }
  return { mediaType: parsed.mediaType, bytes };
}

/** Makes sure an ingest job exists for every config and layer of a manifest not yet ready. */
async function enqueueMissingBlobs(deps: ManifestDeps, manifestDigest: string): Promise<void> {
  const missing = await deps.catalog.blobsNotReady(manifestDigest);
  if (missing.length > 0) await deps.queue.send(missing.map((digest) => ({ kind: 'ingest' as const, digest })));
}

/**
 * A manifest in a media type the client accepts. When the reference names an index and
 * the client accepts only image manifests (old clients), the index's linux/amd64 child is
 * served instead. Throws MANIFEST_UNKNOWN when nothing acceptable exists, and whatever
 * `getManifest` throws.
 */
export async function getAcceptedManifest(
  deps: ManifestDeps,
  target: RepositoryTarget,
  reference: string,
  method: 'GET' | 'HEAD',
  accepted: readonly string[],
): Promise<ResolvedManifest> {
  const manifest = await getManifest(deps, target, reference, method);
  if (accepts(accepted, manifest.mediaType)) return manifest;
  const unacceptable = new OciError('MANIFEST_UNKNOWN', 'manifest is not available in an accepted media type', { mediaType: manifest.mediaType, accepted });
  if (manifest.mediaType !== MediaType.OciIndex && manifest.mediaType !== MediaType.DockerManifestList) throw unacceptable;
  const index = method === 'GET' ? manifest : await getManifest(deps, target, manifest.digest, 'GET');
  const parsed = parseManifest(index.bytes!, index.mediaType);
  const child = parsed.kind === 'index' ? selectPlatform(parsed.manifests, DEFAULT_PLATFORM) : undefined;
  if (!child || !accepts(accepted, child.mediaType)) throw unacceptable;
  return getManifest(deps, target, child.digest, method);
}

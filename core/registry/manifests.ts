import { and, eq } from 'drizzle-orm';
import { repositories } from '../../schema/repositories.ts';
import { tags } from '../../schema/tags.ts';
import { manifests } from '../../schema/manifests.ts';
import { manifestBlobs } from '../../schema/manifest-blobs.ts';
import { blobs } from '../../schema/blobs.ts';
import type { Database } from '../adapters/libsql.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { UpstreamRegistry } from '../adapters/http-upstream.ts';
import { readCapped, selectUpstream, upstreamError } from '../adapters/http-upstream.ts';
import { OciError, isOciError } from '../oci/errors.ts';
import { digestOf } from '../oci/digest.ts';
import { MANIFEST_MEDIA_TYPES, MAX_MANIFEST_BYTES, MediaType, accepts, parseManifest, selectPlatform } from '../oci/manifest.ts';
import { manifestKey, parseDigest, parseReference, type RepositoryTarget } from '../oci/reference.ts';
import { recordBlob } from '../cache/ingest.ts';
import type { JobMessage } from '../adapters/libsql-queue.ts';
import type { ExtractMode } from '../config.ts';

export interface ManifestDeps {
  db: Database;
  store: BlobStore;
  upstreams: ReadonlyMap<string, UpstreamRegistry>;
  queue: { send(messages: readonly JobMessage[]): Promise<void> };
  tagTtlSeconds: number;
  /** `eager`: every image manifest fetched from the upstream gets its layers extracted. */
  extract?: ExtractMode;
  now?: () => number;
}

export interface ResolvedManifest {
  digest: string;
  mediaType: string;
  size: number;
  /** Absent for HEAD. */
  bytes?: Uint8Array;
}

const ACCEPT = { accept: MANIFEST_MEDIA_TYPES.join(', ') };

/** The repository's row id, created on first use. */
export async function repositoryId(db: Database, target: RepositoryTarget, now: number): Promise<number> {
  await db.insert(repositories).values({ upstream: target.upstream, name: target.name, createdAt: now }).onConflictDoNothing();
  const [row] = await db
    .select({ id: repositories.id })
    .from(repositories)
    .where(and(eq(repositories.upstream, target.upstream), eq(repositories.name, target.name)));
  return row!.id;
}

const upstreamOf = (deps: ManifestDeps, target: RepositoryTarget): UpstreamRegistry => selectUpstream(deps.upstreams, target.upstream);

const upstreamFailure = (res: Response, target: RepositoryTarget, reference: string): Promise<OciError> =>
  upstreamError(res, target.upstream, new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { name: target.name, reference }));

/**
 * Resolves a tag to a digest: the cached digest while fresh, else an upstream HEAD (which
 * Docker Hub does not count as a pull); when the upstream is down, errors or
 * rate-limits, the last known digest. Throws MANIFEST_UNKNOWN when the upstream has no
 * such tag, or the upstream's error when nothing is cached.
 */
async function resolveTag(deps: ManifestDeps, target: RepositoryTarget, tag: string): Promise<string> {
  const now = (deps.now ?? Date.now)();
  const repoId = await repositoryId(deps.db, target, now);
  const [cached] = await deps.db.select().from(tags).where(and(eq(tags.repositoryId, repoId), eq(tags.tag, tag)));
  if (cached && now - cached.resolvedAt < deps.tagTtlSeconds * 1000) return cached.digest;
  let digest: string | undefined;
  try {
    const path = `/v2/${target.name}/manifests/${tag}`;
    const res = await upstreamOf(deps, target).request('HEAD', path, target.name, ACCEPT);
    if (!res.ok) throw await upstreamFailure(res, target, tag);
    digest = res.headers.get('docker-content-digest') ?? undefined;
    if (!digest) {
      // Some registries omit the header on HEAD: hash the (capped) body instead.
      const get = await upstreamOf(deps, target).request('GET', path, target.name, ACCEPT);
      if (!get.ok) throw await upstreamFailure(get, target, tag);
      digest = digestOf(await readCapped(get, MAX_MANIFEST_BYTES));
    }
    parseDigest(digest);
  } catch (e) {
    const stale = cached && isOciError(e) && e.code !== 'MANIFEST_UNKNOWN';
    if (stale) return cached.digest;
    throw e;
  }
  await deps.db
    .insert(tags)
    .values({ repositoryId: repoId, tag, digest, resolvedAt: now })
    .onConflictDoUpdate({ target: [tags.repositoryId, tags.tag], set: { digest, resolvedAt: now } });
  return digest;
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
  const [stored] = await deps.db.select().from(manifests).where(eq(manifests.digest, digest.value));
  if (stored) {
    const object = method === 'GET' ? await deps.store.get(stored.storageKey) : undefined;
    const bytes = object ? await readCapped(new Response(object.body), MAX_MANIFEST_BYTES) : undefined;
    if (method === 'HEAD' || bytes) {
      await enqueueMissingBlobs(deps, digest.value);
      return { digest: digest.value, mediaType: stored.mediaType, size: stored.size, bytes };
    }
  }
  const res = await upstreamOf(deps, target).request('GET', `/v2/${target.name}/manifests/${digest.value}`, target.name, ACCEPT);
  if (!res.ok) throw await upstreamFailure(res, target, reference);
  const bytes = await readCapped(res, MAX_MANIFEST_BYTES);
  const actual = digestOf(bytes, digest.algorithm);
  if (actual !== digest.value) throw new OciError('UPSTREAM_INVALID', 'upstream manifest does not match its digest', { expected: digest.value, actual });
  const parsed = parseManifest(bytes, res.headers.get('content-type') ?? undefined);
  const key = manifestKey(digest);
  await deps.store.put(key, new Response(bytes).body!, { expected: { digest: digest.value, size: bytes.length }, contentType: parsed.mediaType });
  const now = (deps.now ?? Date.now)();
  await deps.db
    .insert(manifests)
    .values({ digest: digest.value, mediaType: parsed.mediaType, size: bytes.length, storageKey: key, createdAt: now })
    .onConflictDoNothing();
  if (parsed.kind === 'image') {
    const refs = [{ d: parsed.config, kind: 'config' as const }, ...parsed.layers.map((d) => ({ d, kind: 'layer' as const }))];
    for (const [position, { d, kind }] of refs.entries()) {
      await recordBlob(deps.db, { digest: d.digest, upstream: target.upstream, name: target.name, size: d.size, mediaType: d.mediaType }, now);
      await deps.db.insert(manifestBlobs).values({ manifestDigest: digest.value, blobDigest: d.digest, kind, position }).onConflictDoNothing();
    }
  } else {
    for (const [position, d] of parsed.manifests.entries()) {
      await deps.db.insert(manifestBlobs).values({ manifestDigest: digest.value, blobDigest: d.digest, kind: 'manifest', position }).onConflictDoNothing();
    }
  }
  await enqueueMissingBlobs(deps, digest.value);
  if (parsed.kind === 'image' && deps.extract === 'eager') {
    await deps.queue.send([{ key: `prepare:${digest.value}`, kind: 'prepare-layers', payload: { upstream: target.upstream, name: target.name, manifest: digest.value } }]);
  }
  return { digest: digest.value, mediaType: parsed.mediaType, size: bytes.length, bytes: method === 'GET' ? bytes : undefined };
}

/** Makes sure an ingest job exists for every config and layer of a manifest not yet ready. */
async function enqueueMissingBlobs(deps: ManifestDeps, manifestDigest: string): Promise<void> {
  const rows = await deps.db
    .select({ digest: blobs.digest, state: blobs.state })
    .from(manifestBlobs)
    .innerJoin(blobs, eq(blobs.digest, manifestBlobs.blobDigest))
    .where(eq(manifestBlobs.manifestDigest, manifestDigest));
  const missing = rows.filter((r) => r.state !== 'ready');
  if (missing.length > 0) await deps.queue.send(missing.map((r) => ({ key: `ingest:${r.digest}`, kind: 'ingest', payload: { digest: r.digest } })));
}

/** The platform served to clients that cannot read an index (as distribution does). */
export const DEFAULT_PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

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

/**
 * Warm-up: images put in the cache before anyone pulls them (`POST /api/warm`,
 * `pullthrough warm`). A run is recorded, then its `warm` job resolves every reference
 * the way a client's pull does (getManifest: the tag, the manifest, for an index the
 * children of the chosen platforms), which schedules each blob not stored yet as an
 * ingest job, so that blobs go through the one transfer per blob that clients use; with
 * `extract`, the layer plan of each image schedules its extraction. Nothing about
 * progress is stored: it is read from the blob and layer rows (and, for a transfer in
 * this process, its bytes so far). Warming what is warm fetches nothing and is done as
 * soon as it is resolved.
 */
import type { Blob, Catalog, Layer } from '../ports/catalog.ts';
import type { JobQueue } from '../ports/job-queue.ts';
import type { Clock } from '../ports/clock.ts';
import type { JobResult } from './retry.ts';
import { OciError, isOciError, type ErrorDetail } from '../oci/errors.ts';
import { parseManifest, parsePlatform, selectPlatform, type Platform } from '../oci/manifest.ts';
import { parseReference, resolveTarget, splitImageReference, type RepositoryTarget } from '../oci/reference.ts';
import { getManifest, type ManifestDeps } from '../registry/manifests.ts';
import { rootfsPlan, type PlanDeps } from '../sandbox/plan.ts';

/** Images one request may name. */
export const MAX_WARM_IMAGES = 200;

export interface WarmDeps {
  catalog: Catalog;
  queue: JobQueue;
  clock: Clock;
  manifests: ManifestDeps;
  plan: PlanDeps;
  /** WARM_PLATFORMS. */
  defaultPlatforms: readonly Platform[];
  /** INGEST_MAX_ATTEMPTS: a failed blob with this many attempts has failed for good. */
  maxAttempts: number;
  /** Where references resolve; PUBLIC_URL, the prefix of URLs handed to clients. */
  routing: { upstreamHosts: ReadonlySet<string>; defaultUpstream: string; publicUrl?: string | undefined };
  /** Bytes staged by this process's transfers, where the runtime keeps them. */
  localProgress?: ((digests: Iterable<string>) => Map<string, number>) | undefined;
}

export interface WarmRequest {
  images: Array<{ reference: string; target: RepositoryTarget; tagOrDigest: string }>;
  platforms: Platform[];
  extract: boolean;
}

/** One image of a run, as its job resolved it: per reference and, for an index, per platform. */
export interface WarmImage {
  reference: string;
  upstream: string;
  name: string;
  /** `os/arch[/variant]`, for a child of an index. */
  platform?: string;
  index?: string;
  manifest?: string;
  error?: { code: string; message: string; detail?: unknown };
}

export type WarmState = 'queued' | 'fetching' | 'stored' | 'retrying' | 'failed';

export interface WarmBlob {
  digest: string;
  kind: 'config' | 'layer';
  size: number | null;
  bytesDone: number;
  state: WarmState;
  error: string | null;
}

export interface WarmLayer {
  diffId: string;
  blob: string;
  size: number | null;
  state: 'queued' | 'extracting' | 'ready' | 'retrying' | 'failed';
  error: string | null;
}

export interface WarmImageStatus extends WarmImage {
  state: 'resolving' | 'running' | 'done' | 'failed';
  bytesDone: number;
  bytesTotal: number;
  blobs: WarmBlob[];
  layers?: WarmLayer[];
}

export interface WarmStatus {
  id: string;
  state: 'resolving' | 'running' | 'done' | 'failed';
  extract: boolean;
  platforms: string[];
  createdAt: number;
  resolvedAt: number | null;
  bytesDone: number;
  bytesTotal: number;
  images: WarmImageStatus[];
}

const platformText = (p: Platform) => [p.os, p.architecture, p.variant].filter(Boolean).join('/');

/** The request body of `POST /api/warm`, checked: throws REQUEST_INVALID, NAME_INVALID, PLATFORM_INVALID, DENIED. */
export function parseWarmRequest(body: unknown, deps: Pick<WarmDeps, 'defaultPlatforms' | 'routing'>): WarmRequest {
  const invalid = (message: string, detail?: ErrorDetail) => new OciError('REQUEST_INVALID', message, detail);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw invalid('the body must be a JSON object: {"images": ["alpine:3.20", …], "platforms": ["linux/amd64"], "extract": false}');
  const { images, platforms, extract } = body as Record<string, unknown>;
  if (!Array.isArray(images) || images.length === 0 || !images.every((i) => typeof i === 'string' && i.trim() !== '')) throw invalid('"images" must be a non-empty list of image references');
  if (images.length > MAX_WARM_IMAGES) throw invalid(`at most ${MAX_WARM_IMAGES} images per request`, { images: images.length });
  if (platforms !== undefined && (!Array.isArray(platforms) || !platforms.every((p) => typeof p === 'string'))) throw invalid('"platforms" must be a list like ["linux/amd64", "linux/arm64"]');
  if (extract !== undefined && typeof extract !== 'boolean') throw invalid('"extract" must be true or false');
  const parsedPlatforms = platforms && platforms.length > 0 ? (platforms as string[]).map(parsePlatform) : [...deps.defaultPlatforms];
  return {
    images: [...new Set(images as string[])].map((reference) => {
      const { path, reference: tagOrDigest } = splitImageReference(reference.trim());
      const target = resolveTarget(path, undefined, deps.routing.upstreamHosts, deps.routing.defaultUpstream);
      try {
        parseReference(tagOrDigest);
      } catch {
        throw invalid('an image reference has neither a valid tag nor a valid digest', { reference });
      }
      return { reference: reference.trim(), target, tagOrDigest };
    }),
    platforms: parsedPlatforms,
    extract: extract === true,
  };
}

/** Records a run and sends its job; the id. */
export async function startWarm(deps: WarmDeps, request: WarmRequest, requestedBy: string): Promise<string> {
  const id = crypto.randomUUID();
  const stored = {
    images: request.images.map((i) => ({ reference: i.reference, upstream: i.target.upstream, name: i.target.name, tagOrDigest: i.tagOrDigest })),
    platforms: request.platforms.map(platformText),
    extract: request.extract,
  };
  await deps.catalog.createWarmRun({ id, request: JSON.stringify(stored), requestedBy }, deps.clock());
  await deps.queue.send([{ kind: 'warm', id }]);
  return id;
}

interface StoredRequest {
  images: Array<{ reference: string; upstream: string; name: string; tagOrDigest: string }>;
  platforms: string[];
  extract: boolean;
}

const errorOf = (e: unknown): NonNullable<WarmImage['error']> =>
  isOciError(e) ? { code: e.code, message: e.message, ...(e.detail !== undefined ? { detail: e.detail } : {}) } : { code: 'UNKNOWN', message: String((e as Error)?.message ?? e) };

/**
 * The `warm` job: resolves each image (an index to the children of the run's platforms),
 * which schedules their blobs, and with `extract` their layers; records what it came to.
 * An image that cannot be resolved is recorded with its error; the others go on.
 */
export async function resolveWarm(deps: WarmDeps, id: string): Promise<JobResult> {
  const run = await deps.catalog.warmRun(id);
  if (!run) return { ok: true, outcome: 'gone' };
  const request = JSON.parse(run.request) as StoredRequest;
  const images: WarmImage[] = [];
  for (const item of request.images) {
    const target = { upstream: item.upstream, name: item.name };
    const base = { reference: item.reference, upstream: item.upstream, name: item.name };
    try {
      const top = await getManifest(deps.manifests, target, item.tagOrDigest, 'GET');
      const parsed = parseManifest(top.bytes!, top.mediaType);
      if (parsed.kind === 'image') {
        images.push({ ...base, manifest: top.digest });
        continue;
      }
      for (const text of request.platforms) {
        const child = selectPlatform(parsed.manifests, parsePlatform(text));
        if (!child) {
          images.push({ ...base, platform: text, index: top.digest, error: { code: 'PLATFORM_UNKNOWN', message: 'the image index has no manifest for this platform' } });
          continue;
        }
        try {
          await getManifest(deps.manifests, target, child.digest, 'GET');
          images.push({ ...base, platform: text, index: top.digest, manifest: child.digest });
        } catch (e) {
          images.push({ ...base, platform: text, index: top.digest, error: errorOf(e) });
        }
      }
    } catch (e) {
      images.push({ ...base, error: errorOf(e) });
    }
  }
  if (request.extract) {
    for (const image of images) {
      if (!image.manifest) continue;
      try {
        await rootfsPlan({ ...deps.plan, extractOff: false }, { upstream: image.upstream, name: image.name }, image.manifest);
      } catch (e) {
        image.error = errorOf(e);
      }
    }
  }
  await deps.catalog.resolveWarmRun(id, JSON.stringify(images), deps.clock());
  return { ok: true, outcome: 'resolved' };
}

/**
 * A leased row's state as a warm-up reports it: `done` (a blob stored, a layer ready) and
 * `busy` (fetching, extracting) under their own names, a failure `retrying` while the
 * queue will try again, `failed` once it will not, anything else `queued`.
 */
function progressOf<Done extends string, Busy extends string>(row: Blob | Layer, maxAttempts: number, names: { ready: Done; busy: Busy }): Done | Busy | 'queued' | 'retrying' | 'failed' {
  if (row.state === 'ready') return names.ready;
  if (row.state === 'fetching' || row.state === 'extracting') return names.busy;
  if (row.state === 'failed') return row.errorRetryable === false || row.attempts >= maxAttempts ? 'failed' : 'retrying';
  return 'queued';
}

/** A run's progress now, or undefined for an unknown id. */
export async function warmStatus(deps: WarmDeps, id: string): Promise<WarmStatus | undefined> {
  const run = await deps.catalog.warmRun(id);
  if (!run) return undefined;
  const request = JSON.parse(run.request) as StoredRequest;
  const base = { id, extract: request.extract, platforms: request.platforms, createdAt: run.createdAt, resolvedAt: run.resolvedAt };
  if (!run.images) {
    const images = request.images.map((i) => ({ reference: i.reference, upstream: i.upstream, name: i.name, state: 'resolving' as const, bytesDone: 0, bytesTotal: 0, blobs: [] }));
    return { ...base, state: 'resolving', bytesDone: 0, bytesTotal: 0, images };
  }
  const images = JSON.parse(run.images) as WarmImage[];
  const manifests = images.flatMap((i) => (i.manifest ? [i.manifest] : []));
  const rows = await deps.catalog.manifestBlobs(manifests);
  const layerRows = request.extract ? await deps.catalog.layersOfBlobs([...new Set(rows.filter((r) => r.kind === 'layer').map((r) => r.blob.digest))]) : [];
  const local = deps.localProgress?.(rows.filter((r) => r.blob.state === 'fetching').map((r) => r.blob.digest)) ?? new Map<string, number>();
  const statuses: WarmImageStatus[] = images.map((image) => {
    const blobs: WarmBlob[] = rows
      .filter((r) => r.manifest === image.manifest)
      .map(({ kind, blob }) => {
        const state = progressOf(blob, deps.maxAttempts, { ready: 'stored', busy: 'fetching' });
        const bytesDone = state === 'stored' ? (blob.size ?? 0) : state === 'fetching' ? (local.get(blob.digest) ?? 0) : 0;
        return { digest: blob.digest, kind, size: blob.size, bytesDone, state, error: state === 'stored' ? null : blob.error };
      });
    const layers = request.extract
      ? blobs
          .filter((b) => b.kind === 'layer')
          .flatMap((b) => layerRows.filter((l) => l.blobDigest === b.digest))
          .map((l) => ({ diffId: l.diffId, blob: l.blobDigest, size: l.size, state: progressOf(l, deps.maxAttempts, { ready: 'ready', busy: 'extracting' }), error: l.state === 'ready' ? null : l.error }))
      : undefined;
    const failed = image.error !== undefined || blobs.some((b) => b.state === 'failed') || (layers ?? []).some((l) => l.state === 'failed');
    const done = blobs.length > 0 && blobs.every((b) => b.state === 'stored') && (!layers || (layers.length > 0 && layers.every((l) => l.state === 'ready')));
    return {
      ...image,
      state: failed ? 'failed' : done ? 'done' : 'running',
      bytesDone: blobs.reduce((n, b) => n + b.bytesDone, 0),
      bytesTotal: blobs.reduce((n, b) => n + (b.size ?? 0), 0),
      blobs,
      ...(layers ? { layers } : {}),
    };
  });
  const finished = statuses.every((s) => s.state === 'done' || s.state === 'failed');
  return {
    ...base,
    state: !finished ? 'running' : statuses.some((s) => s.state === 'failed') ? 'failed' : 'done',
    bytesDone: statuses.reduce((n, s) => n + s.bytesDone, 0),
    bytesTotal: statuses.reduce((n, s) => n + s.bytesTotal, 0),
    images: statuses,
  };
}

import type { Layer } from '../ports/catalog.ts';
import type { LayerState } from '../../schema/layers.ts';
import { selectUpstream, upstreamError } from '../ports/upstream.ts';
import { OciError } from '../oci/errors.ts';
import { digestOf } from '../oci/digest.ts';
import { DEFAULT_PLATFORM, type Platform, parseManifest, selectPlatform } from '../oci/manifest.ts';
import { MAX_CONFIG_BYTES, readCapped } from '../oci/limits.ts';
import { parseDigest, type RepositoryTarget } from '../oci/reference.ts';
import { compressionOf, type Compression } from '../layer/decompress.ts';
import { getManifest, type ManifestDeps } from '../registry/manifests.ts';
import { recordLayer } from '../cache/extract.ts';

/** A layer whose extract job was sent this recently is not sent another by a plan request. */
const RESEND_AFTER_MS = 60_000;

export interface PlanDeps {
  manifests: ManifestDeps;
  /** Extraction is off (EXTRACT=off): plans report layers, nothing is scheduled. */
  extractOff: boolean;
  presignTtlSeconds: number;
}

export interface PlannedLayer {
  /** The compressed blob, as in the manifest. */
  digest: string;
  diffId: string;
  mediaType: string;
  compression: Compression;
  /** Compressed size, from the manifest. */
  size: number;
  /** Bytes in layer.tar, once extracted. */
  uncompressedSize: number | null;
  /** `absent` when extraction is off and the layer was never extracted. */
  state: LayerState | 'absent';
  error: string | null;
  fileCount: number | null;
  tocDigest: string | null;
  /** Bucket keys (a public contract). */
  tarKey: string;
  tocKey: string;
  /** Short-lived presigned bucket URLs when the store has them and the layer is ready. */
  tarUrl?: string;
  tocUrl?: string;
}

export interface RootfsPlan {
  upstream: string;
  name: string;
  /** The image manifest (the platform's child when the reference names an index). */
  manifest: string;
  /** The index the reference named, when it named one. */
  index?: string;
  config: string;
  platform: Platform;
  /** Every layer is ready: the root filesystem can be built now. */
  ready: boolean;
  /** When the presigned URLs stop working (epoch ms, whole seconds as S3 counts), when there are some. */
  urlsExpireAt?: number;
  /** Bookkeeping to finish after the response (a batch of pull counts), when some is due. */
  background?: Promise<void> | undefined;
  layers: PlannedLayer[];
}

interface ImageConfig {
  diffIds: string[];
  platform: Platform;
}

/** The image config, from the store when ready, else from the upstream (verified). */
async function readConfig(deps: ManifestDeps, target: RepositoryTarget, digest: string): Promise<ImageConfig> {
  const row = await deps.catalog.blob(digest);
  let bytes: Uint8Array | undefined;
  if (row?.state === 'ready') {
    const object = await deps.store.get(row.storageKey);
    if (object) bytes = await readCapped(new Response(object.body), MAX_CONFIG_BYTES);
  }
  if (!bytes) {
    const res = await selectUpstream(deps.upstreams, target.upstream).request('GET', `/v2/${target.name}/blobs/${digest}`, target.name, {});
    if (!res.ok) throw await upstreamError(res, target.upstream, new OciError('BLOB_UNKNOWN', 'image config unknown to the upstream', { digest }));
    bytes = await readCapped(res, MAX_CONFIG_BYTES);
    const actual = digestOf(bytes, parseDigest(digest).algorithm);
    if (actual !== digest) throw new OciError('UPSTREAM_INVALID', 'upstream image config does not match its digest', { expected: digest, actual });
  }
  let doc: { rootfs?: { diff_ids?: unknown }; os?: unknown; architecture?: unknown; variant?: unknown };
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch (cause) {
    throw new OciError('MANIFEST_INVALID', 'image config is not valid JSON', { digest }, { cause });
  }
  const diffIds = doc?.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || !diffIds.every((d) => typeof d === 'string')) {
    throw new OciError('MANIFEST_INVALID', 'image config has no rootfs.diff_ids', { digest });
  }
  const platform: Platform = { os: String(doc.os ?? ''), architecture: String(doc.architecture ?? '') };
  if (typeof doc.variant === 'string') platform.variant = doc.variant;
  return { diffIds, platform };
}

/**
 * The layer plan of an image for a platform (default linux/amd64): manifest and config,
 * and per layer its blob, diff_id, sizes and extraction state. Layers not extracted yet
 * are scheduled (unless extraction is off); permanently failed ones are reported, not
 * retried. Throws PLATFORM_UNKNOWN, MANIFEST_INVALID and whatever getManifest throws.
 */
export async function rootfsPlan(deps: PlanDeps, target: RepositoryTarget, reference: string, platform?: Platform): Promise<RootfsPlan> {
  let manifest = await getManifest(deps.manifests, target, reference, 'GET');
  let parsed = parseManifest(manifest.bytes!, manifest.mediaType);
  let index: string | undefined;
  if (parsed.kind === 'index') {
    const want = platform ?? DEFAULT_PLATFORM;
    const child = selectPlatform(parsed.manifests, want);
    if (!child) {
      const available = parsed.manifests.flatMap((m) => (m.platform ? [[m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/')] : []));
      throw new OciError('PLATFORM_UNKNOWN', 'the image index has no manifest for this platform', { platform: want, available });
    }
    index = manifest.digest;
    manifest = await getManifest(deps.manifests, target, child.digest, 'GET');
    parsed = parseManifest(manifest.bytes!, manifest.mediaType);
    if (parsed.kind !== 'image') throw new OciError('MANIFEST_INVALID', 'an index entry is not an image manifest', { digest: child.digest });
  }
  const config = await readConfig(deps.manifests, target, parsed.config.digest);
  if (!index && platform && (config.platform.os !== platform.os || config.platform.architecture !== platform.architecture)) {
    throw new OciError('PLATFORM_UNKNOWN', 'the image is for another platform', { platform, image: config.platform });
  }
  if (config.diffIds.length !== parsed.layers.length) {
    throw new OciError('MANIFEST_INVALID', 'the image config lists a different number of diff_ids than the manifest has layers', {
      layers: parsed.layers.length,
      diff_ids: config.diffIds.length,
    });
  }
  // Non-layer artifacts (an unknown media type) are refused before anything is recorded.
  const descriptors = parsed.layers.map((d, i) => ({ d, diffId: config.diffIds[i]!, compression: compressionOf(d.mediaType) }));
  const { catalog, queue, store } = deps.manifests;
  const now = deps.manifests.clock();
  for (const { d, diffId } of descriptors) await recordLayer(catalog, { diffId, blobDigest: d.digest, mediaType: d.mediaType }, now);

  const rows = new Map<string, Layer>((await catalog.layers(config.diffIds)).map((r) => [r.diffId, r]));
  if (!deps.extractOff) {
    const due = [...rows.values()].filter((r) => r.state === 'pending' || (r.state === 'failed' && r.errorRetryable !== false)).map((r) => r.diffId);
    // Clients poll the plan while layers extract: one job per layer, not one per poll
    // (Cloudflare Queues do not deduplicate). A job lost on the way is sent again later.
    const sent = await catalog.markExtractSent(due, now, now - RESEND_AFTER_MS);
    if (sent.length > 0) await queue.send(sent.map((diffId) => ({ kind: 'extract' as const, diffId })));
  }
  // A plan hands out its layers' objects: each counts as a pull of the layer's blob, so that
  // retention keeps them (and their blobs) for at least the URLs' lifetime.
  let background: Promise<void> | undefined;
  for (const { d } of descriptors) background = deps.manifests.pulls.count('blob', d.digest) ?? background;
  const planned: PlannedLayer[] = [];
  let presigned = false;
  for (const { d, diffId, compression } of descriptors) {
    const row = rows.get(diffId)!;
    const state = deps.extractOff && row.state !== 'ready' ? 'absent' : row.state;
    const layer: PlannedLayer = {
      digest: d.digest,
      diffId,
      mediaType: d.mediaType,
      compression,
      size: d.size,
      uncompressedSize: row.size,
      state,
      error: row.error,
      fileCount: row.fileCount,
      tocDigest: row.tocDigest,
      tarKey: row.tarKey,
      tocKey: row.tocKey,
    };
    if (row.state === 'ready') {
      const tarUrl = await store.presign(row.tarKey, deps.presignTtlSeconds, { contentType: 'application/x-tar' });
      const tocUrl = await store.presign(row.tocKey, deps.presignTtlSeconds, { contentType: 'application/json' });
      if (tarUrl) layer.tarUrl = tarUrl;
      if (tocUrl) layer.tocUrl = tocUrl;
      presigned ||= tarUrl !== undefined;
    }
    planned.push(layer);
  }
  return {
    background,
    upstream: target.upstream,
    name: target.name,
    manifest: manifest.digest,
    ...(index ? { index } : {}),
    config: parsed.config.digest,
    platform: config.platform,
    ready: planned.every((l) => l.state === 'ready'),
    // Signed no earlier than `now`; S3 counts from the signature's whole second.
    ...(presigned ? { urlsExpireAt: Math.floor(now / 1000) * 1000 + deps.presignTtlSeconds * 1000 } : {}),
    layers: planned,
  };
}

import type { Blob } from '../../schema/blobs.ts';
import type { Layer } from '../../schema/layers.ts';
import type { Manifest } from '../../schema/manifests.ts';
import type { WarmRun } from '../../schema/warm-runs.ts';
import type { RepositoryTarget } from '../oci/reference.ts';
import type { Compression } from '../layer/decompress.ts';
import type { ActivityBatch, ActivityRow, UpstreamHealthRow } from '../registry/activity.ts';

export type { Blob, Layer, Manifest, WarmRun };
export type { ActivityBatch, ActivityRow, UpstreamHealthRow };

/** A row under a final key, as the orphan sweep sees it (see `keyHolders`). */
export interface KeyHolder {
  kind: 'blob' | 'layer' | 'manifest';
  id: string;
  /** `held`: it serves the object or is writing it; `idle`: it names the key but does not (evicted, pending, failed). */
  state: 'held' | 'idle';
}

/** A blob or layer that failed, for the status page. */
export interface Failure {
  kind: 'blob' | 'layer';
  id: string;
  /** The repository it was fetched through (blobs), or its blob (layers). */
  source: string;
  error: string;
  retryable: boolean;
  attempts: number;
  at: number;
}

/** A repository with what its pulls and content add up to, for the status page. */
export interface RepositoryUse {
  upstream: string;
  name: string;
  /** Manifest pulls counted through any repository reaching them. */
  pulls: number;
  /** Ready blobs it reaches, summed. */
  bytes: number;
  lastPulledAt: number | null;
}

/** Where a blob can be fetched from, as the manifest that introduced it says. */
export interface BlobSource {
  digest: string;
  upstream: string;
  name: string;
  size?: number | undefined;
  mediaType?: string | undefined;
  storageKey: string;
}

export interface LayerSource {
  diffId: string;
  blobDigest: string;
  mediaType: string;
  compression: Compression;
  tarKey: string;
  tocKey: string;
}

/** A manifest's reference to a blob (config, layer) or to a child manifest (index). */
export interface ManifestReference {
  digest: string;
  kind: 'config' | 'layer' | 'manifest';
  position: number;
  /** For config and layer references: the blob row to record when it has none. */
  blob?: BlobSource;
}

/** Rows that are written by one owner at a time under a lease. */
export type LeasedKind = 'blob' | 'layer';

/** A claim's outcome: the row, now ours until `leaseMs` passes unrenewed; or what it is now. */
export type Claim<Row> = { claimed: Row } | { claimed?: undefined; current: Row | undefined };

/** Pulls counted in memory and written in batches (see core/registry/pulls.ts). */
export interface PullTally {
  kind: 'blob' | 'manifest';
  digest: string;
  count: number;
  lastPulledAt: number;
}

/**
 * Every metadata read and write of the cache. One adapter (libSQL: a file, or Turso over
 * HTTP) holds all the SQL. Writes are idempotent where a retried job or a second process
 * can repeat them; several processes may share one database. `now` is passed in where a
 * time is part of the meaning (TTLs, leases), from the caller's clock.
 */
export interface Catalog {
  /** The digest a tag resolved to and when, or undefined. */
  tag(target: RepositoryTarget, tag: string): Promise<{ digest: string; resolvedAt: number } | undefined>;
  /** Records a resolution (creates the repository row on first use); the digest counts as seen in the repository. */
  putTag(target: RepositoryTarget, tag: string, digest: string, now: number): Promise<void>;
  /** The last complete tag list remembered for the repository. */
  tagList(target: RepositoryTarget): Promise<string[] | undefined>;
  putTagList(target: RepositoryTarget, tags: readonly string[], now: number): Promise<void>;

  /**
   * Records that the repository has `digest` (a manifest fetched there, a blob its
   * upstream confirmed): content cached through another repository may then be served
   * under this one. Repeating it changes nothing.
   */
  recordInRepository(target: RepositoryTarget, digest: string, now: number): Promise<void>;
  /**
   * Whether the repository reaches `digest`: recorded there, or referenced by a manifest
   * recorded there (a config or layer, an index's child), or by a child of an index
   * recorded there. The access check for content stored through any repository.
   */
  inRepository(target: RepositoryTarget, digest: string): Promise<boolean>;

  manifest(digest: string): Promise<Manifest | undefined>;
  /**
   * Records a verified, stored manifest with its references (and a pending row for each
   * referenced blob without one). Repeating it changes nothing.
   */
  recordManifest(row: { digest: string; mediaType: string; size: number; storageKey: string }, references: readonly ManifestReference[], now: number): Promise<void>;
  /** The config and layer digests of a manifest whose blob is not ready. */
  blobsNotReady(manifestDigest: string): Promise<string[]>;

  blob(digest: string): Promise<Blob | undefined>;
  /** A pending row unless one exists. */
  recordBlob(source: BlobSource, now: number): Promise<void>;
  /** The object of a ready row is gone from the store: the row goes back to pending. */
  blobMissing(digest: string, now: number): Promise<void>;
  /** Marks a fetched blob ready with its verified size, if `owner` still holds the lease. */
  blobStored(digest: string, owner: string, size: number, now: number): Promise<void>;

  layer(diffId: string): Promise<Layer | undefined>;
  layers(diffIds: readonly string[]): Promise<Layer[]>;
  /** A pending row unless one exists. */
  recordLayer(source: LayerSource, now: number): Promise<void>;
  /** Marks an extracted layer ready, if `owner` still holds the lease. */
  layerStored(diffId: string, owner: string, done: { size: number; fileCount: number; tocDigest: string }, now: number): Promise<void>;
  /** A pending layer whose blob cannot be stored is failed with why (so a plan shows it). */
  layerBlobFailed(diffId: string, error: string, retryable: boolean, now: number): Promise<void>;
  /**
   * Of `diffIds`, those whose extract job was not sent since `sentBefore`: marked sent at
   * `now` and returned, so that polling clients make one job per layer, not one per poll.
   */
  markExtractSent(diffIds: readonly string[], now: number, sentBefore: number): Promise<string[]>;

  /**
   * Leases (blob and layer rows). `claim` takes a row that is pending, failed, or whose
   * lease ran out, counting an attempt; `renew` answers whether `owner` still holds it;
   * `fail` records the error and frees the row (both ignored when `owner` lost it).
   */
  claim<K extends LeasedKind>(kind: K, id: string, owner: string, leaseMs: number, now: number): Promise<Claim<K extends 'blob' ? Blob : Layer>>;
  renew(kind: LeasedKind, id: string, owner: string, leaseMs: number, now: number): Promise<boolean>;
  fail(kind: LeasedKind, id: string, owner: string, error: { message: string; retryable: boolean }, now: number): Promise<void>;

  /**
   * The lease of a maintenance run (`gc`): taken when free or run out, renewed by its
   * owner, released at the end (recording when it ran). One run at a time everywhere.
   */
  claimMaintenance(name: string, owner: string, leaseMs: number, now: number): Promise<boolean>;
  renewMaintenance(name: string, owner: string, leaseMs: number, now: number): Promise<boolean>;
  releaseMaintenance(name: string, owner: string, now: number): Promise<void>;

  /** Adds counted pulls to blob and manifest rows, and moves their last-pulled times forward. */
  recordPulls(tallies: readonly PullTally[]): Promise<void>;

  /** What the store holds, by the catalog: ready blobs and extracted layers, counted and summed (retention, the status page). */
  usage(): Promise<{ blobs: number; blobBytes: number; layers: number; layerBytes: number }>;
  /**
   * Ready blobs, least recently pulled first (becoming ready, a first time or again after
   * an eviction, counts as a pull), at most `limit`, after `after` when given: retention's eviction order.
   */
  leastRecentlyPulled(limit: number, after?: { lastPulledAt: number; digest: string }): Promise<Array<{ digest: string; size: number; lastPulledAt: number }>>;
  /** Ready layers, least recently used first (their readiness, or a pull of their blob): CACHE_EVICT_LAYERS=first. */
  leastRecentlyPulledLayers(limit: number, after?: { lastPulledAt: number; diffId: string }): Promise<Array<{ diffId: string; blobDigest: string; size: number; lastPulledAt: number }>>;
  /** The repositories that reach a digest (the reverse of `inRepository`): retention's pins. */
  repositoriesReaching(digest: string): Promise<RepositoryTarget[]>;
  /** Extracted layers of a blob (ready), for what evicting it frees. */
  readyLayersOf(blobDigest: string): Promise<Layer[]>;
  /** Ready layers whose blob is not ready (evicted): removed with their blobs. At most `limit`. */
  layersOfEvicted(limit: number): Promise<Layer[]>;
  /**
   * Retention takes a blob or a layer away: a ready blob not pulled since `notPulledSince`
   * becomes `evicted`, a ready layer of a blob that is not ready becomes `extracting`, each
   * leased to `owner` while its objects are removed, so that no transfer or extraction
   * writes them meanwhile. Undefined when the row no longer qualifies. `alone` (layers,
   * CACHE_EVICT_LAYERS=first): the layer goes while its blob stays, if the blob was not
   * pulled since the bound either.
   */
  beginEviction<K extends LeasedKind>(kind: K, id: string, owner: string, leaseMs: number, notPulledSince: number, now: number, options?: { alone?: boolean }): Promise<(K extends 'blob' ? Blob : Layer) | undefined>;
  /** Its objects are gone: the lease is freed; a layer goes back to pending (extracted again when a plan asks). */
  endEviction(kind: LeasedKind, id: string, owner: string, now: number): Promise<void>;
  /** The rows naming each of `keys` (final keys the orphan sweep listed); a key no row names is absent. */
  keyHolders(keys: readonly string[], now: number): Promise<Map<string, KeyHolder>>;
  /** Gives back a blob leased by a writer that wrote nothing in the end (an import that failed): pending again. */
  releaseClaim(digest: string, owner: string, now: number): Promise<void>;
  /**
   * The orphan sweep takes a row that does not serve its object (an eviction killed before
   * its delete, a failed fetch): a blob becomes `evicted`, a layer `extracting`, leased to
   * `owner` while the object goes; released with `endEviction`. False when it serves it
   * now or someone else holds its lease.
   */
  beginSweep(kind: LeasedKind, id: string, owner: string, leaseMs: number, now: number): Promise<boolean>;

  /** Adds a flush's activity windows (summing into what other processes wrote) and upstream health. */
  recordActivity(batch: ActivityBatch): Promise<void>;
  /** Activity windows starting at `since` or later. */
  activitySince(since: number): Promise<ActivityRow[]>;
  /** Removes windows that started before `before` (GC); how many there were. */
  removeActivity(before: number, dryRun: boolean): Promise<number>;
  upstreamHealth(): Promise<UpstreamHealthRow[]>;
  /** Blobs and layers failed now, the latest first. */
  recentFailures(limit: number): Promise<Failure[]>;
  /** Repositories by manifest pulls, the most pulled first. */
  topRepositories(limit: number): Promise<RepositoryUse[]>;
  /** Blob transfers and layer extractions under a live lease, across processes. */
  inFlight(now: number): Promise<{ transfers: number; extractions: number }>;

  /** A warm-up asked for (schema/warm-runs.ts); `request` as JSON text. */
  createWarmRun(run: { id: string; request: string; requestedBy: string }, now: number): Promise<void>;
  warmRun(id: string): Promise<WarmRun | undefined>;
  /** Its `warm` job resolved it to these images (JSON text). */
  resolveWarmRun(id: string, images: string, now: number): Promise<void>;
  /** Removes runs asked for before `before` (GC); how many there were. */
  removeWarmRuns(before: number, dryRun: boolean): Promise<number>;
  /** The config and layer blobs of each manifest with their rows, in manifest order (warm-up progress). */
  manifestBlobs(manifestDigests: readonly string[]): Promise<Array<{ manifest: string; kind: 'config' | 'layer'; blob: Blob }>>;
  /** Extracted-layer rows of these compressed blobs. */
  layersOfBlobs(blobDigests: readonly string[]): Promise<Layer[]>;
}

/**
 * The read path's in-process caches: what a process answered recently is answered again
 * without a database round trip. One bounded map per process or isolate, by entries and
 * by bytes (MEMORY_CACHE_ENTRIES, MEMORY_CACHE_BYTES), least recently used out first.
 *
 * What is kept, and how long another process's change can go unseen here:
 * - a tag's resolution: until its TAG_TTL_SECONDS run out (what the tag TTL promises
 *   anyway; the row is read again after, and an upstream HEAD made when it is old);
 * - manifest rows and manifest bytes by digest: immutable (the bytes match their digest);
 *   manifests are never evicted, so nothing can make an entry wrong;
 * - that a repository reaches a digest: never undone (no writer removes reach);
 * - ready blob rows and ready layer rows, and that a manifest has no blob left to fetch:
 *   MEMORY_CACHE_TTL_SECONDS. Only garbage collection takes a ready row away from under
 *   another process, and it waits that long between marking the row evicted and deleting
 *   its objects (core/cache/gc.ts), so an entry still in its TTL always names an object
 *   that exists. Rows in any other state are never kept: the transfer and extraction
 *   paths that wait on them always read the database.
 * Every catalog write of this process goes through `CachedCatalog`, which drops or
 * replaces the entries it changes, so this process never sees its own writes late.
 *
 * The same map holds the warm answers Node gives again before the app (functions/replay.ts):
 * each names the entries it was made from (`Kept`), and holds only while they do.
 *
 * Access decisions need no cache of their own here: the rules are configuration evaluated
 * in memory (core/auth/access.ts remembers them per process), and a change takes effect
 * when a process starts with it. The one database fact they depend on, reach, is kept above.
 *
 * Behind the map, where the runtime has one, a SharedCache (the Workers Cache API of a data
 * center, core/adapters/cloudflare-cache.ts) holds what is true for a known time, so that
 * a fresh isolate answers a warm manifest without a database round trip: tag resolutions
 * until their TAG_TTL_SECONDS run out, manifest rows and bytes and reach for a day (they
 * cannot become wrong), and "nothing left to fetch" for TAG_TTL_SECONDS (stale, it only
 * delays re-queueing an evicted blob until a client asks for it, which fetches it anyway).
 * Blob and layer rows are never shared: their bound is GC's wait, per process.
 */
import type { Blob, Catalog, Layer, Manifest, PullTally } from '../ports/catalog.ts';
import type { Clock } from '../ports/clock.ts';
import type { RepositoryTarget } from '../oci/reference.ts';
import type { SharedCache } from '../ports/shared-cache.ts';

/** How long a SharedCache keeps what cannot become wrong (manifests, reach). */
const IMMUTABLE_SHARED_SECONDS = 24 * 3600;

/** What an entry costs besides its bytes: the key, the row's fields, the map's own. */
const ENTRY_OVERHEAD_BYTES = 256;

/**
 * A fact as this process keeps it, for an answer made from it (functions/replay.ts): the
 * answer holds while the fact does, that is until `until` (by the cache's clock) and
 * while `gone` is false. An entry is gone once it is dropped, replaced, pushed out or
 * found expired, so an answer never outlives what it was made from.
 */
export interface Kept {
  readonly until: number;
  readonly gone: boolean;
}

/** A fact with no expiry of its own, which holds until its owner marks it `gone`. */
class Standing implements Kept {
  readonly until = Infinity;
  gone = false;
}

interface Entry<V> extends Kept {
  value: V;
  bytes: number;
  /** By the cache's clock; `Infinity` for immutable facts. */
  until: number;
  gone: boolean;
}

/** A map bounded by entries and bytes, least recently used out first, each entry with its own expiry. */
export class BoundedCache<V> {
  readonly limits: { maxEntries: number; maxBytes: number };
  readonly #clock: Clock;
  readonly #entries = new Map<string, Entry<V>>();
  #bytes = 0;

  constructor(limits: { maxEntries: number; maxBytes: number }, clock: Clock) {
    this.limits = limits;
    this.#clock = clock;
  }

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The entry kept under `key` while it holds, as a `Kept` (its recency unchanged). */
  kept(key: string): (Kept & { readonly value: V }) | undefined {
    const entry = this.#entries.get(key);
    return entry && entry.until > this.#clock() ? entry : undefined;
  }

  get(key: string): V | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.until <= this.#clock()) {
      this.delete(key);
      return undefined;
    }
    // Moved to the end: the map's order is the recency order.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.value;
  }

  /** Keeps `value` until `until` (by the clock), costing `bytes` besides the entry itself; nothing when it cannot fit. */
  set(key: string, value: V, until: number, bytes = 0): void {
    this.delete(key);
    const cost = bytes + key.length * 2 + ENTRY_OVERHEAD_BYTES;
    if (this.limits.maxEntries === 0 || cost > this.limits.maxBytes || until <= this.#clock()) return;
    while (this.#entries.size >= this.limits.maxEntries || this.#bytes + cost > this.limits.maxBytes) {
      this.delete(this.#entries.keys().next().value!);
    }
    this.#entries.set(key, { value, bytes: cost, until, gone: false });
    this.#bytes += cost;
  }

  delete(key: string): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    this.#entries.delete(key);
    this.#bytes -= entry.bytes;
    entry.gone = true;
  }
}

export interface MemoryCacheConfig {
  maxEntries: number;
  maxBytes: number;
  /** How long a ready blob or layer row is reused (MEMORY_CACHE_TTL_SECONDS), in ms. */
  ttlMs: number;
  /** TAG_TTL_SECONDS, in ms. */
  tagTtlMs: number;
  /** The cache shared with other isolates of this place (Workers), behind the map. */
  shared?: SharedCache | undefined;
}

/** What the map holds: rows, manifest bytes, tag resolutions, reach, the blob generation, and answers kept by functions/replay.ts. */
type Value = Blob | Layer | Manifest | Uint8Array | { digest: string; resolvedAt: number } | Standing | true | object;

const repo = (t: RepositoryTarget) => `${t.upstream}/${t.name}`;
const tagKey = (t: RepositoryTarget, tag: string) => `t:${repo(t)}:${tag}`;
const reachKey = (t: RepositoryTarget, digest: string) => `r:${repo(t)}@${digest}`;

/**
 * The catalog every part of a process uses, with the read path's answers kept in a
 * `BoundedCache` (see the header for what and how long). Reads that are not cached, and
 * every write, go to the catalog it wraps; writes drop the entries they change.
 */
export class CachedCatalog implements Catalog {
  readonly inner: Catalog;
  readonly config: MemoryCacheConfig;
  readonly cache: BoundedCache<Value>;
  readonly #clock: Clock;
  /** This process's blob rows since they last changed: "nothing left to fetch" answers hold for the generation they were read in. */
  #blobGeneration = new Standing();

  constructor(inner: Catalog, config: MemoryCacheConfig, clock: Clock) {
    this.inner = inner;
    this.config = config;
    this.#clock = clock;
    this.cache = new BoundedCache<Value>({ maxEntries: config.maxEntries, maxBytes: config.maxBytes }, clock);
  }

  /** Manifest bytes by digest (immutable), for the manifest read path. */
  async manifestBytes(digest: string): Promise<Uint8Array | undefined> {
    const key = `mb:${digest}`;
    const kept = this.cache.get(key) as Uint8Array | undefined;
    if (kept) return kept;
    const shared = await this.#sharedGet(key);
    if (shared) this.cache.set(key, shared, Infinity, shared.byteLength);
    return shared;
  }

  async keepManifestBytes(digest: string, bytes: Uint8Array): Promise<void> {
    this.cache.set(`mb:${digest}`, bytes, Infinity, bytes.byteLength);
    await this.#sharedPut(`mb:${digest}`, bytes, IMMUTABLE_SHARED_SECONDS);
  }

  /** A SharedCache that fails is a miss: it only ever saves a round trip. */
  async #sharedGet(key: string): Promise<Uint8Array | undefined> {
    return this.config.shared?.get(key).catch(() => undefined);
  }

  async #sharedPut(key: string, value: Uint8Array, ttlSeconds: number): Promise<void> {
    if (ttlSeconds >= 1) await this.config.shared?.put(key, value, ttlSeconds).catch(() => {});
  }

  async #sharedJson<T>(key: string): Promise<T | undefined> {
    const bytes = await this.#sharedGet(key);
    return bytes ? (JSON.parse(new TextDecoder().decode(bytes)) as T) : undefined;
  }

  #sharedPutJson(key: string, value: unknown, ttlSeconds: number): Promise<void> {
    return this.#sharedPut(key, new TextEncoder().encode(JSON.stringify(value)), ttlSeconds);
  }

  async tag(target: RepositoryTarget, tag: string): Promise<{ digest: string; resolvedAt: number } | undefined> {
    const key = tagKey(target, tag);
    const hit = this.cache.get(key) as { digest: string; resolvedAt: number } | undefined;
    if (hit) return hit;
    const shared = await this.#sharedJson<{ digest: string; resolvedAt: number }>(key);
    if (shared && shared.resolvedAt + this.config.tagTtlMs > this.#clock()) {
      this.cache.set(key, shared, shared.resolvedAt + this.config.tagTtlMs);
      return shared;
    }
    const row = await this.inner.tag(target, tag);
    if (row) {
      this.cache.set(key, row, row.resolvedAt + this.config.tagTtlMs);
      await this.#sharedPutJson(key, row, (row.resolvedAt + this.config.tagTtlMs - this.#clock()) / 1000);
    }
    return row;
  }

  async putTag(target: RepositoryTarget, tag: string, digest: string, now: number): Promise<void> {
    await this.inner.putTag(target, tag, digest, now);
    const key = tagKey(target, tag);
    this.cache.set(key, { digest, resolvedAt: now }, now + this.config.tagTtlMs);
    this.cache.set(reachKey(target, digest), true, Infinity);
    await this.#sharedPutJson(key, { digest, resolvedAt: now }, (now + this.config.tagTtlMs - this.#clock()) / 1000);
  }

  async inRepository(target: RepositoryTarget, digest: string): Promise<boolean> {
    const key = reachKey(target, digest);
    if (this.cache.get(key)) return true;
    const reached = (await this.#sharedGet(key)) !== undefined || (await this.inner.inRepository(target, digest));
    if (reached) await this.#keepReach(key);
    return reached;
  }

  async recordInRepository(target: RepositoryTarget, digest: string, now: number): Promise<void> {
    await this.inner.recordInRepository(target, digest, now);
    await this.#keepReach(reachKey(target, digest));
  }

  /** Reach is never undone: kept here until pushed out, and a day in the shared cache. */
  async #keepReach(key: string): Promise<void> {
    this.cache.set(key, true, Infinity);
    await this.#sharedPut(key, new Uint8Array([1]), IMMUTABLE_SHARED_SECONDS);
  }

  async manifest(digest: string): Promise<Manifest | undefined> {
    const key = `m:${digest}`;
    const hit = this.cache.get(key) as Manifest | undefined;
    if (hit) return hit;
    const shared = await this.#sharedJson<Manifest>(key);
    const row = shared ?? (await this.inner.manifest(digest));
    if (row) this.cache.set(key, row, Infinity);
    if (row && !shared) await this.#sharedPutJson(key, row, IMMUTABLE_SHARED_SECONDS);
    return row;
  }

  async blobsNotReady(manifestDigest: string): Promise<string[]> {
    const key = `n:${manifestDigest}`;
    // Kept with the generation of blob changes it was read in: any change since voids it.
    const generation = this.#blobGeneration;
    if (this.cache.get(key) === generation) return [];
    const shared = (await this.#sharedGet(key)) !== undefined;
    const missing = shared ? [] : await this.inner.blobsNotReady(manifestDigest);
    if (missing.length === 0) this.cache.set(key, generation, this.#clock() + this.config.ttlMs);
    if (missing.length === 0 && !shared) await this.#sharedPut(key, new Uint8Array([1]), this.config.tagTtlMs / 1000);
    return missing;
  }

  // The facts an answer given again without the catalog (functions/replay.ts) is made
  // from, while this process keeps them: undefined when it does not.

  /** That the tag resolves to `digest`, within its TTL. */
  keptTag(target: RepositoryTarget, tag: string, digest: string): Kept | undefined {
    const kept = this.cache.kept(tagKey(target, tag));
    return (kept?.value as { digest?: string } | undefined)?.digest === digest ? kept : undefined;
  }

  /** That the manifest has no blob left to fetch: the answer, and the generation of blob rows it was read in. */
  keptNothingToFetch(manifestDigest: string): Kept[] | undefined {
    const kept = this.cache.kept(`n:${manifestDigest}`);
    return kept?.value === this.#blobGeneration ? [kept, this.#blobGeneration] : undefined;
  }

  /** The blob's ready row. */
  keptBlob(digest: string): Kept | undefined {
    return this.cache.kept(`b:${digest}`);
  }

  blob(digest: string): Promise<Blob | undefined> {
    return this.#readyRow(`b:${digest}`, () => this.inner.blob(digest));
  }

  layer(diffId: string): Promise<Layer | undefined> {
    return this.#readyRow(`l:${diffId}`, () => this.inner.layer(diffId));
  }

  /** A blob or layer row: kept for MEMORY_CACHE_TTL_SECONDS when it is ready, read every time otherwise. */
  async #readyRow<R extends Blob | Layer>(key: string, read: () => Promise<R | undefined>): Promise<R | undefined> {
    const hit = this.cache.get(key) as R | undefined;
    if (hit) return hit;
    const row = await read();
    if (row?.state === 'ready') this.cache.set(key, row, this.#clock() + this.config.ttlMs);
    return row;
  }

  /** A blob row of this process changed: its entry goes, and so do the "nothing left to fetch" answers (a new generation), which it may falsify. */
  #blobChanged(digest: string): void {
    this.cache.delete(`b:${digest}`);
    this.#blobGeneration.gone = true;
    this.#blobGeneration = new Standing();
  }

  #changed(kind: 'blob' | 'layer', id: string): void {
    if (kind === 'blob') this.#blobChanged(id);
    else this.cache.delete(`l:${id}`);
  }

  // Writes that change a blob or layer row: through, then the entry goes.

  async blobMissing(digest: string, now: number): Promise<void> {
    this.#blobChanged(digest);
    await this.inner.blobMissing(digest, now);
    this.#blobChanged(digest);
  }

  async blobStored(digest: string, owner: string, size: number, now: number): Promise<void> {
    await this.inner.blobStored(digest, owner, size, now);
    this.#blobChanged(digest);
  }

  async layerStored(diffId: string, owner: string, done: { size: number; fileCount: number; tocDigest: string }, now: number): Promise<void> {
    await this.inner.layerStored(diffId, owner, done, now);
    this.#changed('layer', diffId);
  }

  async layerBlobFailed(diffId: string, error: string, retryable: boolean, now: number): Promise<void> {
    await this.inner.layerBlobFailed(diffId, error, retryable, now);
    this.#changed('layer', diffId);
  }

  async claim<K extends 'blob' | 'layer'>(kind: K, id: string, owner: string, leaseMs: number, now: number) {
    const claim = await this.inner.claim(kind, id, owner, leaseMs, now);
    if (claim.claimed) this.#changed(kind, id);
    return claim;
  }

  async fail(kind: 'blob' | 'layer', id: string, owner: string, error: { message: string; retryable: boolean }, now: number): Promise<void> {
    await this.inner.fail(kind, id, owner, error, now);
    this.#changed(kind, id);
  }

  async beginEviction<K extends 'blob' | 'layer'>(kind: K, id: string, owner: string, leaseMs: number, notPulledSince: number, now: number, options?: { alone?: boolean }) {
    // Gone before the statement: a request of this process must not be served from the entry while the objects go.
    this.#changed(kind, id);
    const row = await this.inner.beginEviction(kind, id, owner, leaseMs, notPulledSince, now, options);
    this.#changed(kind, id);
    return row;
  }

  async endEviction(kind: 'blob' | 'layer', id: string, owner: string, now: number): Promise<void> {
    await this.inner.endEviction(kind, id, owner, now);
    this.#changed(kind, id);
  }

  async beginSweep(kind: 'blob' | 'layer', id: string, owner: string, leaseMs: number, now: number): Promise<boolean> {
    this.#changed(kind, id);
    return this.inner.beginSweep(kind, id, owner, leaseMs, now);
  }

  async releaseClaim(digest: string, owner: string, now: number): Promise<void> {
    await this.inner.releaseClaim(digest, owner, now);
    this.#blobChanged(digest);
  }

  /** The counts and last-pulled times of kept rows change: those entries go. */
  async recordPulls(tallies: readonly PullTally[]): Promise<void> {
    await this.inner.recordPulls(tallies);
    for (const t of tallies) if (t.kind === 'blob') this.cache.delete(`b:${t.digest}`);
  }

  // The rest, as they are.

  tagList = (target: RepositoryTarget) => this.inner.tagList(target);
  putTagList = (target: RepositoryTarget, tags: readonly string[], now: number) => this.inner.putTagList(target, tags, now);
  recordManifest: Catalog['recordManifest'] = (row, references, now) => this.inner.recordManifest(row, references, now);
  recordBlob: Catalog['recordBlob'] = (source, now) => this.inner.recordBlob(source, now);
  layers: Catalog['layers'] = (diffIds) => this.inner.layers(diffIds);
  recordLayer: Catalog['recordLayer'] = (source, now) => this.inner.recordLayer(source, now);
  markExtractSent: Catalog['markExtractSent'] = (diffIds, now, sentBefore) => this.inner.markExtractSent(diffIds, now, sentBefore);
  renew: Catalog['renew'] = (kind, id, owner, leaseMs, now) => this.inner.renew(kind, id, owner, leaseMs, now);
  claimMaintenance: Catalog['claimMaintenance'] = (name, owner, leaseMs, now) => this.inner.claimMaintenance(name, owner, leaseMs, now);
  renewMaintenance: Catalog['renewMaintenance'] = (name, owner, leaseMs, now) => this.inner.renewMaintenance(name, owner, leaseMs, now);
  releaseMaintenance: Catalog['releaseMaintenance'] = (name, owner, now) => this.inner.releaseMaintenance(name, owner, now);
  usage: Catalog['usage'] = () => this.inner.usage();
  leastRecentlyPulled: Catalog['leastRecentlyPulled'] = (limit, after) => this.inner.leastRecentlyPulled(limit, after);
  leastRecentlyPulledLayers: Catalog['leastRecentlyPulledLayers'] = (limit, after) => this.inner.leastRecentlyPulledLayers(limit, after);
  repositoriesReaching: Catalog['repositoriesReaching'] = (digest) => this.inner.repositoriesReaching(digest);
  readyLayersOf: Catalog['readyLayersOf'] = (blobDigest) => this.inner.readyLayersOf(blobDigest);
  layersOfEvicted: Catalog['layersOfEvicted'] = (limit) => this.inner.layersOfEvicted(limit);
  keyHolders: Catalog['keyHolders'] = (keys, now) => this.inner.keyHolders(keys, now);
  recordActivity: Catalog['recordActivity'] = (batch) => this.inner.recordActivity(batch);
  activitySince: Catalog['activitySince'] = (since) => this.inner.activitySince(since);
  removeActivity: Catalog['removeActivity'] = (before, dryRun) => this.inner.removeActivity(before, dryRun);
  upstreamHealth: Catalog['upstreamHealth'] = () => this.inner.upstreamHealth();
  recentFailures: Catalog['recentFailures'] = (limit) => this.inner.recentFailures(limit);
  topRepositories: Catalog['topRepositories'] = (limit) => this.inner.topRepositories(limit);
  inFlight: Catalog['inFlight'] = (now) => this.inner.inFlight(now);
  createWarmRun: Catalog['createWarmRun'] = (run, now) => this.inner.createWarmRun(run, now);
  warmRun: Catalog['warmRun'] = (id) => this.inner.warmRun(id);
  resolveWarmRun: Catalog['resolveWarmRun'] = (id, images, now) => this.inner.resolveWarmRun(id, images, now);
  removeWarmRuns: Catalog['removeWarmRuns'] = (before, dryRun) => this.inner.removeWarmRuns(before, dryRun);
  manifestBlobs: Catalog['manifestBlobs'] = (manifestDigests) => this.inner.manifestBlobs(manifestDigests);
  layersOfBlobs: Catalog['layersOfBlobs'] = (blobDigests) => this.inner.layersOfBlobs(blobDigests);
}

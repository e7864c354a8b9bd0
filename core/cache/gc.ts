/**
 * Garbage collection: retention (eviction by size and age) and the sweeps of what the
 * cache leaves behind, run under one lease so that one run at a time works across
 * processes and isolates.
 *
 * Eviction: when the ready blobs and extracted layers add up to more than
 * `CACHE_MAX_BYTES`, the least recently pulled blobs go, each with its extracted layers,
 * until they are at `CACHE_LOW_WATER_PERCENT` of it; blobs not pulled for
 * `CACHE_MAX_AGE_SECONDS` go too. A blob that a `CACHE_PINNED` repository reaches stays,
 * and so does one pulled (or handed out in a plan) within the guard: a presigned URL's
 * lifetime plus the pull-count batch interval and a minute. Manifests and tags stay: a
 * later pull of an evicted blob fetches it again, as one never fetched.
 *
 * The eviction of one blob, each step one statement or one delete, so that a run killed
 * anywhere leaves nothing a client could see half-deleted (a row says ready only while
 * its objects exist):
 *   1. the row goes `ready → evicted` under the run's lease, only if it is still ready
 *      and not pulled since the guard (one UPDATE: a pull or transfer that raced us wins);
 *      from here no client is served its object, and no transfer can write it (the lease);
 *   2. the run waits MEMORY_CACHE_TTL_SECONDS (`settleMs`, real time) from that UPDATE:
 *      other processes may have the ready row in memory (core/registry/memory-cache.ts)
 *      that long, and must find the object while they do. The wait runs beside the next
 *      marks (deletes happen in mark order, each once its time has come), so a run takes
 *      about one TTL longer, not one per blob; the rows' leases (JOB_LEASE_SECONDS, at
 *      least three TTLs) outlast it;
 *   3. the object is deleted; 4. the lease is freed: a later pull fetches it again.
 *   Killed after 1, 2 or 3: the lease runs out and the row is an ordinary evicted one; an
 *   object left under its key is rewritten by the next fetch, or swept as an orphan.
 * Its extracted layers follow (any ready layer whose blob is not ready): the layer row goes
 * `ready → extracting` under the lease (no extraction can start), its layer.tar and
 * toc.json are deleted, the row goes back to pending.
 *
 * What a run removes, each older than its bound by the caller's clock:
 * - the stores' temporaries (`BlobStore.leftovers`): the filesystem store's `.tmp/` and
 *   `.staging/` files, S3's `_staging/` chunk objects and follower announcements, and S3
 *   multipart uploads (aborted) — a day;
 * - spool entries of processes of this host that are gone (`Spool.leftovers`) — a day;
 * - jobs done for more than a week (the libSQL queue) — a week;
 * - the status page's activity windows — eight days; warm-up runs — a week.
 *
 * What it races with, and why that is safe:
 * - a transfer writing a staging, an upload or a spool entry: it touches them at least
 *   every 30 s (a stalled body is asked for again after that) and gives up after a few
 *   minutes without progress, so nothing a day old is being written. A transfer that
 *   resumes after a day finds its staging gone and starts again from 0: it costs bytes,
 *   never correctness (the digest check covers the whole body).
 * - a reader following a staging: it reads what it finds, and a staging that vanishes
 *   under it is the same as a writer that discarded it (it falls back to the upstream).
 * - another GC run: the `gc` lease in the catalog; a second run finds it held and stops,
 *   reporting so. A run killed half-way leaves only what it had not removed yet: every
 *   step is one delete of one thing, and a final key is deleted only under its row's lease
 *   or when no row names it (see Orphans).
 *
 * Orphans: objects under the final keys (`blobs/`, `manifests/`, `layers/`, the bucket
 * listed) that no row serves, written more than a day ago: left by a process killed
 * between its write and its row, by an eviction killed before its delete, by a failed
 * fetch, or by hand. A key whose row is ready (or being written under a live lease) is
 * never touched. One whose row does not serve it (evicted, pending, failed) is deleted
 * under that row's lease, taken for the sweep (`beginSweep`), so that no transfer or
 * extraction writes it meanwhile. One no row names at all is deleted as it is: every
 * writer of a final key holds a lease on a row that exists before it writes (blobs,
 * layers), or writes the row right after the object (manifests); a write younger than a
 * day is not a candidate, and a manifest written again while its old copy is deleted is
 * fetched again by the next GET that finds its object missing.
 * - Layers first (CACHE_EVICT_LAYERS=first): past the cap, the least recently used
 *   extracted layers go before any blob, each `ready → extracting` under the lease while
 *   its blob stays ready, then back to pending; a plan extracts it again.
 */
import type { Catalog } from '../ports/catalog.ts';
import type { BlobStore, Leftover, ListedObject } from '../ports/blob-store.ts';
import type { Spool } from '../ports/spool.ts';
import { sleep, yieldToEventLoop, type Clock } from '../ports/clock.ts';
import type { Metrics } from '../ports/metrics.ts';
import { lowWaterBytes, type RetentionConfig } from '../config.ts';
import { matchesPattern } from '../auth/patterns.ts';
import { whileLeased } from './lease.ts';

export const DAY_MS = 24 * 3600 * 1000;
/** Temporaries older than this are removed. */
export const LEFTOVER_AGE_MS = DAY_MS;
/** Done jobs older than this are removed. */
export const DONE_JOB_AGE_MS = 7 * DAY_MS;
/** Activity windows (the status page) older than this are removed. */
export const ACTIVITY_AGE_MS = 8 * DAY_MS;
/** At most this many removed things are named in a report (the totals count them all). */
const REPORTED_ITEMS = 1000;

export interface GcDeps {
  catalog: Catalog;
  store: BlobStore;
  /** Node's spool, when there is one. */
  spool?: Spool | undefined;
  /** The libSQL queue's done jobs (Cloudflare Queues keep none). */
  doneJobs?: { removeDone(before: number, dryRun: boolean): Promise<number> } | undefined;
  clock: Clock;
  leaseMs: number;
  log: (entry: Record<string, unknown>) => void;
  retention: RetentionConfig;
  metrics?: Metrics | undefined;
  /** Nothing pulled (or handed out in a plan) this recently is evicted: PRESIGN_TTL_SECONDS + PULL_FLUSH_SECONDS + a minute. */
  guardMs: number;
  /** How long other processes may keep a ready row in memory (MEMORY_CACHE_TTL_SECONDS): an evicted row's objects are deleted that long after the mark. */
  settleMs: number;
}

/** Candidates read from the catalog at a time. */
const EVICTION_PAGE = 200;
/** Evicted layers handled at a time. */
const LAYER_PAGE = 200;

export interface GcReport {
  /** False when another run held the lease: nothing was done. */
  ran: boolean;
  dryRun: boolean;
  startedAt: string;
  ms: number;
  /** Per kind of leftover: how many and their bytes (removed, or that would be with a dry run). */
  totals: Record<string, { count: number; bytes: number }>;
  doneJobs: number;
  /** Activity windows of the status page removed (kept ACTIVITY_AGE_MS). */
  activityWindows: number;
  /** Warm-up runs removed (kept a week, as done jobs). */
  warmRuns: number;
  /** The first REPORTED_ITEMS removed things. */
  items: Array<Leftover | Evicted>;
  /** What the catalog counted stored (ready blobs and layers) before the run, and after it (or after it would have run). */
  storedBytes: { before: number; after: number };
}

/** A blob or extracted layer retention removed (or, in a dry run, would remove). */
export interface Evicted {
  kind: 'blob' | 'layer';
  key: string;
  bytes: number;
  /** Why: `size` (over CACHE_MAX_BYTES) or `age` (CACHE_MAX_AGE_SECONDS). */
  reason?: 'size' | 'age';
}

/** One GC run, or a report that another is running. Throws what the catalog throws when the lease cannot be taken. */
export async function runGc(deps: GcDeps, options: { dryRun?: boolean; owner: string }): Promise<GcReport> {
  const dryRun = options.dryRun ?? false;
  const started = deps.clock();
  const report: GcReport = { ran: false, dryRun, startedAt: new Date(started).toISOString(), ms: 0, totals: {}, doneJobs: 0, activityWindows: 0, warmRuns: 0, items: [], storedBytes: { before: 0, after: 0 } };
  if (!(await deps.catalog.claimMaintenance('gc', options.owner, deps.leaseMs, started))) {
    deps.log({ msg: 'gc', outcome: 'another run holds the lease' });
    return report;
  }
  report.ran = true;
  try {
    await whileLeased(
      { what: 'gc', leaseMs: deps.leaseMs, renew: () => deps.catalog.renewMaintenance('gc', options.owner, deps.leaseMs, deps.clock()) },
      async (signal) => {
        const count = (item: Leftover | Evicted) => {
          const total = (report.totals[item.kind] ??= { count: 0, bytes: 0 });
          total.count++;
          total.bytes += item.bytes;
          if (report.items.length < REPORTED_ITEMS) report.items.push(item);
        };
        await evict(deps, options.owner, dryRun, started, report, count, signal);
        const before = started - LEFTOVER_AGE_MS;
        await sweepOrphans(deps, options.owner, dryRun, before, count, signal);
        for await (const item of deps.store.leftovers(before, dryRun)) {
          signal.throwIfAborted();
          count(item);
        }
        if (deps.spool) for (const item of await deps.spool.leftovers(before, dryRun)) count(item);
        signal.throwIfAborted();
        if (deps.doneJobs) report.doneJobs = await deps.doneJobs.removeDone(started - DONE_JOB_AGE_MS, dryRun);
        report.activityWindows = await deps.catalog.removeActivity(started - ACTIVITY_AGE_MS, dryRun);
        report.warmRuns = await deps.catalog.removeWarmRuns(started - DONE_JOB_AGE_MS, dryRun);
      },
    );
  } finally {
    await deps.catalog.releaseMaintenance('gc', options.owner, deps.clock()).catch(() => {});
  }
  report.ms = deps.clock() - started;
  deps.log({ msg: 'gc', outcome: dryRun ? 'dry run' : 'done', ms: report.ms, totals: report.totals, done_jobs: report.doneJobs });
  return report;
}

/** The prefixes of the final keys (core/oci/keys.ts). */
const FINAL_PREFIXES = ['blobs/', 'manifests/', 'layers/'];
/** Listed keys looked up in the catalog at a time. */
const ORPHAN_PAGE = 200;

/** Objects under final keys that no row serves, last written before `before`: see the header. */
async function sweepOrphans(deps: GcDeps, owner: string, dryRun: boolean, before: number, count: (item: Leftover) => void, signal: AbortSignal): Promise<void> {
  const { catalog, store } = deps;
  const sweep = async (page: ListedObject[]) => {
    const holders = await catalog.keyHolders(
      page.map((o) => o.key),
      deps.clock(),
    );
    for (const o of page) {
      signal.throwIfAborted();
      const holder = holders.get(o.key);
      if (holder?.state === 'held' || holder?.kind === 'manifest') continue;
      const item: Leftover = { kind: 'orphan', key: o.key, bytes: o.size };
      if (dryRun) {
        count(item);
        continue;
      }
      if (!holder) {
        await store.delete(o.key);
        count(item);
        continue;
      }
      if (!(await catalog.beginSweep(holder.kind, holder.id, owner, deps.leaseMs, deps.clock()))) continue;
      try {
        await store.delete(o.key);
      } finally {
        await catalog.endEviction(holder.kind, holder.id, owner, deps.clock());
      }
      count(item);
    }
  };
  for (const prefix of FINAL_PREFIXES) {
    let page: ListedObject[] = [];
    for await (const o of store.list(prefix)) {
      signal.throwIfAborted();
      if (o.modifiedAt >= before) continue;
      page.push(o);
      if (page.length >= ORPHAN_PAGE) {
        await sweep(page);
        page = [];
      }
    }
    await sweep(page);
  }
}

/** Retention's part of a run: see the header. */
async function evict(deps: GcDeps, owner: string, dryRun: boolean, now: number, report: GcReport, count: (item: Evicted) => void, signal: AbortSignal): Promise<void> {
  const remove = async (m: Marked) => {
    try {
      for (const key of m.keys) await deps.store.delete(key);
    } finally {
      await deps.catalog.endEviction(m.kind, m.id, owner, deps.clock());
    }
    count({ kind: m.kind, key: m.id, bytes: m.bytes, ...(m.reason ? { reason: m.reason } : {}) });
    deps.metrics?.count('pullthrough_evictions_total', { kind: m.kind });
    deps.metrics?.count('pullthrough_evicted_bytes_total', { kind: m.kind }, m.bytes);
  };
  const settling = new Settling(deps.settleMs, signal, remove);
  await markAndDelete(deps, owner, dryRun, now, report, signal, settling, count);
  await settling.drain();
}

/** Marks between two yields to the event loop (see `Settling.add`). */
const YIELD_EVERY = 20;

/** A row marked for eviction, its objects not deleted yet: plain data, so that what waits out the TTL is small. */
interface Marked {
  kind: 'blob' | 'layer';
  id: string;
  keys: string[];
  bytes: number;
  reason?: 'size' | 'age' | undefined;
}

/**
 * Deletions waiting out `settleMs` after their rows were marked (step 2 of the header), in
 * mark order: each runs once its time has come, checked after every mark and at the end.
 */
class Settling {
  readonly #settleMs: number;
  readonly #signal: AbortSignal;
  readonly #remove: (m: Marked) => Promise<void>;
  readonly #queue: Array<{ at: number; marked: Marked }> = [];
  #added = 0;

  constructor(settleMs: number, signal: AbortSignal, remove: (m: Marked) => Promise<void>) {
    this.#settleMs = settleMs;
    this.#signal = signal;
    this.#remove = remove;
  }

  /**
   * Queues the deletion for `settleMs` from now, then runs those whose time has come. Every
   * YIELD_EVERY marks it yields to the event loop: the libSQL file client answers
   * synchronously, so marks with no delete between them (a delete goes through the I/O
   * pool) would hold the process, its requests and timers, for the whole marking (10 s
   * for 5,000 blobs, its native memory growing by 190 MB meanwhile).
   */
  async add(marked: Marked): Promise<void> {
    this.#queue.push({ at: performance.now() + this.#settleMs, marked });
    if (++this.#added % YIELD_EVERY === 0) await yieldToEventLoop();
    await this.#due(false);
  }

  /** Waits for the rest and runs them. */
  drain(): Promise<void> {
    return this.#due(true);
  }

  async #due(wait: boolean): Promise<void> {
    while (this.#queue.length > 0) {
      const left = this.#queue[0]!.at - performance.now();
      if (left > 0) {
        if (!wait) return;
        await sleep(left, this.#signal);
      }
      this.#signal.throwIfAborted();
      await this.#remove(this.#queue.shift()!.marked);
    }
  }
}

async function markAndDelete(deps: GcDeps, owner: string, dryRun: boolean, now: number, report: GcReport, signal: AbortSignal, settling: Settling, count: (item: Evicted) => void): Promise<void> {
  const { catalog, retention } = deps;
  const usage = await catalog.usage();
  let stored = usage.blobBytes + usage.layerBytes;
  report.storedBytes = { before: stored, after: stored };
  const overCap = retention.maxBytes > 0 && stored > retention.maxBytes;
  const lowWater = lowWaterBytes(retention);
  const ageCutoff = retention.maxAgeSeconds > 0 ? now - retention.maxAgeSeconds * 1000 : undefined;
  if (!overCap && ageCutoff === undefined) return;
  const guard = now - deps.guardMs;
  const pinned = async (digest: string) =>
    retention.pinned.length > 0 && (await catalog.repositoriesReaching(digest)).some((r) => retention.pinned.some((p) => matchesPattern(p, r.upstream, r.name)));

  // Layers a dry run already counted (CACHE_EVICT_LAYERS=first), not counted again with their blobs.
  const counted = new Set<string>();
  if (overCap && retention.evictLayers === 'first') await layersFirst();

  let after: { lastPulledAt: number; digest: string } | undefined;
  for (;;) {
    const page = await catalog.leastRecentlyPulled(EVICTION_PAGE, after);
    if (page.length === 0) break;
    for (const candidate of page) {
      signal.throwIfAborted();
      after = candidate;
      const bySize = overCap && stored > lowWater;
      const byAge = ageCutoff !== undefined && candidate.lastPulledAt < ageCutoff;
      if (!bySize && !byAge) return finishLayers();
      if (candidate.lastPulledAt > guard || (await pinned(candidate.digest))) continue;
      const layers = (await catalog.readyLayersOf(candidate.digest)).filter((l) => !counted.has(l.diffId));
      const freed = candidate.size + layers.reduce((n, l) => n + (l.size ?? 0), 0);
      if (dryRun) {
        count({ kind: 'blob', key: candidate.digest, bytes: candidate.size, reason: bySize ? 'size' : 'age' });
        for (const l of layers) count({ kind: 'layer', key: l.diffId, bytes: l.size ?? 0, reason: bySize ? 'size' : 'age' });
        stored -= freed;
        continue;
      }
      const row = await catalog.beginEviction('blob', candidate.digest, owner, deps.leaseMs, guard, deps.clock());
      if (!row) continue; // pulled, or taken, meanwhile
      await settling.add({ kind: 'blob', id: row.digest, keys: [row.storageKey], bytes: candidate.size, reason: bySize ? 'size' : 'age' });
      stored -= candidate.size;
      // Its layers now belong to a blob that is not ready: removed below, and counted now for the stop condition.
      stored -= freed - candidate.size;
    }
  }
  return finishLayers();

  /** CACHE_EVICT_LAYERS=first: past the cap, the least recently used extracted layers go first, their blobs staying. */
  async function layersFirst(): Promise<void> {
    let after: { lastPulledAt: number; diffId: string } | undefined;
    for (;;) {
      const page = await catalog.leastRecentlyPulledLayers(EVICTION_PAGE, after);
      if (page.length === 0) return;
      for (const candidate of page) {
        signal.throwIfAborted();
        after = candidate;
        if (stored <= lowWater) return;
        if (candidate.lastPulledAt > guard || (await pinned(candidate.blobDigest))) continue;
        if (dryRun) {
          count({ kind: 'layer', key: candidate.diffId, bytes: candidate.size, reason: 'size' });
          counted.add(candidate.diffId);
          stored -= candidate.size;
          continue;
        }
        if (!(await evictLayer(candidate.diffId, candidate.size, true, 'size'))) continue;
        stored -= candidate.size;
      }
    }
  }

  /** One extracted layer marked, its objects deleted once settled, under the eviction lease; false when its row no longer qualifies. `alone`: its blob stays. */
  async function evictLayer(diffId: string, size: number, alone: boolean, reason?: 'size'): Promise<boolean> {
    const row = await catalog.beginEviction('layer', diffId, owner, deps.leaseMs, guard, deps.clock(), { alone });
    if (!row) return false;
    await settling.add({ kind: 'layer', id: row.diffId, keys: [row.tarKey, row.tocKey], bytes: size, reason });
    return true;
  }

  /** Extracted layers whose blob is evicted: removed (after the blobs of this run). */
  async function finishLayers(): Promise<void> {
    report.storedBytes.after = Math.max(0, stored);
    if (dryRun) return;
    for (;;) {
      const layers = await catalog.layersOfEvicted(LAYER_PAGE);
      let removed = 0;
      for (const layer of layers) {
        signal.throwIfAborted();
        if (!(await evictLayer(layer.diffId, layer.size ?? 0, false))) continue;
        removed++;
      }
      if (layers.length < LAYER_PAGE || removed === 0) return;
    }
  }
}

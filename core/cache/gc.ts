/**
 * Garbage collection: the sweeps of what the cache leaves behind, run under one lease so
 * that one run at a time works across processes and isolates (issue 14; eviction by size
 * and age comes here next).
 *
 * What a run removes, each older than its bound by the caller's clock:
 * - the stores' temporaries (`BlobStore.leftovers`): the filesystem store's `.tmp/` and
 *   `.staging/` files, S3's `_staging/` chunk objects and follower announcements, and S3
 *   multipart uploads (aborted) — a day;
 * - spool entries of processes of this host that are gone (`Spool.leftovers`) — a day;
 * - jobs done for more than a week (the libSQL queue) — a week.
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
 *   step is one delete of one thing, and nothing it removes is under a final key.
 * - objects under final keys (`blobs/`, `manifests/`, `layers/`) are never touched here.
 */
import type { Catalog } from '../ports/catalog.ts';
import type { BlobStore, Leftover } from '../ports/blob-store.ts';
import type { Spool } from '../ports/spool.ts';
import type { Clock } from '../ports/clock.ts';
import { whileLeased } from './lease.ts';

export const DAY_MS = 24 * 3600 * 1000;
/** Temporaries older than this are removed. */
export const LEFTOVER_AGE_MS = DAY_MS;
/** Done jobs older than this are removed. */
export const DONE_JOB_AGE_MS = 7 * DAY_MS;
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
}

export interface GcReport {
  /** False when another run held the lease: nothing was done. */
  ran: boolean;
  dryRun: boolean;
  startedAt: string;
  ms: number;
  /** Per kind of leftover: how many and their bytes (removed, or that would be with a dry run). */
  totals: Record<string, { count: number; bytes: number }>;
  doneJobs: number;
  /** The first REPORTED_ITEMS removed things. */
  items: Leftover[];
}

/** One GC run, or a report that another is running. Throws what the catalog throws when the lease cannot be taken. */
export async function runGc(deps: GcDeps, options: { dryRun?: boolean; owner: string }): Promise<GcReport> {
  const dryRun = options.dryRun ?? false;
  const started = deps.clock();
  const report: GcReport = { ran: false, dryRun, startedAt: new Date(started).toISOString(), ms: 0, totals: {}, doneJobs: 0, items: [] };
  if (!(await deps.catalog.claimMaintenance('gc', options.owner, deps.leaseMs, started))) {
    deps.log({ msg: 'gc', outcome: 'another run holds the lease' });
    return report;
  }
  report.ran = true;
  try {
    await whileLeased(
      { what: 'gc', leaseMs: deps.leaseMs, renew: () => deps.catalog.renewMaintenance('gc', options.owner, deps.leaseMs, deps.clock()) },
      async (signal) => {
        const count = (item: Leftover) => {
          const total = (report.totals[item.kind] ??= { count: 0, bytes: 0 });
          total.count++;
          total.bytes += item.bytes;
          if (report.items.length < REPORTED_ITEMS) report.items.push(item);
        };
        const before = started - LEFTOVER_AGE_MS;
        for await (const item of deps.store.leftovers(before, dryRun)) {
          signal.throwIfAborted();
          count(item);
        }
        if (deps.spool) for (const item of await deps.spool.leftovers(before, dryRun)) count(item);
        signal.throwIfAborted();
        if (deps.doneJobs) report.doneJobs = await deps.doneJobs.removeDone(started - DONE_JOB_AGE_MS, dryRun);
      },
    );
  } finally {
    await deps.catalog.releaseMaintenance('gc', options.owner, deps.clock()).catch(() => {});
  }
  report.ms = deps.clock() - started;
  deps.log({ msg: 'gc', outcome: dryRun ? 'dry run' : 'done', ms: report.ms, totals: report.totals, done_jobs: report.doneJobs });
  return report;
}

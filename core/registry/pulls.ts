import type { Catalog, PullTally } from '../ports/catalog.ts';
import type { Clock } from '../ports/clock.ts';
import type { ActivityRecorder } from './activity.ts';

/** Distinct digests counted before a flush is due whatever the interval: bounds the memory. */
const MAX_PENDING_DIGESTS = 10_000;

/**
 * Pull counts and last-pulled times (what retention sorts on), kept off the request path:
 * a pull is counted in memory, and the tallies go to the catalog in one batch at most
 * every `intervalMs` (or sooner when many digests are pending). `count` hands back the
 * flush when one is due, for the caller to run in the background (a Worker passes it to
 * `waitUntil`); `flush` writes what is pending now (a stopping server calls it). A failed
 * write keeps its tallies for the next flush. The activity windows of the status page
 * (core/registry/activity.ts) go in the same flush.
 */
export class PullCounter {
  readonly #catalog: Catalog;
  readonly #clock: Clock;
  readonly #intervalMs: number;
  readonly #activity: ActivityRecorder | undefined;
  #pending = new Map<string, PullTally>();
  #lastFlush: number;
  #flushing: Promise<void> | undefined;

  constructor(catalog: Catalog, clock: Clock, intervalMs: number, activity?: ActivityRecorder) {
    this.#catalog = catalog;
    this.#activity = activity;
    this.#clock = clock;
    this.#intervalMs = intervalMs;
    this.#lastFlush = clock();
  }

  count(kind: PullTally['kind'], digest: string): Promise<void> | undefined {
    const now = this.#clock();
    const key = `${kind} ${digest}`;
    const tally = this.#pending.get(key);
    if (tally) {
      tally.count++;
      tally.lastPulledAt = Math.max(tally.lastPulledAt, now);
    } else {
      this.#pending.set(key, { kind, digest, count: 1, lastPulledAt: now });
    }
    const due = now - this.#lastFlush >= this.#intervalMs || this.#pending.size >= MAX_PENDING_DIGESTS;
    return due && !this.#flushing ? this.flush() : undefined;
  }

  /** Writes every pending tally. Never rejects: what could not be written waits for the next flush. */
  async flush(): Promise<void> {
    if (this.#flushing) await this.#flushing;
    if (this.#pending.size === 0 && !this.#activity?.pending) return;
    const batch = [...this.#pending.values()];
    this.#pending = new Map();
    this.#lastFlush = this.#clock();
    const activity = this.#activity?.drain();
    const pulls =
      batch.length === 0
        ? undefined
        : this.#catalog.recordPulls(batch).catch(() => {
            for (const t of batch) {
              const key = `${t.kind} ${t.digest}`;
              const newer = this.#pending.get(key);
              this.#pending.set(key, newer ? { ...t, count: t.count + newer.count, lastPulledAt: Math.max(t.lastPulledAt, newer.lastPulledAt) } : t);
            }
          });
    const recorded = activity ? this.#catalog.recordActivity(activity).catch(() => this.#activity?.restore(activity)) : undefined;
    this.#flushing = Promise.all([pulls, recorded]).then(() => undefined);
    try {
      await this.#flushing;
    } finally {
      this.#flushing = undefined;
    }
  }
}

import type { Catalog, PullTally } from '../ports/catalog.ts';
import type { Clock } from '../ports/clock.ts';

/** Distinct digests counted before a flush is due whatever the interval: bounds the memory. */
const MAX_PENDING_DIGESTS = 10_000;

/**
 * Pull counts and last-pulled times (what retention sorts on), kept off the request path:
 * a pull is counted in memory, and the tallies go to the catalog in one batch at most
 * every `intervalMs` (or sooner when many digests are pending). `count` hands back the
 * flush when one is due, for the caller to run in the background (a Worker passes it to
 * `waitUntil`); `flush` writes what is pending now (a stopping server calls it). A failed
 * write keeps its tallies for the next flush.
 */
export class PullCounter {
  readonly #catalog: Catalog;
  readonly #clock: Clock;
  readonly #intervalMs: number;
  #pending = new Map<string, PullTally>();
  #lastFlush: number;
  #flushing: Promise<void> | undefined;

  constructor(catalog: Catalog, clock: Clock, intervalMs: number) {
    this.#catalog = catalog;
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
    if (this.#pending.size === 0) return;
    const batch = [...this.#pending.values()];
    this.#pending = new Map();
    this.#lastFlush = this.#clock();
    this.#flushing = this.#catalog.recordPulls(batch).then(
      () => undefined,
      () => {
        for (const t of batch) {
          const key = `${t.kind} ${t.digest}`;
          const newer = this.#pending.get(key);
          this.#pending.set(key, newer ? { ...t, count: t.count + newer.count, lastPulledAt: Math.max(t.lastPulledAt, newer.lastPulledAt) } : t);
        }
      },
    );
    try {
      await this.#flushing;
    } finally {
      this.#flushing = undefined;
    }
  }
}

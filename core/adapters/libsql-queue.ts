import { and, eq, inArray, lte, or, sql } from 'drizzle-orm';
import { jobs, type Job } from '../../schema/jobs.ts';
import type { Database } from './libsql.ts';

export interface JobMessage {
  /** One live job per key (e.g. `ingest:sha256:…`): enqueueing it again is a no-op. */
  key: string;
  kind: string;
  payload: unknown;
}

/** Delay before attempt `attempts + 1`: 1 s, 2 s, 4 s, … capped at 5 minutes. */
export const backoffMs = (attempts: number): number => Math.min(1000 * 2 ** Math.max(0, attempts - 1), 300_000);

/**
 * The Node runtime's durable queue, kept in libSQL so a crash loses nothing and several
 * processes can share one database. A claim is one UPDATE … RETURNING, so two workers
 * never get the same job; a worker that dies stops renewing its lease and the job
 * becomes claimable again when the lease runs out.
 */
export class LibsqlJobQueue {
  readonly #db: Database;
  readonly #now: () => number;

  constructor(db: Database, now: () => number = Date.now) {
    this.#db = db;
    this.#now = now;
  }

  /** Adds jobs; a key with a queued or running job is left alone, a finished one is re-armed. */
  async send(messages: readonly JobMessage[]): Promise<void> {
    const now = this.#now();
    for (const m of messages) {
      const payload = JSON.stringify(m.payload);
      await this.#db
        .insert(jobs)
        .values({ key: m.key, kind: m.kind, payload, runAt: now, createdAt: now, updatedAt: now })
        .onConflictDoUpdate({
          target: jobs.key,
          set: { state: 'queued', attempts: 0, runAt: now, lastError: null, payload, updatedAt: now },
          setWhere: inArray(jobs.state, ['done', 'failed']),
        });
    }
  }

  /** Claims the next runnable job for `owner` with a lease of `leaseMs`, or undefined. */
  async claim(owner: string, leaseMs: number): Promise<Job | undefined> {
    const now = this.#now();
    const runnable = this.#db
      .select({ id: jobs.id })
      .from(jobs)
      .where(or(and(eq(jobs.state, 'queued'), lte(jobs.runAt, now)), and(eq(jobs.state, 'running'), lte(jobs.leaseExpiresAt, now))))
      .orderBy(jobs.runAt, jobs.id)
      .limit(1);
    const [job] = await this.#db
      .update(jobs)
      .set({ state: 'running', leaseOwner: owner, leaseExpiresAt: now + leaseMs, attempts: sql`${jobs.attempts} + 1`, updatedAt: now })
      .where(inArray(jobs.id, runnable))
      .returning();
    return job;
  }

  /** Extends the lease; false when `owner` no longer holds the job (it must stop). */
  async renew(id: number, owner: string, leaseMs: number): Promise<boolean> {
    const now = this.#now();
    const rows = await this.#db
      .update(jobs)
      .set({ leaseExpiresAt: now + leaseMs, updatedAt: now })
      .where(and(eq(jobs.id, id), eq(jobs.leaseOwner, owner), eq(jobs.state, 'running')))
      .returning({ id: jobs.id });
    return rows.length === 1;
  }

  /**
   * Gives a running job back at once (its owner is stopping): queued, runnable now, this
   * attempt not counted. Ignored when `owner` lost the lease.
   */
  async release(id: number, owner: string): Promise<void> {
    const now = this.#now();
    await this.#db
      .update(jobs)
      .set({ state: 'queued', runAt: now, leaseOwner: null, leaseExpiresAt: null, attempts: sql`max(${jobs.attempts} - 1, 0)`, updatedAt: now })
      .where(and(eq(jobs.id, id), eq(jobs.leaseOwner, owner), eq(jobs.state, 'running')));
  }

  /** Marks the job done. Idempotent; ignored when `owner` lost the lease. */
  async complete(id: number, owner: string): Promise<void> {
    await this.#db
      .update(jobs)
      .set({ state: 'done', leaseOwner: null, leaseExpiresAt: null, lastError: null, updatedAt: this.#now() })
      .where(and(eq(jobs.id, id), eq(jobs.leaseOwner, owner)));
  }

  /**
   * Records a failure: requeued with backoff while attempts remain and `retry` is true,
   * otherwise `failed` for good.
   */
  async fail(id: number, owner: string, error: string, opts: { retry: boolean; maxAttempts: number }): Promise<'retrying' | 'failed'> {
    const now = this.#now();
    const [row] = await this.#db.select({ attempts: jobs.attempts }).from(jobs).where(eq(jobs.id, id));
    const retrying = opts.retry && (row?.attempts ?? opts.maxAttempts) < opts.maxAttempts;
    await this.#db
      .update(jobs)
      .set({
        state: retrying ? 'queued' : 'failed',
        runAt: retrying ? now + backoffMs(row?.attempts ?? 1) : now,
        leaseOwner: null,
        leaseExpiresAt: null,
        lastError: error,
        updatedAt: now,
      })
      .where(and(eq(jobs.id, id), eq(jobs.leaseOwner, owner)));
    return retrying ? 'retrying' : 'failed';
  }
}

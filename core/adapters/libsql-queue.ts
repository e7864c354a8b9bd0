import { and, count, eq, inArray, lt, lte, or, sql } from 'drizzle-orm';
import { jobs, type Job } from '../../schema/jobs.ts';
import type { Database } from './libsql.ts';
import type { Clock } from '../ports/clock.ts';
import { toWire, type JobAcker, type JobMessage, type JobQueue } from '../ports/job-queue.ts';

/**
 * The Node runtime's durable queue, kept in libSQL so a crash loses nothing and several
 * processes can share one database. A claim is one UPDATE … RETURNING, so two workers
 * never get the same job; a worker that dies stops renewing its lease and the job
 * becomes claimable again when the lease runs out.
 */
export class LibsqlJobQueue implements JobQueue {
  readonly #db: Database;
  readonly #now: Clock;

  constructor(db: Database, now: Clock = Date.now) {
    this.#db = db;
    this.#now = now;
  }

  /** Adds jobs; a key with a queued or running job is left alone, a finished one is re-armed. */
  async send(messages: readonly JobMessage[]): Promise<void> {
    const now = this.#now();
    for (const m of messages.map(toWire)) {
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
  /** How many jobs there are by kind and state (the metrics' queue depth). */
  async counts(): Promise<Array<{ kind: string; state: string; n: number }>> {
    const rows = await this.#db.select({ kind: jobs.kind, state: jobs.state, n: count() }).from(jobs).groupBy(jobs.kind, jobs.state);
    return rows.map((r) => ({ kind: r.kind, state: r.state, n: Number(r.n) }));
  }

  /** Jobs done before `before` (epoch ms): counted, and removed unless `dryRun` (garbage collection). */
  async removeDone(before: number, dryRun: boolean): Promise<number> {
    const old = and(eq(jobs.state, 'done'), lt(jobs.updatedAt, before));
    if (dryRun) {
      const [row] = await this.#db.select({ n: count() }).from(jobs).where(old);
      return row?.n ?? 0;
    }
    return (await this.#db.delete(jobs).where(old).returning({ id: jobs.id })).length;
  }

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

  /** Runs the job again after `delayMs`, recording why it failed (this attempt counts). Ignored when `owner` lost the lease. */
  async retry(id: number, owner: string, error: string, delayMs: number): Promise<void> {
    const now = this.#now();
    await this.#db
      .update(jobs)
      .set({ state: 'queued', runAt: now + delayMs, leaseOwner: null, leaseExpiresAt: null, lastError: error, updatedAt: now })
      .where(and(eq(jobs.id, id), eq(jobs.leaseOwner, owner), eq(jobs.state, 'running')));
  }

  /** Runs the job again after `delayMs` without counting this attempt (it waited on other work). */
  async defer(id: number, owner: string, delayMs: number): Promise<void> {
    const now = this.#now();
    await this.#db
      .update(jobs)
      .set({ state: 'queued', runAt: now + delayMs, leaseOwner: null, leaseExpiresAt: null, attempts: sql`max(${jobs.attempts} - 1, 0)`, updatedAt: now })
      .where(and(eq(jobs.id, id), eq(jobs.leaseOwner, owner), eq(jobs.state, 'running')));
  }

  /** Marks the job failed for good with its error. Ignored when `owner` lost the lease. */
  async fail(id: number, owner: string, error: string): Promise<void> {
    await this.#db
      .update(jobs)
      .set({ state: 'failed', leaseOwner: null, leaseExpiresAt: null, lastError: error, updatedAt: this.#now() })
      .where(and(eq(jobs.id, id), eq(jobs.leaseOwner, owner)));
  }

  /** The acks of a job `owner` claimed: each is a no-op once `owner` lost the lease. */
  ackerFor(job: Job, owner: string): JobAcker {
    return {
      done: () => this.complete(job.id, owner),
      retry: (delayMs, error) => this.retry(job.id, owner, error, delayMs),
      defer: (delayMs) => this.defer(job.id, owner, delayMs),
      dead: (error) => this.fail(job.id, owner, error),
    };
  }
}

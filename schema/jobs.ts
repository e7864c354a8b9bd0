import { sqliteTable, integer, text, uniqueIndex, index } from 'drizzle-orm/sqlite-core';

export const JOB_STATES = ['queued', 'running', 'done', 'failed'] as const;

/**
 * The Node runtime's durable queue. A job is claimed by setting a lease; a crashed
 * worker's lease runs out and the job is claimed again. `key` makes enqueueing
 * idempotent: one live job per key.
 */
export const jobs = sqliteTable(
  'jobs',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    key: text('key').notNull(),
    kind: text('kind').notNull(),
    payload: text('payload').notNull(),
    state: text('state', { enum: JOB_STATES }).notNull().default('queued'),
    attempts: integer('attempts').notNull().default(0),
    /** Epoch milliseconds before which the job is not run (backoff). */
    runAt: integer('run_at').notNull(),
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: integer('lease_expires_at'),
    lastError: text('last_error'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [uniqueIndex('jobs_key').on(t.key), index('jobs_runnable').on(t.state, t.runAt)],
);

export type Job = typeof jobs.$inferSelect;

import { sqliteTable, integer, text, primaryKey } from 'drizzle-orm/sqlite-core';

/**
 * What the mirror did, in five-minute windows (the status page's hit ratios, bytes saved
 * and chart): one row per window and metric, added to by every process's batched flush
 * (core/registry/activity.ts names the metrics). Garbage collection removes windows older
 * than eight days.
 */
export const activity = sqliteTable(
  'activity',
  {
    /** Epoch milliseconds of the window's start (a multiple of five minutes). */
    bucket: integer('bucket').notNull(),
    metric: text('metric').notNull(),
    value: integer('value').notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.bucket, t.metric] })],
);

/** Each upstream's last answer that worked and last that did not, as the processes saw them. */
export const upstreamHealth = sqliteTable('upstream_health', {
  host: text('host').primaryKey(),
  lastSuccessAt: integer('last_success_at'),
  lastErrorAt: integer('last_error_at'),
  /** `HTTP 429`, `HTTP 503`, `no answer`. */
  lastError: text('last_error'),
});

export type Activity = typeof activity.$inferSelect;
export type UpstreamHealth = typeof upstreamHealth.$inferSelect;
